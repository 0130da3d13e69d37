"""Attacks on the media path of a real server, with SIPp placing the call (issue 15, findings 3 and 4).

The caller's media comes from sockets here (the SDP points at them), so the test counts what the far
side actually received: the caller's own audio socket, an attacker's socket, a reflection victim's.

* Hijack and injection: once the stream locks, datagrams from another port (1 byte, and valid RTP with
  a foreign SSRC carrying a loud tone and RFC 4733 digits) neither move our audio nor reach the call.
* NAT rebinding: the caller's source port changes after the old one goes quiet; our audio follows.
* Reflection: an INVITE that is never ACKed, whose c=/m= names a victim, sends the victim nothing.
* Random ports: consecutive calls do not get consecutive ports.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from . import media_assets as ma
from .conftest import free_port, http_get, run_sipp
from .test_media import RtpSink, killed_on_failure, start_call, wait_status

pytestmark = pytest.mark.interop

CALLER_HZ, CALLER_DBFS = 500.0, -12.0
ATTACK_HZ = 1800.0
SECOND_HZ = 700.0  # the caller after its NAT rebinding
FRAME_S = 0.02
CALLER_SSRC, ATTACK_SSRC = 0xCA11E400, 0x0BAD0BAD
REFLECTION_WINDOW_S = 5.0
REFLECTION_MAX_PACKETS = 5


class Sender:
    """Sends raw µ-law as PCMU from ``sock`` every 20 ms on its own thread (sequence and SSRC kept)."""

    def __init__(self, sock: socket.socket, dest: tuple[str, int], ulaw: bytes, ssrc: int, seq: int = 100) -> None:
        self.sock, self.dest, self.ulaw, self.ssrc, self.seq = sock, dest, ulaw, ssrc, seq
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sender:
        self._thread.start()
        return self

    def _run(self) -> None:
        next_at = time.monotonic()
        offset = 0
        while not self._stop.is_set() and offset + ma.FRAME <= len(self.ulaw):
            packet = ma.rtp_packet(0, self.seq, self.seq * ma.FRAME, self.ssrc, self.ulaw[offset:offset + ma.FRAME],
                                   marker=offset == 0)
            self.sock.sendto(packet, self.dest)
            self.seq += 1
            self.sent += 1
            offset += ma.FRAME
            next_at += FRAME_S
            time.sleep(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def tone_ulaw(directory: Path, name: str, freq: float, seconds: float, dbfs: float) -> bytes:
    return ma.ulaw_file(directory, name, ma.sine(freq, seconds, dbfs)).read_bytes()


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    while select.select([sock], [], [], 0)[0]:
        out.append(sock.recv(65536))
    return out


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def recording(server, call: dict, tmp_path: Path) -> np.ndarray:
    """The call's stereo recording, served by the API: (2, n) floats, caller on the left."""
    call = server.wait_for(lambda: (c := server.get(f"/api/calls/{call['id']}"))["recording"] and c, timeout=10,
                           what="the recording")
    status, _, body = http_get(server, f"/api/calls/{call['id']}/recording")
    assert status == 200
    samples, rate = ma.read_wav_bytes(body, tmp_path / "recording.wav")
    assert rate == ma.RATE and samples.shape[0] == 2
    return samples


