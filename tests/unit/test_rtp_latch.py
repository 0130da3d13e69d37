"""The strict symmetric-RTP latch, on a fake clock: who may latch, who may take over, what is dropped."""

from __future__ import annotations

import struct

import pytest

from callbridge.rtp.latch import (
    ACCEPT_RTCP,
    ACCEPT_RTP,
    DROP,
    LEARN_RUN,
    REBIND_RUN,
    REBIND_SILENCE_S,
    SSRC_SWITCH_SILENCE_S,
    RtpLatch,
    rtcp_sender_ssrc,
)
from callbridge.rtp.rtcp import RtcpBye, RtcpReceiverReport, RtcpSdes, RtcpSenderReport, SdesChunk, serialize_compound

PCMU, CN, EVENT = 0, 13, 101
SDP = ("127.0.0.1", 4000)
SDP_RTCP = ("127.0.0.1", 4001)
NAT = ("203.0.113.7", 31000)
NAT_RTCP = ("203.0.113.7", 31001)
REBOUND = ("203.0.113.7", 42000)
ATTACKER = ("198.51.100.9", 5555)
FRAME = 0.02


def rtp(seq: int, ssrc: int = 0xCA11, pt: int = PCMU, first: int = 0x80, payload: bytes = bytes(160)) -> bytes:
    return struct.pack("!BBHII", first, pt, seq & 0xFFFF, seq * 160, ssrc) + payload


def make_latch() -> RtpLatch:
    latch = RtpLatch(frozenset({PCMU, CN}), frozenset({EVENT}))
    latch.set_signalled(SDP, SDP_RTCP)
    return latch


def locked(addr=SDP, ssrc: int = 0xCA11, now: float = 0.0) -> RtpLatch:
    latch = make_latch()
    for i in range(LEARN_RUN):
        latch.rtp(rtp(i, ssrc), addr, now + i * FRAME)
    assert latch.source == addr
    return latch


def stream(latch: RtpLatch, addr, start: float, count: int, *, seq0: int = 0, ssrc: int = 0xCA11,
           pt: int = PCMU) -> list[int]:
    return [latch.rtp(rtp(seq0 + i, ssrc, pt), addr, start + i * FRAME) for i in range(count)]


# -- learning -------------------------------------------------------------------------------------------------

def test_first_valid_packet_from_the_signalled_address_locks_at_once():
    latch = make_latch()
    assert latch.rtp(rtp(1), SDP, 0.0) == ACCEPT_RTP
    assert latch.source == SDP and latch.ssrc == 0xCA11 and latch.changes == 1


def test_behind_nat_the_source_locks_after_a_short_run_in_sequence():
    latch = make_latch()
    assert latch.rtp(rtp(7), NAT, 0.0) == DROP  # one packet proves nothing (RFC 3550 §A.1)
    assert latch.source is None
    assert latch.rtp(rtp(8), NAT, 0.02) == ACCEPT_RTP
    assert latch.source == NAT


def test_behind_nat_the_packets_before_the_lock_are_handed_over_once_it_locks():
    """Issue 14: a NAT'd caller's first packet must reach the call, not only the run that locked it."""
    latch = make_latch()
    first, second = rtp(7, payload=b"first" * 32), rtp(8, payload=b"secnd" * 32)
    assert latch.rtp(first, NAT, 0.0) == DROP and latch.learning == [first]
    assert latch.rtp(second, NAT, 0.02) == ACCEPT_RTP
    assert latch.take_learnt() == [first] and latch.learning == []


def test_a_broken_run_forgets_what_it_held():
    latch = make_latch()
    latch.rtp(rtp(7), NAT, 0.0)
    latch.rtp(rtp(20, ssrc=0xBEEF), NAT, 0.02)  # another stream: the count starts again
    assert latch.learning == [rtp(20, ssrc=0xBEEF)]
    assert latch.rtp(rtp(21, ssrc=0xBEEF), NAT, 0.04) == ACCEPT_RTP
    assert latch.take_learnt() == [rtp(20, ssrc=0xBEEF)]


def test_a_rebinding_source_injects_nothing_it_sent_before_winning():
    latch = locked()
    stream(latch, NAT, 1.0, REBIND_RUN)
    assert latch.source == NAT and latch.learning == []


def test_out_of_sequence_packets_do_not_latch():
    latch = make_latch()
    for seq in (7, 9, 100, 3, 40000):
        assert latch.rtp(rtp(seq), NAT, 0.0) == DROP
    assert latch.source is None


@pytest.mark.parametrize("junk", [
    b"", b"\x80", b"\x80" * 11,  # shorter than an RTP header
    b"\x00" * 172, b"\x40" + b"\x00" * 171,  # version 0 and 1
    rtp(1, pt=8), rtp(1, pt=97),  # payload types the SDP did not negotiate
    b"\xbf" + bytes(20),  # V=2 with 15 CSRCs and an extension that are not there
    rtp(1, first=0xA0, payload=bytes(159) + b"\xff"),  # padding longer than the packet
])
def test_invalid_datagrams_never_latch_and_are_counted(junk):
    latch = make_latch()
    for source in (SDP, NAT, NAT):
        assert latch.rtp(junk, source, 0.0) == DROP
    assert latch.source is None and latch.counters.invalid == 3


