"""An AudioStream on real loopback UDP sockets, driven tick by tick."""

from __future__ import annotations

import asyncio
import socket
import struct
import wave

import numpy as np
import pytest

from callbridge.media.codecs import codec_for
from callbridge.media.recorder import CallRecorder
from callbridge.media.sources import PcmSource
from callbridge.media.stream import AudioStream
from callbridge.rtp.ports import PortAllocator
from callbridge.rtp.rtcp import RtcpBye, RtcpSenderReport, parse_compound
from callbridge.rtp.socket import RtpSocket


class Peer:
    """The far end: plain UDP sockets on an even/odd pair."""

    def __init__(self) -> None:
        for base in range(41000, 42000, 2):
            try:
                self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.rtp.bind(("127.0.0.1", base))
                self.rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.rtcp.bind(("127.0.0.1", base + 1))
                break
            except OSError:
                self.rtp.close()
        self.port = base
        for s in (self.rtp, self.rtcp):
            s.setblocking(False)

    def drain(self, sock: socket.socket) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(sock.recv(2048))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


@pytest.fixture
async def pair(tmp_path):
    ports = PortAllocator(43000, 43100)
    rtp = RtpSocket(ports, "127.0.0.1")
    await rtp.open()
    peer = Peer()
    rtp.set_remote("127.0.0.1", peer.port)
    stream = AudioStream(rtp, "PCMU", 0, telephone_event_pt=101,
                         recorder=CallRecorder(tmp_path / "call.wav", 8000))
    stream.confirm_remote()  # as the call layer does when the ACK arrives
    yield stream, peer, ports
    stream.close()
    peer.close()


async def settle() -> None:
    await asyncio.sleep(0.02)


def headers(packets: list[bytes]) -> list[tuple[int, int, int, int]]:
    """(marker, pt, seq, ts) per packet."""
    return [(p[1] >> 7, p[1] & 0x7F, *struct.unpack_from("!HI", p, 2)) for p in packets]


async def test_paced_packets_carry_a_continuous_rtp_timeline(pair):
    stream, peer, _ = pair
    stream.play(PcmSource(np.full(800, 1000, np.int16), 8000))
    for i in range(8):
        stream.tick(i * 0.02)
    await settle()
    got = headers(peer.drain(peer.rtp))
    assert len(got) == 8
    assert got[0][0] == 1 and all(m == 0 for m, *_ in got[1:])  # marker on the first only
    assert all(pt == 0 for _, pt, _, _ in got)
    seqs = [s for *_, s, _ in got]
    stamps = [t for *_, t in got]
    assert all((b - a) % 65536 == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    assert all((b - a) % 2**32 == 160 for a, b in zip(stamps, stamps[1:], strict=False))


async def test_dtmf_is_sent_as_rfc4733_with_three_end_packets(pair):
    stream, peer, _ = pair
    stream.send_dtmf("1", duration_ms=100)
    for i in range(12):
        stream.tick(i * 0.02)
    await settle()
    packets = peer.drain(peer.rtp)
    events = [p for p in packets if p[1] & 0x7F == 101]
    payloads = [struct.unpack_from("!BBH", p, 12) for p in events]
    assert all(event == 1 for event, _, _ in payloads)
    ends = [d for _, flags, d in payloads if flags & 0x80]
    assert ends == [800, 800, 800]  # 100 ms at 8 kHz, end packet sent three times
    assert len({struct.unpack_from("!I", p, 4)[0] for p in events}) == 1  # one event timestamp
    assert events[0][1] & 0x80  # marker on the first event packet
    # Audio resumes after the event.
    assert packets[-1][1] & 0x7F == 0


async def test_received_audio_is_heard_recorded_and_dtmf_detected(pair, tmp_path):
    stream, peer, _ = pair
    digits = []
    stream.on_dtmf = digits.append
    codec = codec_for("PCMU")()
    tone = (np.sin(2 * np.pi * 1000 * np.arange(160) / 8000) * 8000).astype(np.int16)
    local = ("127.0.0.1", stream.socket.port)
    loop = asyncio.get_running_loop()
    stream.play(PcmSource(np.full(8000, 3000, np.int16), 8000))
    for i in range(40):
        peer.rtp.sendto(struct.pack("!BBHII", 0x80, 0, i, i * 160, 99) + codec.encode(tone), local)
        if i == 10:  # RFC 4733 start packet for "9" on the dynamic PT
            peer.rtp.sendto(struct.pack("!BBHII", 0x80, 0x80 | 101, 1000, 1600, 99) + bytes([9, 10, 0, 160]), local)
        await asyncio.sleep(0.02)
        stream.tick(loop.time())
    assert [(d.digit, d.source) for d in digits] == [("9", "rfc4733")]
    assert stream.socket.latched
    record = stream.media_record()
    assert record["packets_received"] == 41 and record["packets_lost"] == 0
    stream.close()
    with wave.open(str(tmp_path / "call.wav")) as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == 8000
        frames = np.frombuffer(wav.readframes(wav.getnframes()), np.int16).reshape(-1, 2)
    left, right = frames[:, 0].astype(float), frames[:, 1].astype(float)
    spectrum = np.abs(np.fft.rfft(left[-3200:]))
    assert abs(np.argmax(spectrum) * 8000 / 3200 - 1000) < 10  # the caller, on the left
    assert np.mean(np.abs(right[200:] - 3000)) < 100  # what we played, on the right


async def test_rtcp_reports_go_out_when_due_and_bye_on_close(pair):
    stream, peer, ports = pair
    stream.start(0.0)
    for i in range(400):  # 8 s of ticks: at least one report (first at 1.25-3.75 s)
        stream.tick(i * 0.02)
    await settle()
    reports = [parse_compound(d) for d in peer.drain(peer.rtcp)]
    assert reports and isinstance(reports[0][0], RtcpSenderReport)
    assert reports[0][0].ssrc == stream.ssrc
    port = stream.socket.port
    stream.close()
    await settle()
    final = [parse_compound(d) for d in peer.drain(peer.rtcp)]
    assert any(isinstance(p, RtcpBye) for packets in final for p in packets)
    assert not ports.is_allocated(port)


async def test_garbage_datagrams_are_counted_not_fatal(pair):
    stream, peer, _ = pair
    local = ("127.0.0.1", stream.socket.port)
    for junk in (b"", b"\x80", b"\x00" * 11, b"\xbf" + b"\x00" * 20, b"\x90\x00" + b"\x00" * 10, bytes(range(256))):
        peer.rtp.sendto(junk, local)
        peer.rtcp.sendto(junk, ("127.0.0.1", stream.socket.port + 1))
    await settle()
    stream.tick(0.0)
    # The latch drops them before the stream sees them, and counts why.
    drops = stream.media_record()["drops"]
    assert drops["invalid"] == 6 and drops["rtcp_rejected"] == 6, drops
    assert stream.media_record()["dropped_packets"] == 12
    assert not stream.socket.latched
