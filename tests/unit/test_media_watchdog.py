"""call/media_watchdog.py: which answered calls have heard no RTP for the timeout (time passed in)."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest

from callbridge.call.call import Call, Leg
from callbridge.call.events import CallStatus
from callbridge.call.media_watchdog import MediaWatchdog, check_interval
from callbridge.media.stream import AudioStream
from callbridge.rtp.latch import ACCEPT_RTP
from callbridge.rtp.ports import PortAllocator
from callbridge.rtp.socket import RtpSocket

PEER = ("127.0.0.1", 40000)
TIMEOUT = 10.0


def answered_call(name: str) -> Call:
    socket = RtpSocket(PortAllocator(20000, 20010), "127.0.0.1")
    socket.set_remote(*PEER)
    stream = AudioStream(socket, "PCMU", 0)
    return Call(direction="inbound", leg=Leg(session=SimpleNamespace(call_id=name), stream=stream),
                status=CallStatus.ACTIVE)


def rtp_from(call: Call, addr: tuple[str, int], now: float, seq: int = 1, ssrc: int = 0x1234) -> int:
    """One PCMU packet through the call's latch, as the socket feeds it."""
    packet = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + b"\xff" * 160
    return call.leg.stream.socket.latch.rtp(packet, addr, now)


def silent_ids(watchdog: MediaWatchdog, calls: list[Call], now: float) -> list[str]:
    return [s.call.leg.session.call_id for s in watchdog.silent(calls, now)]


def test_a_call_that_never_sends_is_silent_from_when_the_watch_began():
    watchdog, call = MediaWatchdog(TIMEOUT), answered_call("quiet")
    assert silent_ids(watchdog, [call], 100.0) == []  # first seen: the clock starts here
    assert silent_ids(watchdog, [call], 109.9) == []
    (silence,) = watchdog.silent([call], 110.0)
    assert silence.seconds == pytest.approx(TIMEOUT)


def test_rtp_from_the_peer_resets_the_clock_and_a_strangers_does_not():
    watchdog, call = MediaWatchdog(TIMEOUT), answered_call("talking")
    watchdog.silent([call], 0.0)
    assert rtp_from(call, PEER, 8.0) == ACCEPT_RTP
    assert silent_ids(watchdog, [call], 17.9) == []
    for seq in range(2, 40):  # a stranger's packets, one SSRC each: dropped by the latch
        assert rtp_from(call, ("127.0.0.1", 40100), 9.0 + seq * 0.1, seq=seq, ssrc=seq) != ACCEPT_RTP
    assert silent_ids(watchdog, [call], 18.0) == ["talking"]


def test_held_unanswered_and_ended_calls_are_not_watched_and_a_resumed_call_starts_afresh():
    watchdog = MediaWatchdog(TIMEOUT)
    held, ringing, ended = answered_call("held"), answered_call("ringing"), answered_call("ended")
    ringing.status, ended.status = CallStatus.RINGING, CallStatus.HANGUP
    held.leg.stream.set_hold("remote")
    assert silent_ids(watchdog, [held, ringing, ended], 0.0) == []
    assert silent_ids(watchdog, [held, ringing, ended], 1000.0) == []
    held.leg.stream.set_hold(None)  # resumed at 1000: a full timeout from here, not from 0
    assert silent_ids(watchdog, [held], 1000.0) == []
    assert silent_ids(watchdog, [held], 1009.0) == []
    assert silent_ids(watchdog, [held], 1010.0) == ["held"]


def test_the_check_interval_keeps_the_timeout_within_half_of_itself_and_at_most_5_s():
    assert check_interval(2.0) == 1.0
    assert check_interval(60.0) == 5.0
    with pytest.raises(ValueError):
        MediaWatchdog(0)
