"""A real softphone (baresip) dials the demo line, hears it, and hangs up."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from .conftest import free_port, require_tool

pytestmark = pytest.mark.interop

CALL_SECONDS = 3.0


def write_silence(path: Path, seconds: float, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(seconds * rate))


def baresip_config(directory: Path, source_wav: Path) -> Path:
    """Config per ../shared notes: aufile source, sndfile dumps what was heard."""
    config_dir = directory / "baresip"
    config_dir.mkdir()
    sip_port, console_port = free_port(), free_port()
    (config_dir / "config").write_text(
        f"sip_listen 127.0.0.1:{sip_port}\n"
        "audio_player aufile,/dev/null\n"
        f"audio_source aufile,{source_wav}\n"
        "module_path /usr/lib/baresip/modules\n"
        "module stdio.so\nmodule cons.so\nmodule g711.so\nmodule aufile.so\nmodule account.so\n"
        "module menu.so\nmodule sndfile.so\n"
        f"snd_path {directory}\n"
        f"cons_listen 127.0.0.1:{console_port}\n"
        "rtp_ports 30000-30400\n"
    )
    (config_dir / "accounts").write_text("<sip:caller@127.0.0.1>;regint=0\n")
    (config_dir / "contacts").write_text("")
    return config_dir


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def test_baresip_call_completes_and_hears_the_tone(server, tmp_path):
    baresip = require_tool("baresip")
    source = tmp_path / "caller.wav"
    # baresip hangs up (sends BYE) when its audio source ends.
    write_silence(source, CALL_SECONDS)
    config_dir = baresip_config(tmp_path, source)
    completed = subprocess.run(
        [baresip, "-f", str(config_dir), "-e", f"/dial sip:demo@127.0.0.1:{server.sip_port}", "-t", str(int(CALL_SECONDS + 6))],
        capture_output=True, text=True, timeout=CALL_SECONDS + 20, cwd=tmp_path,
    )
    output = completed.stdout + completed.stderr
    assert "Call established" in output or "call established" in output.lower(), output[-3000:]

    call = server.wait_for(lambda: (c := server.calls()) and c[0]["status"] == "hangup" and c[0], what="hangup")
    assert call["end_reason"] == "caller_hangup", call
    assert call["answered_at"] is not None
    assert any(e["type"] == "ack" for e in call["events"]), "INVITE/200/ACK did not complete"
    assert call["media"]["packets_received"] > 0, "baresip's RTP never reached us"

    # What baresip decoded: the demo's 440 Hz tone, at a healthy level.
    dumps = sorted(tmp_path.glob("dump-*-dec.wav"))
    assert dumps, f"baresip wrote no decoded audio dump: {list(tmp_path.iterdir())}"
    with wave.open(str(dumps[0])) as heard:
        rate = heard.getframerate()
        audio = np.frombuffer(heard.readframes(heard.getnframes()), dtype=np.int16)
        if heard.getnchannels() > 1:
            audio = audio[:: heard.getnchannels()]
    assert len(audio) > rate  # over a second of audio
    middle = audio[len(audio) // 4 : 3 * len(audio) // 4].astype(np.float64)
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(middle**2)) / 32768 + 1e-12)
    assert rms_dbfs > -20, f"tone too quiet: {rms_dbfs:.1f} dBFS"
    assert abs(dominant_frequency(middle, rate) - 440.0) < 10
