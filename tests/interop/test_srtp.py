"""SRTP keyed by SDES over SIP/TLS with a real softphone (baresip and its srtp module).

Evidence comes from outside the server: baresip's own report that SRTP is on and what it decoded,
the call recording, and the UDP datagrams on the loopback wire (an AF_PACKET capture, like
bench/rtp_echo.py's dumpcap), which must not be the plain G.711 of either tone."""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.certs import make_test_certificates

from . import media_assets as ma
from .conftest import free_port, require_tool

pytestmark = pytest.mark.interop

CALL_SECONDS = 4.0
CALLER_TONE_HZ, CALLER_TONE_DBFS = 1000.0, -12.0
DEMO_TONE_HZ = 440.0
BARESIP_RTP_PORTS = (30400, 30800)
SRTP_TAG_80 = 10  # AES_CM_128_HMAC_SHA1_80 (RFC 4568 §6.2.1)
ETH_P_ALL = 0x0003


def baresip_config(directory: Path, source_wav: Path, account: str, ca: Path | None = None) -> Path:
    config_dir = directory / "baresip"
    config_dir.mkdir()
    sip_port, console_port = free_port(), free_port()
    (config_dir / "config").write_text(
        f"sip_listen 127.0.0.1:{sip_port}\n"
        + (f"sip_cafile {ca}\n" if ca else "")
        + "audio_player aufile,/dev/null\n"
        f"audio_source aufile,{source_wav}\n"
        "module_path /usr/lib/baresip/modules\n"
        # srtp.so before account.so: the accounts name its mediaenc
        "module stdio.so\nmodule cons.so\nmodule g711.so\nmodule aufile.so\nmodule srtp.so\n"
        "module account.so\n"
        "module menu.so\nmodule sndfile.so\n"
        f"snd_path {directory}\n"
        f"cons_listen 127.0.0.1:{console_port}\n"
        f"rtp_ports {BARESIP_RTP_PORTS[0]}-{BARESIP_RTP_PORTS[1]}\n"
    )
    (config_dir / "accounts").write_text(account + "\n")
    (config_dir / "contacts").write_text("")
    return config_dir


def run_baresip(tmp_path: Path, target: str, account: str, *, seconds: float, ca: Path | None = None,
                source: Path | None = None) -> str:
    baresip = require_tool("baresip")
    if source is None:
        source = ma.write_wav(tmp_path / "caller.wav", ma.sine(CALLER_TONE_HZ, seconds, CALLER_TONE_DBFS))
    config_dir = baresip_config(tmp_path, source, account, ca)
    completed = subprocess.run([baresip, "-f", str(config_dir), "-e", f"/dial {target}", "-t", str(int(seconds + 4))],
                               capture_output=True, text=True, timeout=seconds + 25, cwd=tmp_path)
    return completed.stdout + completed.stderr


class LoopbackCapture:
    """UDP datagrams on lo to or from baresip's RTP ports, read off the wire (needs CAP_NET_RAW)."""

    def __init__(self) -> None:
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(ETH_P_ALL))
        except PermissionError:
            pytest.fail("the wire check needs CAP_NET_RAW (root), as bench/rtp_echo.py's dumpcap does")
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.to_baresip: list[bytes] = []
        self.from_baresip: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        low, high = BARESIP_RTP_PORTS
        while not self._stop.is_set():
            try:
                frame, meta = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            if meta[2] == socket.PACKET_OUTGOING:  # lo shows each frame twice
                continue
            ip = frame[14:]  # Ethernet header on lo
            if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_UDP:
                continue
            udp = ip[(ip[0] & 0x0F) * 4:]
            src, dst = struct.unpack("!HH", udp[:4])
            payload = udp[8:]
            if low <= dst <= high:
                self.to_baresip.append(payload)
            elif low <= src <= high:
                self.from_baresip.append(payload)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def audio_packets(datagrams: list[bytes]) -> list[bytes]:
    """RTP (not RTCP) datagrams carrying PCMU (payload type 0)."""
    return [d for d in datagrams if len(d) > 12 and d[0] >> 6 == 2 and d[1] & 0x7F == 0]


def tonality(datagrams: list[bytes], tag_len: int, freq: float) -> float:
    """dB of ``freq`` re the whole signal, decoding each payload as plain PCMU: near 0 for a clear tone,
    about -20 for the white noise an encrypted payload decodes to."""
    payload = b"".join(d[12:len(d) - tag_len] for d in datagrams)
    samples = ma.ulaw_decode(payload).astype(np.float64) / 32768
    return ma.tone_dbfs(samples, 8000, freq) - ma.rms_dbfs(samples)