def test_a_stranger_can_neither_hijack_nor_inject(server, tmp_path):
    """While the caller talks, two strangers' ports send 1-byte datagrams, a loud 1800 Hz tone as valid
    in-sequence RTP (its own SSRC, and the caller's), RFC 4733 presses of "5" and RTCP. Before the fix the
    first byte moved our audio to the attacker and the presses reached the call."""
    caller = RtpSink()  # the caller's media: receives in a thread, and we send from its RTP socket
    caller_port = caller.port
    attacker = udp_socket()
    attacker2 = udp_socket()  # a second port, guessing the caller's SSRC
    sipp = start_call(server, tmp_path / "caller", "uac_media_at.xml", "-set", "rtp_port", str(caller.port),
                      "-d", "7000")
    senders = []
    try:
        with killed_on_failure(sipp):
            call = wait_status(server, sipp, "active")
            local = ("127.0.0.1", call["media"]["local_port"])
            senders.append(Sender(caller.rtp, local, tone_ulaw(tmp_path, "caller", CALLER_HZ, 6.5, CALLER_DBFS),
                                  CALLER_SSRC).start())
            time.sleep(1.0)  # locked to the caller now
            attack_from = time.monotonic()
            loud = tone_ulaw(tmp_path, "attack", ATTACK_HZ, 3.0, -3.0)
            seq = 5000
            for i in range(150):  # 3 s, at the caller's own pace
                attacker.sendto(b"\x00", local)  # the one-byte hijack
                attacker.sendto(ma.rtp_packet(0, seq, seq * 160, ATTACK_SSRC, loud[i * 160:(i + 1) * 160]), local)
                attacker2.sendto(ma.rtp_packet(0, seq + 20000, seq * 160, CALLER_SSRC,
                                               loud[i * 160:(i + 1) * 160]), local)
                if i % 25 < 8:  # RFC 4733 "5": 160 ms presses, three end packets
                    end = i % 25 >= 5
                    attacker.sendto(ma.rtp_packet(101, seq + 40000, 777 * (i // 25), ATTACK_SSRC,
                                                  ma.rfc4733_payload("5", 160 * (i % 25 + 1), end=end),
                                                  marker=i % 25 == 0), local)
                attacker.sendto(b"\x80\xc9\x00\x01" + ATTACK_SSRC.to_bytes(4, "big"), (local[0], local[1] + 1))
                seq += 1
                time.sleep(FRAME_S)
            attack_until = time.monotonic()
            time.sleep(0.3)
            live = server.get(f"/api/calls/{call['id']}")
        result = sipp.wait()
    finally:
        for sender in senders:
            sender.stop()
        caller.close()
    stolen = drain(attacker) + drain(attacker2)
    attacker.close()
    attacker2.close()
    assert result.returncode == 0, result.output

    # Our audio kept going to the caller, and none went to the attacker.
    assert stolen == [], f"the attacker received {len(stolen)} datagrams"
    during = caller.count(attack_from + 0.1, attack_until)
    assert during >= 0.85 * (attack_until - attack_from - 0.1) / FRAME_S, f"the caller got {during} packets"
    media = live["media"]
    assert media["remote"] == f"127.0.0.1:{caller_port}", media
    assert media["drops"]["invalid"] >= 140 and media["drops"]["foreign_source"] >= 280, media
    assert media["drops"]["rtcp_rejected"] >= 140, media

    # Nothing the attacker sent reached the call: no digit, and no 1800 Hz in the caller's channel.
    final = wait_status(server, sipp, "hangup")
    assert final["dtmf"] == [] and not [e for e in final["events"] if e["type"] == "dtmf"], final["dtmf"]
    left = recording(server, final, tmp_path)[0]
    assert ma.tone_dbfs(left, ma.RATE, CALLER_HZ) > CALLER_DBFS - 4, "the caller's own audio is missing"
    injected = ma.tone_dbfs(left, ma.RATE, ATTACK_HZ)
    assert injected < ma.tone_dbfs(left, ma.RATE, CALLER_HZ) - 40, f"attacker audio recorded at {injected:.1f} dBFS"


def test_audio_follows_the_caller_through_a_nat_rebinding(server, tmp_path):
    """The SDP names a port the caller never sends from (it is behind NAT); its mapping then changes."""
    signalled = RtpSink()
    first, second = udp_socket(), udp_socket()
    sipp = start_call(server, tmp_path / "caller", "uac_media_at.xml", "-set", "rtp_port", str(signalled.port),
                      "-d", "6000")
    try:
        with killed_on_failure(sipp):
            call = wait_status(server, sipp, "active")
            local = ("127.0.0.1", call["media"]["local_port"])
            before = Sender(first, local, tone_ulaw(tmp_path, "before", CALLER_HZ, 2.0, CALLER_DBFS),
                            CALLER_SSRC).start()
            time.sleep(2.2)
            before.stop()
            got_first = drain(first)
            # The same stream (SSRC, sequence) continues from a new port, as after a NAT rebinding.
            switched_at = time.time()
            after = Sender(second, local, tone_ulaw(tmp_path, "after", SECOND_HZ, 2.5, CALLER_DBFS), CALLER_SSRC,
                           seq=before.seq).start()
            time.sleep(1.0)  # the old mapping has been quiet 1.2 s and the new one sent 50 packets
            drain(first)  # what went there before the switch
            time.sleep(1.7)
            after.stop()
            live = server.get(f"/api/calls/{call['id']}")
        result = sipp.wait()
    finally:
        signalled.close()
    got_second = drain(second)
    stale = drain(first)
    second_port = second.getsockname()[1]
    first.close()
    second.close()
    assert result.returncode == 0, result.output
    assert len(got_first) >= 75, f"the first mapping got {len(got_first)} packets"
    # The new mapping gets our audio within the rebinding window (0.5 s quiet, then 10 packets)...
    assert len(got_second) >= (2.7 - 1.0) / FRAME_S, f"the new mapping got {len(got_second)} packets"
    # ...and the old one nothing once the switch is done.
    assert stale == [], f"the old mapping still got {len(stale)} packets"
    media = live["media"]
    assert media["remote"] == f"127.0.0.1:{second_port}", media
    assert media["drops"]["rebinds"] == 1, media
    # What the caller said from the new port reached the call (the recording starts at the answer).
    final = wait_status(server, sipp, "hangup")
    left = recording(server, final, tmp_path)[0]
    start = int((switched_at - final["answered_at"] + 1.0) * ma.RATE)
    heard = left[start:start + int(1.2 * ma.RATE)]
    assert len(heard) > ma.RATE and abs(ma.dominant_frequency(heard, ma.RATE) - SECOND_HZ) < 10, \
        "the rebound caller is not heard"


def test_an_unacked_invite_reflects_no_media_at_the_victim(server, tmp_path):
    """One INVITE whose c=/m= names the victim and is never ACKed: before the fix, 50 packets a second
    went to the victim until the server gave up on the ACK (32 s)."""
    victim = RtpSink()
    try:
        sipp = start_call(server, tmp_path / "attacker", "uac_no_ack.xml", "-set", "rtp_port", str(victim.port),
                          "-d", str(int(REFLECTION_WINDOW_S * 1000) + 500))
        with killed_on_failure(sipp):
            server.wait_for(lambda: server.calls(), timeout=10, what="the call")
            since = time.monotonic()
            time.sleep(REFLECTION_WINDOW_S)
            until = time.monotonic()
            calls = server.calls()
        sipp.wait()
        rtp = victim.count(since - 5, until)
        rtcp = sum(1 for at, _ in list(victim.rtcp_packets) if at < until)
    finally:
        victim.close()
    assert rtp + rtcp <= REFLECTION_MAX_PACKETS, f"the victim received {rtp} RTP and {rtcp} RTCP packets"
    assert calls and calls[0]["media"]["remote_confirmed"] is False, calls


def test_consecutive_calls_get_unpredictable_ports(server, tmp_path):
    result = run_sipp([f"127.0.0.1:{server.sip_port}", "-sn", "uac", "-i", "127.0.0.1", "-p", str(free_port()),
                       "-m", "20", "-r", "10", "-l", "1", "-d", "100", "-s", "demo"], cwd=tmp_path)
    assert result.returncode == 0, result.output
    calls = server.wait_for(lambda: (c := server.calls()) and len(c) == 20 and all(x["media"] for x in c) and c,
                            timeout=20, what="20 calls")
    ports = [c["media"]["local_port"] for c in sorted(calls, key=lambda c: c["created_at"])]
    steps = [b - a for a, b in zip(ports, ports[1:], strict=False)]
    assert sum(1 for s in steps if s == 2) <= 3, ports  # in order, every step would be 2
    assert len(set(ports)) == 20 and max(ports) - min(ports) > 200, ports
