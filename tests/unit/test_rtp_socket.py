"""RtpSocket + AudioStream on real loopback UDP: where media goes, and what reaches the call.

Each test counts what the far-side sockets actually received."""

from __future__ import annotations

import asyncio
import socket
import struct

import numpy as np
import pytest

from callbridge.media.codecs import codec_for
from callbridge.media.stream import AudioStream
from callbridge.rtp.latch import REBIND_RUN, REBIND_SILENCE_S
from callbridge.rtp.ports import PortAllocator
from callbridge.rtp.socket import RtpSocket

PCMU = codec_for("PCMU")()


class Endpoint:
    """A UDP socket on loopback that can send RTP and count what it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.addr = self.sock.getsockname()
        self.seq = 0

    def received(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(2048))
            except BlockingIOError:
                return out

    def send_rtp(self, to, ssrc: int, pt: int = 0, payload: bytes | None = None) -> None:
        self.seq += 1
        payload = PCMU.encode(np.zeros(160, np.int16)) if payload is None else payload
        self.sock.sendto(struct.pack("!BBHII", 0x80, pt, self.seq & 0xFFFF, self.seq * 160, ssrc) + payload, to)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def call():
    ports = PortAllocator(44000, 44100)
    rtp = RtpSocket(ports, "127.0.0.1")
    await rtp.open()
    caller = Endpoint()
    rtp.set_remote(*caller.addr)
    stream = AudioStream(rtp, "PCMU", 0, telephone_event_pt=101)
    stream.start(0.0)
    local = ("127.0.0.1", rtp.port)
    yield stream, caller, local
    stream.close()
    caller.close()


async def run(stream: AudioStream, ticks: int, each=None) -> None:
    loop = asyncio.get_running_loop()
    for i in range(ticks):
        if each is not None:
            each(i)
        await asyncio.sleep(0.02)
        stream.tick(loop.time())
    await asyncio.sleep(0.02)


async def test_nothing_goes_to_an_unconfirmed_address(call):
    """Reflection: the INVITE's c= may name a victim; until the ACK nothing is sent there."""
    stream, victim, local = call
    await run(stream, 300, lambda i: victim.sock.sendto(b"x", local) if i == 5 else None)  # junk latches nothing
    stream.close()  # not even the RTCP BYE
    await asyncio.sleep(0.02)
    assert victim.received() == []
    assert stream.stats.packets_sent == 0 and stream.socket.can_send is False


async def test_the_ack_confirms_the_signalled_address(call):
    stream, caller, _ = call
    await run(stream, 5)
    assert caller.received() == []
    stream.confirm_remote()
    await run(stream, 10)
    assert len(caller.received()) == 10


async def test_valid_rtp_from_the_caller_confirms_it_too(call):
    stream, caller, local = call
    await run(stream, 10, lambda i: caller.send_rtp(local, 0xCA11) if i >= 3 else None)
    got = caller.received()
    assert 5 <= len(got) <= 8, len(got)  # from the tick after its first packet
    assert stream.socket.latched


async def test_a_stranger_neither_hijacks_nor_injects(call):
    stream, caller, local = call
    stream.confirm_remote()
    digits = []
    stream.on_dtmf = digits.append
    attacker = Endpoint()
    loud = PCMU.encode((np.sin(2 * np.pi * 1800 * np.arange(160) / 8000) * 30000).astype(np.int16))
    heard = []
    stream.audio_listeners.append(heard.append)

    def each(i: int) -> None:
        caller.send_rtp(local, 0xCA11)
        attacker.sock.sendto(b"x", local)
        attacker.send_rtp(local, 0xBAD, payload=loud)  # valid RTP, in sequence, its own SSRC
        attacker.send_rtp(local, 0xCA11, payload=loud)  # even guessing the caller's SSRC
        if i % 10 == 0:  # RFC 4733 "5", start and end
            attacker.send_rtp(local, 0xBAD, pt=101, payload=bytes([5, 10, 0, 160]))
            attacker.send_rtp(local, 0xBAD, pt=101, payload=bytes([5, 0x80 | 10, 3, 0x20]))  # duration 800

    await run(stream, 100, each)
    try:
        assert attacker.received() == []
        assert len(caller.received()) >= 95
        assert digits == []
        loudest = max(int(np.abs(pcm).max()) for pcm in heard)
        assert loudest < 100, f"attacker audio reached the call (peak {loudest})"
        record = stream.media_record()
        assert record["latched"] and record["remote"] == f"127.0.0.1:{caller.addr[1]}"
        assert record["drops"]["invalid"] >= 100 and record["drops"]["foreign_source"] >= 200, record["drops"]
    finally:
        attacker.close()


async def test_nat_rebinding_moves_our_audio_after_a_sustained_run(call):
    """The caller sits behind NAT (the SDP names a port it never sends from); its mapping changes."""
    stream, signalled, local = call
    stream.confirm_remote()
    old, new = Endpoint(), Endpoint()
    try:
        await run(stream, 30, lambda i: old.send_rtp(local, 0xCA11))
        assert stream.socket.remote == old.addr
        assert len(old.received()) >= 25
        new.seq = old.seq  # the same stream, continuing from another port
        await run(stream, 60, lambda i: new.send_rtp(local, 0xCA11))
        assert stream.socket.remote == new.addr
        got_new = len(new.received())
        # Lost: at most the silence window and the run, then everything follows the new port.
        assert got_new >= 60 - (REBIND_SILENCE_S / 0.02 + REBIND_RUN) - 3, got_new
        assert stream.media_record()["drops"]["rebinds"] == 1
        old.received()
        await run(stream, 10, lambda i: old.send_rtp(local, 0xCA11))  # the stale mapping comes back: ignored
        assert old.received() == [] and stream.socket.remote == new.addr
    finally:
        old.close()
        new.close()


async def test_port_zero_disables_sending(call):
    stream, caller, local = call
    stream.confirm_remote()
    stream.socket.set_remote("127.0.0.1", 0)
    await run(stream, 10, lambda i: caller.send_rtp(local, 0xCA11))
    assert caller.received() == []
