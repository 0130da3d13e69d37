"""A real softphone (baresip) dials the demo line, hears it, and hangs up."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from . import media_assets as ma
from .conftest import free_port, http_get, require_tool

pytestmark = pytest.mark.interop

CALL_SECONDS = 3.0
CALLER_TONE_HZ, CALLER_TONE_DBFS = 1000.0, -12.0
DEMO_TONE_HZ = 440.0


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


def call_demo_line(server, tmp_path: Path, source: Path, seconds: float) -> None:
    """baresip dials the demo line, says ``source`` and hangs up when it ends (within ``seconds``)."""
    config_dir = baresip_config(tmp_path, source)
    completed = subprocess.run(
        [require_tool("baresip"), "-f", str(config_dir), "-e", f"/dial sip:demo@127.0.0.1:{server.sip_port}",
         "-t", str(int(seconds))], capture_output=True, text=True, timeout=seconds + 20, cwd=tmp_path)
    output = completed.stdout + completed.stderr
    # baresip's own log: the call to our line came up, and our RTP reached it.
    assert f"Call established: sip:demo@127.0.0.1:{server.sip_port}" in output, output[-3000:]
    assert "incoming rtp for 'audio' established" in output, output[-3000:]


def heard_by_baresip(tmp_path: Path) -> tuple[np.ndarray, int]:
    """The middle half of what baresip decoded (its sndfile dump), away from call set-up and tear-down."""
    dumps = sorted(tmp_path.glob("dump-*-dec.wav"))
    assert dumps, f"baresip wrote no decoded audio dump: {list(tmp_path.iterdir())}"
    heard, rate = ma.read_wav(dumps[0])
    return heard[0][heard.shape[1] // 4: 3 * heard.shape[1] // 4], rate


def test_baresip_call_completes_and_hears_the_tone(server, tmp_path):
    source = tmp_path / "caller.wav"
    # baresip hangs up (sends BYE) when its audio source ends.
    write_silence(source, CALL_SECONDS)
    call_demo_line(server, tmp_path, source, CALL_SECONDS + 6)

    call = server.wait_for(lambda: (c := server.calls()) and c[0]["status"] == "hangup" and c[0], what="hangup")
    assert call["end_reason"] == "caller_hangup", call
    assert call["answered_at"] is not None
    assert any(e["type"] == "ack" for e in call["events"]), "INVITE/200/ACK did not complete"
    assert call["media"]["packets_received"] > 0, "baresip's RTP never reached us"

    # What baresip decoded: the demo's 440 Hz tone, at a healthy level.
    middle, rate = heard_by_baresip(tmp_path)
    assert len(middle) > rate // 2  # over a second of audio in all
    level = 20 * np.log10(np.sqrt(np.mean(middle**2)) + 1e-12)
    assert level > -20, f"tone too quiet: {level:.1f} dBFS"
    assert abs(ma.dominant_frequency(middle, rate) - DEMO_TONE_HZ) < 10


def test_baresip_hears_the_server_and_the_recording_holds_both_sides(server, tmp_path):
    """baresip says a 1000 Hz tone at -12 dBFS; it must hear the demo's 440 Hz (and not itself), and the
    call recording must be stereo with the caller on the left and the server on the right."""
    source = ma.write_wav(tmp_path / "caller.wav", ma.sine(CALLER_TONE_HZ, CALL_SECONDS, CALLER_TONE_DBFS))
    said, rate = ma.read_wav(source)
    assert abs(ma.dominant_frequency(said[0], rate) - CALLER_TONE_HZ) < 2
    assert abs(ma.tone_dbfs(said[0], rate, CALLER_TONE_HZ) - CALLER_TONE_DBFS) < 0.5
    call_demo_line(server, tmp_path, source, CALL_SECONDS + 4)
    call = server.wait_for(lambda: (c := server.calls()) and c[0]["status"] == "hangup" and c[0], what="hangup")
    assert call["end_reason"] == "caller_hangup", call

    # What baresip heard: the demo tone, loud enough, and no echo of what it said.
    heard, rate = heard_by_baresip(tmp_path)
    assert len(heard) > rate, "under 2 s of decoded audio in all"
    assert abs(ma.dominant_frequency(heard, rate) - DEMO_TONE_HZ) < 10, "baresip did not hear the demo tone"
    assert ma.tone_dbfs(heard, rate, DEMO_TONE_HZ) > -20
    assert ma.tone_dbfs(heard, rate, CALLER_TONE_HZ) < ma.tone_dbfs(heard, rate, DEMO_TONE_HZ) - 30, \
        "caller audio echoed back"

    # The recording: where the contract says, served by the API, stereo, caller left, server right.
    expected = (server.workdir / "data" / "recordings" / f"{call['id']}.wav").resolve()
    call = server.wait_for(lambda: (c := server.get(f"/api/calls/{call['id']}"))["recording"] and c, timeout=10,
                           what="the recording to be listed")
    assert Path(call["recording"]).resolve() == expected, call["recording"]
    assert expected.is_file()
    status, content_type, body = http_get(server, f"/api/calls/{call['id']}/recording")
    assert status == 200 and content_type.startswith("audio/"), (status, content_type)
    assert body == expected.read_bytes()
    recorded, rate = ma.read_wav_bytes(body, tmp_path / "recording.wav")
    assert recorded.shape[0] == 2, f"recording has {recorded.shape[0]} channel(s), want stereo"
    length = recorded.shape[1] / rate
    assert abs(length - (call["ended_at"] - call["answered_at"])) < 1.0, (length, call["answered_at"], call["ended_at"])
    middle = slice(recorded.shape[1] // 4, 3 * recorded.shape[1] // 4)
    left, right = recorded[0][middle], recorded[1][middle]
    levels = {side: {hz: round(ma.tone_dbfs(channel, rate, hz), 1) for hz in (CALLER_TONE_HZ, DEMO_TONE_HZ)}
              for side, channel in (("left", left), ("right", right))}
    dominant = {side: ma.dominant_frequency(channel, rate) for side, channel in (("left", left), ("right", right))}
    summary = f"dominant Hz {dominant}, dBFS {levels}"
    assert abs(dominant["left"] - CALLER_TONE_HZ) < 10, f"left channel is not the caller: {summary}"
    assert abs(levels["left"][CALLER_TONE_HZ] - CALLER_TONE_DBFS) < 3, f"caller recorded at the wrong level: {summary}"
    assert levels["left"][DEMO_TONE_HZ] < CALLER_TONE_DBFS - 30, \
        f"server audio leaked into the caller channel: {summary}"
    assert abs(dominant["right"] - DEMO_TONE_HZ) < 10, f"right channel is not the server: {summary}"
    assert levels["right"][DEMO_TONE_HZ] > -20, f"server channel too quiet: {summary}"
    assert levels["right"][CALLER_TONE_HZ] < levels["right"][DEMO_TONE_HZ] - 30, (
        f"caller audio leaked into the server channel: {summary}")


def test_digits_we_send_reach_baresip_as_rfc4733(server, tmp_path):
    """POST /dtmf on a live call: baresip (which offers telephone-event) reports each key."""
    baresip = require_tool("baresip")
    source = tmp_path / "caller.wav"
    write_silence(source, 6.0)
    config_dir = baresip_config(tmp_path, source)
    process = subprocess.Popen(
        [baresip, "-f", str(config_dir), "-e", f"/dial sip:demo@127.0.0.1:{server.sip_port}", "-t", "12"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        call = server.wait_for(lambda: (c := server.calls()) and c[0]["status"] == "active" and c[0],
                               timeout=10, what="an answered call")
        assert call["media"]["telephone_event_pt"] is not None
        status, body = server.post(f"/api/calls/{call['id']}/dtmf", {"digits": "4#"})
        assert status == 202, body
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # baresip logs the start of each event and its end (our three end packets count once).
    for key in "4#":
        assert output.count(f"received event: '{key}' (end=0)") == 1, output[-3000:]
        assert output.count(f"received event: '{key}' (end=1)") == 1, output[-3000:]
    assert output.index("received event: '4'") < output.index("received event: '#'")
    call = server.get(f"/api/calls/{call['id']}")
    # 100 ms per digit at 20 ms per packet: 4 updates, then the end packet three times.
    assert call["media"]["dtmf_sent"] == 2 * 7
    assert any(e["type"] == "dtmf_sent" and e["digits"] == "4#" for e in call["events"])
    status, body = server.post(f"/api/calls/{call['id']}/dtmf", {"digits": "4"})
    assert status == 409 and body["error"] == "the call has ended", body
