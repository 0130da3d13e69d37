import pytest

from callbridge.rtp.rtcp import (
    SDES_CNAME,
    ReportBlock,
    RtcpBye,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    ntp_from_unix,
    ntp_middle32,
    parse_compound,
)
from callbridge.rtp.stats import ReceiverStats, RtcpScheduler, SenderStats

RATE = 8000


def feed(stats: ReceiverStats, seqs, t0: float = 0.0, ts0: int = 0):
    """Feed packets at a perfect 20 ms cadence; timestamps follow seq order."""
    for i, seq in enumerate(seqs):
        stats.update(seq, (ts0 + 160 * i) & 0xFFFFFFFF, t0 + 0.02 * i)


def test_probation_then_counting():
    s = ReceiverStats(1, RATE)
    assert s.update(100, 0, 0.0) is False  # first packet: on probation
    assert s.update(101, 160, 0.02) is True
    assert s.valid
    assert s.base_seq == 101 and s.received == 1 and s.expected == 1 and s.lost == 0


def test_probation_restarts_on_out_of_order():
    s = ReceiverStats(1, RATE)
    assert not s.update(100, 0, 0.0)
    assert not s.update(200, 0, 0.02)  # not sequential: probation restarts at 200
    assert s.update(201, 0, 0.04)
    assert s.base_seq == 201


def test_jitter_hand_computed():
    # RFC 3550 §A.8 with ts step 160 (20 ms) and arrivals 0, 20, 50, 60, 80 ms:
    #   D = 0, +80, -80, 0  ->  J = 0, 5, 9.6875, 9.08203125
    s = ReceiverStats(1, RATE)
    for seq, ts, arrival in [(0, 0, 0.0), (1, 160, 0.020), (2, 320, 0.050), (3, 480, 0.060)]:
        s.update(seq, ts, arrival)
    assert s.jitter == pytest.approx(9.6875)
    s.update(4, 640, 0.080)
    assert s.jitter == pytest.approx(9.08203125)
    assert s.report_block().jitter == 9


def test_jitter_handles_timestamp_wrap():
    s = ReceiverStats(1, RATE)
    ts0 = 0xFFFFFFFF - 200
    for i in range(10):
        s.update(i, (ts0 + 160 * i) & 0xFFFFFFFF, 0.02 * i)
    assert s.jitter == pytest.approx(0.0, abs=1e-6)


def test_loss_with_sequence_wrap():
    s = ReceiverStats(1, RATE)
    seqs = [65530, 65531, 65532, 65533, 65534, 65535] + list(range(2, 10))  # 0 and 1 lost
    feed(s, seqs)
    # Base is 65531 (first packet spent on probation); highest is 65536 + 9.
    assert s.cycles == 65536
    assert s.extended_max_seq == 65545
    assert s.expected == 15 and s.received == 13 and s.lost == 2
    block = s.report_block()
    assert block.highest_sequence == 0x00010009
    assert block.cumulative_lost == 2
    assert block.fraction_lost == 2 * 256 // 15  # 34

    feed(s, range(10, 20), t0=1.0)
    block = s.report_block()
    assert block.fraction_lost == 0  # nothing lost in this interval
    assert block.cumulative_lost == 2


def test_interval_fraction_all_lost_is_capped():
    s = ReceiverStats(1, RATE)
    feed(s, [0, 1, 2])
    s.report_block()
    s.update(10, 1600, 1.0)  # 3..9 lost, 1 received: 7/8
    assert s.report_block().fraction_lost == 7 * 256 // 8


def test_duplicates_make_lost_negative():
    s = ReceiverStats(1, RATE)
    feed(s, [0, 1, 2, 3])
    s.update(3, 480, 0.1)
    s.update(2, 320, 0.1)
    assert s.lost == -2
    block = s.report_block()
    assert block.cumulative_lost == -2 and block.fraction_lost == 0


def test_reordered_packet_does_not_move_max():
    s = ReceiverStats(1, RATE)
    feed(s, [0, 1, 3, 2, 4])
    assert s.max_seq == 4 and s.lost == 0


def test_large_jump_needs_confirmation():
    s = ReceiverStats(1, RATE)
    feed(s, [0, 1, 2])
    assert s.update(10_000, 0, 1.0) is False  # stray
    assert s.max_seq == 2
    assert s.update(10_001, 0, 1.02) is True  # confirmed: restart
    assert s.base_seq == 10_001 and s.received == 1 and s.lost == 0


def test_sender_stats():
    s = SenderStats(5, RATE)
    s.on_sent(160, 1000, 10.0)
    s.on_sent(160, 1160, 10.02)
    assert (s.packet_count, s.octet_count) == (2, 320)
    assert s.rtp_timestamp_at(10.52) == 1160 + 4000