def test_nothing_latches_before_payload_types_are_known():
    latch = RtpLatch()
    latch.set_signalled(SDP, SDP_RTCP)
    assert latch.rtp(rtp(1), SDP, 0.0) == DROP and latch.source is None


def test_csrc_and_extension_headers_that_add_up_are_valid():
    latch = make_latch()
    packet = struct.pack("!BBHII", 0x91, PCMU, 5, 800, 0xCA11) + struct.pack("!I", 42) + \
        struct.pack("!HH", 0xBEDE, 1) + bytes(4) + bytes(160)  # one CSRC, a one-word extension
    assert latch.rtp(packet, SDP, 0.0) == ACCEPT_RTP


# -- hijack and injection ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("attack", [b"x", rtp(1, ssrc=0xBAD), rtp(1, ssrc=0xCA11), rtp(1, ssrc=0xBAD, pt=EVENT)])
def test_a_stranger_never_moves_the_lock_while_the_caller_talks(attack):
    latch = locked()
    t = 0.1
    for i in range(500):  # 10 s of the attacker sending as fast as the caller, in sequence
        packet = rtp(1000 + i, ssrc=0xBAD) if attack != b"x" else attack
        assert latch.rtp(packet, ATTACKER, t) == DROP
        assert latch.rtp(rtp(10 + i), SDP, t + 0.001) == ACCEPT_RTP
        t += FRAME
    assert latch.source == SDP and latch.counters.rebinds == 0


def test_stranger_with_a_long_run_but_the_caller_still_there_is_dropped():
    latch = locked(NAT)
    dropped_before = latch.counters.foreign_source  # the probation packet
    # The caller sends every 400 ms (slow, but under the silence threshold); the attacker floods.
    t = 0.0
    for i in range(2000):
        assert latch.rtp(rtp(5000 + i, ssrc=0xBAD), ATTACKER, t) == DROP
        if i % 20 == 0:
            assert latch.rtp(rtp(100 + i), NAT, t) == ACCEPT_RTP
        t += FRAME
    assert latch.source == NAT and latch.counters.foreign_source - dropped_before == 2000


def test_interleaved_foreign_ssrc_from_the_locked_address_is_dropped():
    latch = locked()
    t = 1.0
    for i in range(50):
        assert latch.rtp(rtp(100 + i), SDP, t) == ACCEPT_RTP
        assert latch.rtp(rtp(9000 + i, ssrc=0xF00), SDP, t + 0.005) == DROP
        t += FRAME
    assert latch.ssrc == 0xCA11 and latch.counters.foreign_ssrc == 50


def test_rtcp_on_the_rtp_port_is_accepted_only_from_the_locked_source():
    latch = locked()
    report = serialize_compound([RtcpReceiverReport(0xCA11)])
    assert latch.rtp(report, SDP, 1.0) == ACCEPT_RTCP
    assert latch.rtp(report, ATTACKER, 1.0) == DROP
    assert make_latch().rtp(report, SDP, 0.0) == DROP  # nothing locked yet


# -- legitimate moves ---------------------------------------------------------------------------------------------

def test_nat_rebinding_follows_after_silence_and_a_sustained_run():
    latch = locked(NAT)
    stream(latch, NAT, 0.1, 50, seq0=10)  # talking until t = 1.08
    last = 0.1 + 49 * FRAME
    # The NAT mapping changes: the same stream continues from a new port.
    verdicts = stream(latch, REBOUND, last + FRAME, 40, seq0=60)
    first_ok = verdicts.index(ACCEPT_RTP)
    # Not before REBIND_RUN packets, and not before the old port has been quiet long enough.
    assert first_ok >= REBIND_RUN - 1
    assert first_ok * FRAME + FRAME >= REBIND_SILENCE_S - 1e-9
    assert set(verdicts[first_ok:]) == {ACCEPT_RTP}
    assert latch.source == REBOUND and latch.counters.rebinds == 1
    assert latch.rtp(rtp(70), NAT, 2.0) == DROP  # the old mapping no longer reaches the call


def test_a_broken_run_starts_over():
    latch = locked(NAT)
    t = 5.0  # long after the caller went quiet
    for i in range(REBIND_RUN - 1):
        assert latch.rtp(rtp(100 + i, ssrc=0xBAD), ATTACKER, t + i * FRAME) == DROP
    assert latch.rtp(rtp(500, ssrc=0xBAD), ATTACKER, t + 1) == DROP  # a jump: the count restarts
    verdicts = stream(latch, ATTACKER, t + 1 + FRAME, REBIND_RUN, seq0=501, ssrc=0xBAD)
    assert verdicts[:-2] == [DROP] * (REBIND_RUN - 2) and verdicts[-2:] == [ACCEPT_RTP] * 2


def test_sequence_wraps_inside_a_run():
    latch = locked(NAT)
    verdicts = stream(latch, REBOUND, 5.0, REBIND_RUN, seq0=0xFFFF - 3)
    assert verdicts[-1] == ACCEPT_RTP