def tls_server(server_factory, tmp_path, trunk_srtp: str):
    certs = make_test_certificates(tmp_path / "certs")
    sips_port = free_port()
    server = server_factory(
        f"server:\n  tls: {{cert: {certs.server_cert}, key: {certs.server_key}}}\n"
        f"inbound_trunks:\n  - name: secure\n    srtp: {trunk_srtp}\n",
        extra_args=["--sips-port", str(sips_port)])
    return server, sips_port, certs.ca_cert


def test_baresip_srtp_call_over_tls_carries_encrypted_audio_both_ways(server_factory, tmp_path):
    server, sips_port, ca = tls_server(server_factory, tmp_path, "required")
    capture = LoopbackCapture()
    try:
        output = run_baresip(tmp_path, f"sip:demo@127.0.0.1:{sips_port}",  # baresip adds the account's transport
                             "<sip:caller@127.0.0.1;transport=tls>;regint=0;mediaenc=srtp-mand",
                             seconds=CALL_SECONDS, ca=ca)
    finally:
        capture.stop()
    assert "call established" in output.lower(), output[-3000:]
    # baresip's own word: SDES negotiated and the keys work (it logs each failed decrypt).
    assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in output, output[-3000:]
    assert "failed to decrypt" not in output, output[-3000:]
    call = server.wait_for(lambda: (c := server.calls()) and c[0]["status"] == "hangup" and c[0], what="hangup")
    assert call["end_reason"] == "caller_hangup" and call["trunk"] == "secure", call
    srtp = call["media"]["srtp"]
    assert srtp and srtp["auth_failures"] == 0 and srtp["unprotected"] > 100 and srtp["protected"] > 100, srtp

    # What baresip decrypted and decoded: the demo's tone, at a healthy level.
    dumps = sorted(tmp_path.glob("dump-*-dec.wav"))
    assert dumps, f"baresip wrote no decoded audio dump: {list(tmp_path.iterdir())}"
    heard, rate = ma.read_wav(dumps[0])
    heard = heard[0][heard.shape[1] // 4: 3 * heard.shape[1] // 4]
    assert len(heard) > rate
    assert abs(ma.dominant_frequency(heard, rate) - DEMO_TONE_HZ) < 10
    assert ma.tone_dbfs(heard, rate, DEMO_TONE_HZ) > -20

    # What we decrypted: the recording's caller channel is baresip's tone at its level.
    recording = server.workdir / "data" / "recordings" / f"{call['id']}.wav"
    server.wait_for(recording.is_file, what="the recording")
    recorded, rate = ma.read_wav(recording)
    left = recorded[0][recorded.shape[1] // 4: 3 * recorded.shape[1] // 4]
    assert abs(ma.dominant_frequency(left, rate) - CALLER_TONE_HZ) < 10
    assert abs(ma.tone_dbfs(left, rate, CALLER_TONE_HZ) - CALLER_TONE_DBFS) < 3

    # On the wire, both ways: SRTP-sized packets whose payload is not either tone in plain G.711.
    ours, theirs = audio_packets(capture.to_baresip), audio_packets(capture.from_baresip)
    assert len(ours) > 100 and len(theirs) > 100, (len(ours), len(theirs))
    assert all(len(d) == 12 + 160 + SRTP_TAG_80 for d in ours), {len(d) for d in ours}
    assert all(len(d) == 12 + 160 + SRTP_TAG_80 for d in theirs), {len(d) for d in theirs}
    assert tonality(ours, SRTP_TAG_80, DEMO_TONE_HZ) < -10, "our RTP payload is the plain demo tone"
    assert tonality(theirs, SRTP_TAG_80, CALLER_TONE_HZ) < -10, "baresip's RTP payload is the plain caller tone"


def test_plain_rtp_offer_to_a_required_trunk_gets_488(server_factory, tmp_path):
    server, sips_port, ca = tls_server(server_factory, tmp_path, "required")
    output = run_baresip(tmp_path, f"sip:demo@127.0.0.1:{sips_port}",  # baresip adds the account's transport
                         "<sip:caller@127.0.0.1;transport=tls>;regint=0", seconds=1.0, ca=ca)
    assert "488" in output and "call established" not in output.lower(), output[-3000:]
    call = server.wait_for(lambda: (c := server.calls()) and c[0]["status"] == "hangup" and c[0], what="rejection")
    assert call["answered_at"] is None and call["trunk"] == "secure", call


def test_sdes_keys_are_refused_over_udp_signalling(server_factory, tmp_path):
    """RFC 4568 §8.3: a=crypto over UDP exposes the keys. A required trunk refuses the call; by default
    (auto: off over UDP) an RTP/SAVP-only offer gets 488 too. Both say why in the log."""
    required = server_factory("inbound_trunks:\n  - name: secure\n    srtp: required\n")
    (tmp_path / "a").mkdir()
    output = run_baresip(tmp_path / "a", f"sip:demo@127.0.0.1:{required.sip_port}",
                         "<sip:caller@127.0.0.1>;regint=0;mediaenc=srtp-mand", seconds=1.0)
    assert "488" in output and "call established" not in output.lower(), output[-3000:]
    required.wait_for(lambda: "RFC 4568 §8.3" in required.log_path.read_text(), what="the refusal in the log")
    assert "signalling is UDP" in required.log_path.read_text()

    default = server_factory()
    (tmp_path / "b").mkdir()
    output = run_baresip(tmp_path / "b", f"sip:demo@127.0.0.1:{default.sip_port}",
                         "<sip:caller@127.0.0.1>;regint=0;mediaenc=srtp-mand", seconds=1.0)
    assert "488" in output and "call established" not in output.lower(), output[-3000:]
    default.wait_for(lambda: "a=crypto offered over UDP ignored" in default.log_path.read_text(),
                     what="the refusal in the log")
    # Keys over UDP never come back to the peer in an answer.
    assert default.calls()[0]["answered_at"] is None


def test_we_dial_baresip_over_tls_with_srtp_required(server_factory, tmp_path, monkeypatch):
    """Outbound: our INVITE offers RTP/SAVP with a=crypto only, over TLS; baresip (srtp-mand, auto answer)
    takes one of our keys and decrypts every packet (it logs each failure), and we decrypt its tone. Hold and
    unhold re-INVITE with the same keys (RFC 4568 §7.1.4) and the call stays encrypted."""
    certs = make_test_certificates(tmp_path / "certs")
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_cert))  # the server's TLS client trusts the test CA
    sips_port = free_port()
    server = server_factory(f"server:\n  tls: {{cert: {certs.server_cert}, key: {certs.server_key}}}\n"
                            "media:\n  srtp: required\n", extra_args=["--sips-port", str(sips_port)])
    baresip = require_tool("baresip")
    workdir = tmp_path / "callee"
    workdir.mkdir()
    source = ma.write_wav(workdir / "callee.wav", ma.sine(CALLER_TONE_HZ, 20.0, CALLER_TONE_DBFS))
    config_dir = baresip_config(workdir, source,
                                "<sip:callee@127.0.0.1;transport=tls>;regint=0;answermode=auto;mediaenc=srtp-mand")
    pem = workdir / "baresip.pem"
    pem.write_text(Path(certs.server_cert).read_text() + Path(certs.server_key).read_text())
    config = config_dir / "config"
    config.write_text(config.read_text() + f"sip_certificate {pem}\n")
    sip_port = int(config.read_text().split("sip_listen 127.0.0.1:")[1].split()[0])  # TLS listens one above
    process = subprocess.Popen([baresip, "-f", str(config_dir), "-t", "25"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workdir)
    try:
        time.sleep(1.0)  # baresip's listeners
        status, body = server.post("/api/calls", {"to": f"sip:callee@127.0.0.1:{sip_port + 1};transport=tls"})
        assert status == 201, body
        path = f"/api/calls/{body['id']}"
        server.wait_for(lambda: server.get(path)["status"] == "active", timeout=10, what="an answer")
        time.sleep(2.0)
        for action in ("hold", "unhold"):
            status, reply = server.post(f"{path}/{action}", {})
            assert status < 300, reply
            server.wait_for(lambda: sum(e["type"] == "reanswer" for e in server.get(path)["events"])
                            == (1 if action == "hold" else 2), what=f"the {action} re-INVITE answered")
            time.sleep(1.0)
        after_unhold = server.get(path)["media"]["packets_received"]
        time.sleep(1.0)
        server.post(f"{path}/hangup", {})
        call = server.wait_for(lambda: (c := server.get(path))["status"] == "hangup" and c, what="the hangup")
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in output, output[-3000:]
    assert "failed to decrypt" not in output, output[-3000:]
    srtp = call["media"]["srtp"]
    assert srtp and srtp["auth_failures"] == 0 and srtp["unprotected"] > 100 and srtp["protected"] > 100, srtp
    # Audio after unhold still decrypts on our side: packets kept arriving up to the hangup
    # (about 50 in the last second; under load the count varies, so only clearly more than none).
    assert call["media"]["packets_received"] - after_unhold > 20, (after_unhold, call["media"])
    # What we decrypted, before the hold and after the unhold: the callee's tone at its level.
    recording = server.workdir / "data" / "recordings" / f"{call['id']}.wav"
    server.wait_for(recording.is_file, what="the recording")
    recorded, rate = ma.read_wav(recording)
    for name, part in (("before the hold", recorded[0][int(0.5 * rate): int(1.8 * rate)]),
                       ("after the unhold", recorded[0][-int(0.9 * rate): -int(0.2 * rate)])):
        assert abs(ma.dominant_frequency(part, rate) - CALLER_TONE_HZ) < 10, name
        assert abs(ma.tone_dbfs(part, rate, CALLER_TONE_HZ) - CALLER_TONE_DBFS) < 3, name