def test_sender_rtp_timestamp_wraps():
    s = SenderStats(5, RATE)
    s.on_sent(160, 0xFFFFFFF0, 11.0)
    assert s.rtp_timestamp_at(11.01) == (0xFFFFFFF0 + 80) & 0xFFFFFFFF


def make_scheduler(rng_value: float = 0.5) -> RtcpScheduler:
    return RtcpScheduler(ssrc=0x1111, cname="cb@example", clock_rate=RATE, rng=lambda: rng_value)


def test_schedule_randomisation():
    sch = make_scheduler(0.5)
    assert sch.next_due is None and not sch.is_due(100.0)
    sch.start(100.0)
    assert sch.next_due == pytest.approx(102.5)  # half interval × 1.0 for the first
    assert not sch.is_due(102.4) and sch.is_due(102.5)
    sch.build_report(102.5)
    assert sch.next_due == pytest.approx(107.5)

    low, high = make_scheduler(0.0), make_scheduler(0.999999)
    low.build_report(0.0)
    high.build_report(0.0)
    assert low.next_due == pytest.approx(2.5)
    assert high.next_due == pytest.approx(7.5, abs=1e-4)


def test_receiver_report_when_not_sending():
    sch = make_scheduler()
    for i in range(10):
        sch.on_rtp_received(0x2222, 500 + i, 160 * i, 0.02 * i, 160)
    head, sdes = parse_compound(sch.build_report(1.0))
    assert isinstance(head, RtcpReceiverReport)
    assert head.ssrc == 0x1111
    (block,) = head.reports
    assert block.ssrc == 0x2222 and block.highest_sequence == 509
    assert block.lsr == 0 and block.dlsr == 0
    assert isinstance(sdes, RtcpSdes)
    assert sdes.chunks[0].ssrc == 0x1111
    assert sdes.chunks[0].items == [(SDES_CNAME, b"cb@example")]

    # Nothing heard since: no report block next time.
    head, _ = parse_compound(sch.build_report(6.0))
    assert head.reports == []


def test_sender_report_when_sending_then_rr():
    sch = make_scheduler()
    for i in range(50):
        sch.on_rtp_sent(160, 1000 + 160 * i, 0.02 * i)
    wall = 1_700_000_000.0
    head, _ = parse_compound(sch.build_report(1.0, wall_time=wall))
    assert isinstance(head, RtcpSenderReport)
    assert head.packet_count == 50 and head.octet_count == 8000
    assert head.ntp_timestamp == ntp_from_unix(wall)
    assert head.rtp_timestamp == 1000 + 160 * 49 + 160  # extrapolated to 1.0 s
    head, _ = parse_compound(sch.build_report(6.0, wall_time=wall + 5))
    assert isinstance(head, RtcpReceiverReport)


def test_lsr_dlsr_from_received_sr():
    sch = make_scheduler()
    for i in range(5):
        sch.on_rtp_received(0x2222, i, 160 * i, 0.02 * i)
    remote_ntp = ntp_from_unix(1_700_000_123.5)
    sr = RtcpSenderReport(0x2222, remote_ntp, 0, 5, 800)
    assert sch.on_rtcp([sr], now=10.0) == []
    head, _ = parse_compound(sch.build_report(11.5))
    (block,) = head.reports
    assert block.lsr == ntp_middle32(remote_ntp)
    assert block.dlsr == int(1.5 * 65536)


def test_rtt_from_peer_report():
    sch = make_scheduler()
    sch.on_rtp_sent(160, 0, 0.0)
    wall = 1_700_000_000.0
    sr = parse_compound(sch.build_report(1.0, wall_time=wall))[0]
    block = ReportBlock(0x1111, fraction_lost=12, lsr=ntp_middle32(sr.ntp_timestamp), dlsr=int(0.5 * 65536))
    other = ReportBlock(0x9999, lsr=1, dlsr=1)  # about someone else: ignored
    sch.on_rtcp([RtcpReceiverReport(0x2222, [other, block])], now=1.7, wall_time=wall + 0.7)
    assert sch.rtt == pytest.approx(0.2, abs=1e-4)
    assert sch.remote_report == block


def test_bye_build_and_receive():
    sch = make_scheduler()
    sch.start(0.0)
    sch.on_rtp_received(0x2222, 0, 0, 0.0)
    sch.on_rtp_received(0x2222, 1, 160, 0.02)
    packets = parse_compound(sch.build_bye(1.0, reason="hangup"))
    assert isinstance(packets[-1], RtcpBye)
    assert packets[-1].ssrcs == [0x1111] and packets[-1].reason == b"hangup"
    assert sch.next_due is None
    assert sch.on_rtcp([RtcpBye([0x2222])], now=2.0) == [0x2222]
    assert 0x2222 not in sch.sources