def test_the_signalled_address_is_trusted_at_once():
    """A re-INVITE moved the media: the new address in the SDP takes over without a wait."""
    latch = locked(NAT)
    latch.set_signalled(("127.0.0.1", 6000), ("127.0.0.1", 6001))
    assert latch.rtp(rtp(1, ssrc=0x5EC0), ("127.0.0.1", 6000), 0.05) == ACCEPT_RTP
    assert latch.source == ("127.0.0.1", 6000) and latch.ssrc == 0x5EC0


def test_ssrc_change_from_the_locked_source_after_silence_is_a_new_stream():
    latch = locked()
    stream(latch, SDP, 0.1, 10, seq0=10)
    quiet_from = 0.1 + 9 * FRAME
    assert latch.rtp(rtp(3, ssrc=0x2222), SDP, quiet_from + SSRC_SWITCH_SILENCE_S / 2) == DROP
    assert latch.rtp(rtp(4, ssrc=0x2222), SDP, quiet_from + SSRC_SWITCH_SILENCE_S) == ACCEPT_RTP
    assert latch.ssrc == 0x2222 and latch.counters.ssrc_changes == 1
    assert latch.rtp(rtp(30), SDP, quiet_from + SSRC_SWITCH_SILENCE_S + 0.01) == DROP  # the old one is over


def test_a_new_offer_lets_the_locked_source_start_a_new_stream_at_once():
    latch = locked()
    stream(latch, SDP, 0.1, 10, seq0=10)
    latch.set_signalled(SDP, SDP_RTCP)  # re-INVITE
    assert latch.rtp(rtp(77, ssrc=0x3333), SDP, 0.3) == ACCEPT_RTP
    assert latch.source == SDP and latch.ssrc == 0x3333


def test_events_may_use_their_own_ssrc_from_the_locked_source():
    """SIPp's play_dtmf sends RFC 4733 on its own SSRC, interleaved with the audio stream."""
    latch = locked()
    t = 0.1
    for i in range(30):
        assert latch.rtp(rtp(100 + i), SDP, t) == ACCEPT_RTP
        assert latch.rtp(rtp(700 + i, ssrc=0xE7E7, pt=EVENT), SDP, t + 0.003) == ACCEPT_RTP
        assert latch.rtp(rtp(900 + i, ssrc=0xE8E8, pt=EVENT), SDP, t + 0.006) == DROP  # a second one interleaved
        t += FRAME
    assert (latch.ssrc, latch.event_ssrc) == (0xCA11, 0xE7E7)


def test_comfort_noise_keeps_the_lock_alive():
    latch = locked(NAT)
    t = 0.1
    for i in range(40):  # CN every 200 ms while the caller is quiet
        assert latch.rtp(rtp(10 + i, pt=CN, payload=b"\x40"), NAT, t) == ACCEPT_RTP
        for j in range(10):
            assert latch.rtp(rtp(3000 + 10 * i + j, ssrc=0xBAD), ATTACKER, t + j * FRAME) == DROP
        t += 0.2
    assert latch.source == NAT


# -- RTCP ----------------------------------------------------------------------------------------------------------

def report(ssrc: int, kind=RtcpReceiverReport) -> bytes:
    head = kind(ssrc) if kind is RtcpReceiverReport else RtcpSenderReport(ssrc, 1 << 32, 0, 1, 160)
    return serialize_compound([head, RtcpSdes([SdesChunk(ssrc, [(1, b"caller")])])])


def test_rtcp_sender_ssrc_needs_a_valid_compound_led_by_sr_or_rr():
    assert rtcp_sender_ssrc(report(0xCA11)) == 0xCA11
    assert rtcp_sender_ssrc(report(0xCA11, RtcpSenderReport)) == 0xCA11
    assert rtcp_sender_ssrc(serialize_compound([RtcpBye([0xCA11])])) is None  # not led by SR/RR
    assert rtcp_sender_ssrc(report(0xCA11)[:-3]) is None  # truncated
    assert rtcp_sender_ssrc(b"x") is None and rtcp_sender_ssrc(bytes(40)) is None


def test_rtcp_latches_from_the_signalled_address_or_with_the_locked_ssrc():
    latch = locked(NAT)
    assert latch.rtcp(b"x", ATTACKER) is False
    assert latch.rtcp(report(0xBAD), ATTACKER) is False  # valid, but a stranger's SSRC
    assert latch.rtcp_source is None
    assert latch.rtcp(report(0xCA11), NAT_RTCP) is True  # behind NAT: the RTP lock's SSRC vouches
    assert latch.rtcp_source == NAT_RTCP
    assert latch.rtcp(b"junk the stream will count", NAT_RTCP) is True  # the locked source's own
    assert latch.rtcp(report(0xBAD), ATTACKER) is False and latch.rtcp_source == NAT_RTCP
    assert latch.counters.rtcp_rejected == 3


def test_rtcp_from_the_signalled_address_before_any_rtp():
    latch = make_latch()
    assert latch.rtcp(report(0x1234), SDP_RTCP) is True
    assert latch.rtcp(report(0x1234), NAT_RTCP) is False  # no RTP lock to vouch for it
