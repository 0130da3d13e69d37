import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.rtp.jitter import ComfortNoise, Frame, Gap, GapReason, JitterBuffer
from callbridge.rtp.packet import RtpPacket

RATE = 8000
SPF = 160  # 20 ms at 8 kHz
PTIME = 0.02
PHASE = 0.01  # pops are offset half a frame from the sender's clock


def pkt(arrival, seq, ts, payload=None, **kw):
    if payload is None:
        payload = bytes([seq & 0xFF])
    return (arrival, seq & 0xFFFF, ts & 0xFFFFFFFF, payload, kw)


def stream(n, *, seq0=0, ts0=0, t0=0.0, **kw):
    """n packets on a perfect 20 ms cadence."""
    return [pkt(t0 + PTIME * i, seq0 + i, ts0 + SPF * i, **kw) for i in range(n)]


class Sim:
    """Deliver packets at their arrival times and pop once per ptime."""

    def __init__(self, jb, packets):
        self.jb = jb
        self.events = sorted(packets, key=lambda p: p[0])
        self.i = 0
        self.k = 0

    def advance(self, until):
        outs = []
        while (t := PHASE + PTIME * self.k) <= until:
            while self.i < len(self.events) and self.events[self.i][0] <= t:
                arrival, seq, ts, payload, kw = self.events[self.i]
                self.jb.push(seq, ts, payload, arrival, **kw)
                self.i += 1
            outs.append((t, self.jb.pop(t)))
            self.k += 1
        return outs


def run(jb, packets, until):
    return Sim(jb, packets).advance(until)


def body(outs):
    """Outputs up to the last frame: excludes the PLC/silence once the sender stops."""
    last = max(i for i, (_, o) in enumerate(outs) if isinstance(o, Frame))
    return outs[: last + 1]


def seqs(outs):
    return [o.sequence for _, o in outs if isinstance(o, Frame)]


def gaps(outs, reason):
    return sum(1 for _, o in outs if isinstance(o, Gap) and o.reason is reason)


def test_pop_before_anything_is_silence():
    jb = JitterBuffer()
    out = jb.pop(0.0)
    assert isinstance(out, Gap) and out.reason is GapReason.SILENCE and not out.conceal


def test_steady_stream_plays_in_order_after_target_delay():
    jb = JitterBuffer(initial_delay_ms=40)
    outs = run(jb, stream(50), until=1.2)
    assert seqs(outs) == list(range(50))
    first_frame_time = next(t for t, o in outs if isinstance(o, Frame))
    assert first_frame_time == pytest.approx(0.05)  # first pop after 40 ms buffering
    s = jb.stats()
    assert (s.received, s.lost, s.late, s.duplicates, s.expanded, s.shrunk) == (50, 0, 0, 0, 0, 0)
    kinds = [type(o).__name__ if isinstance(o, Frame) else o.reason.name for _, o in outs]
    # Buffering silence, the stream, then PLC for max_conceal_frames when the
    # sender goes quiet (could be loss or DTX), then silence.
    assert kinds == ["SILENCE"] * 2 + ["Frame"] * 50 + ["LOSS"] * 5 + ["SILENCE"] * (len(kinds) - 57)
    assert s.concealed == 5 and s.lost == 0


def test_frame_carries_packet_fields():
    jb = JitterBuffer()
    jb.push(7, 1234, b"abc", 0.0, marker=True)
    out = jb.pop(0.05)
    assert out == Frame(7, 1234, b"abc", True)


def test_push_packet_convenience():
    jb = JitterBuffer()
    assert jb.push_packet(RtpPacket(0, 1, 160, 99, b"x"), 0.0)
    assert jb.pop(0.05) == Frame(1, 160, b"x", False)


def test_reordering_is_undone():
    packets = stream(30)
    packets[10] = pkt(0.215, 10, 1600)  # seq 10 arrives after seq 11
    jb = JitterBuffer()
    outs = run(jb, packets, until=0.8)
    assert seqs(outs) == list(range(30))
    assert jb.lost == 0 and jb.late == 0
    assert gaps(body(outs), GapReason.LOSS) == 0


def test_duplicates_are_dropped_and_counted():
    packets = stream(30) + [pkt(0.105, 5, 800), pkt(0.5, 3, 480)]  # 3 is a dup of a played one
    jb = JitterBuffer()
    outs = run(jb, packets, until=0.8)
    assert seqs(outs) == list(range(30))
    assert jb.duplicates == 2 and jb.late == 0 and jb.lost == 0


def test_loss_is_concealed_and_counted():
    packets = [p for p in stream(40) if p[1] != 20]
    jb = JitterBuffer()
    outs = run(jb, packets, until=1.0)
    assert seqs(outs) == [s for s in range(40) if s != 20]
    assert gaps(body(outs), GapReason.LOSS) == 1
    loss_at = [i for i, (_, o) in enumerate(outs) if isinstance(o, Gap) and o.reason is GapReason.LOSS]
    assert isinstance(outs[loss_at[0] - 1][1], Frame) and outs[loss_at[0] - 1][1].sequence == 19
    assert isinstance(outs[loss_at[0] + 1][1], Frame) and outs[loss_at[0] + 1][1].sequence == 21
    assert jb.lost == 1 and jb.late == 0


def test_late_packet_is_dropped_counted_and_grows_delay():
    packets = stream(60)
    packets[20] = pkt(0.4 + 0.1, 20, 20 * SPF)  # 100 ms late: misses its slot
    jb = JitterBuffer(initial_delay_ms=40)
    sim = Sim(jb, packets)
    outs = sim.advance(0.5)
    assert jb.late == 0 and jb.target_delay_ms < 41
    outs += sim.advance(0.51)
    assert jb.late == 1
    assert jb.target_delay_ms >= 99  # grew at once to cover the spike
    outs += sim.advance(1.6)
    assert seqs(outs) == [s for s in range(60) if s != 20]
    assert jb.lost == 0  # it arrived, just too late
    assert gaps(body(outs), GapReason.LOSS) == 1
    assert jb.expanded >= 1  # the buffer actually built up more delay
    assert jb.target_delay_ms > 60  # and releases it only slowly


def test_sequence_and_timestamp_wrap():
    packets = stream(40, seq0=65520, ts0=(1 << 32) - 10 * SPF)
    jb = JitterBuffer()
    outs = run(jb, packets, until=1.0)
    assert seqs(outs) == [(65520 + i) & 0xFFFF for i in range(40)]
    assert jb.lost == 0 and jb.late == 0 and jb.resyncs == 0


def test_loss_across_sequence_wrap():
    packets = [p for p in stream(40, seq0=65530, ts0=(1 << 32) - 5 * SPF) if p[1] not in (65535, 0, 1)]
    jb = JitterBuffer()
    outs = run(jb, packets, until=1.0)
    assert jb.lost == 3
    assert gaps(body(outs), GapReason.LOSS) == 3


def test_comfort_noise_then_talkspurt():
    cn_level = 40
    packets = stream(10)
    packets.append(pkt(0.2, 10, 10 * SPF, payload=bytes([cn_level, 1, 2]), payload_type=13))
    # Next talkspurt one second later; seq continues, timestamp jumped (DTX).
    packets += stream(10, seq0=11, ts0=10 * SPF + RATE, t0=1.2, marker=False)
    packets[11] = pkt(1.2, 11, 10 * SPF + RATE, marker=True)
    jb = JitterBuffer()
    outs = run(jb, packets, until=1.8)
    assert seqs(outs) == list(range(10)) + list(range(11, 21))
    items = [o for _, o in outs]
    i9 = next(i for i, o in enumerate(items) if isinstance(o, Frame) and o.sequence == 9)
    i11 = next(i for i, o in enumerate(items) if isinstance(o, Frame) and o.sequence == 11)
    between = items[i9 + 1 : i11]
    assert len(between) > 40
    assert all(isinstance(o, ComfortNoise) for o in between)
    assert between[0] == ComfortNoise(cn_level, bytes([cn_level, 1, 2]))
    assert jb.comfort_noise == 1 and jb.lost == 0
    assert gaps(body(outs), GapReason.LOSS) == 0


def test_comfort_noise_level_update():
    packets = stream(5)
    packets.append(pkt(0.1, 5, 5 * SPF, payload=bytes([60]), payload_type=13))
    packets.append(pkt(0.5, 6, 5 * SPF + 3200, payload=bytes([30]), payload_type=13))
    jb = JitterBuffer()
    outs = run(jb, packets, until=0.9)
    levels = [o.level for _, o in outs if isinstance(o, ComfortNoise)]
    assert levels[0] == 60 and levels[-1] == 30
    assert set(levels) == {60, 30}
    assert jb.lost == 0 and jb.concealed == 0  # CN persists: no PLC at all


def test_dtx_without_cn_stops_concealing():
    packets = stream(10)
    packets += stream(10, seq0=10, ts0=10 * SPF + RATE, t0=1.2)
    packets[10] = pkt(1.2, 10, 10 * SPF + RATE, marker=True)
    jb = JitterBuffer(max_conceal_frames=5)
    outs = run(jb, packets, until=1.8)
    assert seqs(outs) == list(range(20))
    assert gaps(body(outs), GapReason.LOSS) == 5  # PLC a little, then silence
    assert gaps(body(outs), GapReason.SILENCE) > 30
    assert jb.lost == 0


def test_marker_packet_ends_concealment_early():
    packets = stream(10)
    # 100 ms of DTX: the talkspurt (marker) arrives while the buffer is still concealing.
    packets += stream(10, seq0=10, ts0=15 * SPF, t0=0.30)
    packets[10] = pkt(0.30, 10, 15 * SPF, marker=True)
    jb = JitterBuffer()
    outs = body(run(jb, packets, until=1.0))
    assert seqs(outs) == list(range(20))
    marker_seen = next(i for i, (t, _) in enumerate(outs) if t > 0.30)
    # Loss concealment only until the marker packet is in the buffer; then
    # silence until it is due, and nothing is counted as lost.
    assert 0 < gaps(outs[:marker_seen], GapReason.LOSS) < 5
    assert gaps(outs[marker_seen:], GapReason.LOSS) == 0
    assert gaps(outs[marker_seen:], GapReason.SILENCE) >= 1
    assert jb.lost == 0


def test_ssrc_change_resyncs():
    packets = [p[:4] + ({"ssrc": 1},) for p in stream(10)]
    packets += [p[:4] + ({"ssrc": 2},) for p in stream(20, seq0=5000, ts0=123456789, t0=0.2)]
    jb = JitterBuffer()
    played = seqs(run(jb, packets, until=1.0))
    old, new = [s for s in played if s < 10], [s for s in played if s >= 5000]
    assert played == old + new
    assert old == list(range(len(old)))  # frames still buffered at the switch are flushed
    assert new == list(range(5000, 5020))
    assert jb.resyncs == 1 and jb.lost == 0 and jb.late == 0


def test_timestamp_jump_resyncs():
    packets = stream(10) + stream(20, seq0=10, ts0=10 * SPF + 50 * RATE, t0=0.2)
    jb = JitterBuffer()
    outs = run(jb, packets, until=1.0)
    assert seqs(outs)[-1] == 29
    assert jb.resyncs == 1 and jb.lost == 0


def test_overflow_drops_oldest():
    jb = JitterBuffer(capacity=10)
    for i in range(15):
        jb.push(i, i * SPF, b"", 0.0)
    assert jb.buffered == 10 and jb.overflow == 5


def test_target_grows_under_jitter_and_shrinks_after():
    rnd = random.Random(42)
    jb = JitterBuffer()
    start_target = jb.target_delay_ms
    noisy = [pkt(PTIME * i + rnd.uniform(0, 0.08), i, i * SPF) for i in range(500)]  # 10 s, 0-80 ms jitter
    calm = stream(1000, seq0=500, ts0=500 * SPF, t0=10.0)  # then 20 s clean
    sim = Sim(jb, noisy + calm)

    sim.advance(5.0)
    assert jb.target_delay_ms > 60 and jb.target_delay_ms > start_target
    assert jb.jitter_ms > 10
    late_before = jb.late
    outs = sim.advance(10.0)
    assert jb.late - late_before <= 3  # once adapted, few packets miss their slot
    assert len(seqs(outs)) >= 240

    outs = sim.advance(30.0)
    assert jb.target_delay_ms < 25
    assert jb.shrunk > 0
    # Real playout delay followed the target down (nominal arrival = ts / rate).
    t, last = next((t, o) for t, o in reversed(outs) if isinstance(o, Frame))
    assert t - last.timestamp / RATE < 0.06
    assert jb.lost == 0  # late ones arrived; they are counted as late, not lost


def test_spike_grows_fast_and_releases_slowly():
    jb = JitterBuffer(initial_delay_ms=20)
    for i in range(50):
        jb.push(i, i * SPF, b"", PTIME * i)
    assert jb.target_delay_ms == pytest.approx(20, abs=1)
    jb.push(50, 50 * SPF, b"", PTIME * 50 + 0.15)  # one packet 150 ms late
    assert jb.target_delay_ms >= 149
    for i in range(51, 101):  # one more clean second
        jb.push(i, i * SPF, b"", PTIME * i)
    assert 80 < jb.target_delay_ms < 149  # still elevated: slow release
    assert jb.target_delay_ms <= 200


def test_target_is_clamped():
    jb = JitterBuffer(min_delay_ms=20, max_delay_ms=200)
    jb.push(0, 0, b"", 0.0)
    jb.push(1, SPF, b"", 0.02 + 0.5)
    assert jb.target_delay_ms == 200


@pytest.mark.parametrize("factor", [0.99, 1.01])
def test_sender_clock_drift_is_absorbed(factor):
    # Sender clock 1% fast (packets every 19.8 ms) or slow (every 20.2 ms).
    packets = [pkt(PTIME * factor * i, i, i * SPF) for i in range(1500)]
    jb = JitterBuffer()
    outs = body(run(jb, packets, until=30 * factor))
    assert jb.late == 0 and jb.lost == 0
    assert gaps(outs, GapReason.LOSS) == 0
    if factor < 1:
        assert 10 <= jb.shrunk <= 20  # ~15 frames too many over 30 s
        assert jb.buffered <= 3
    else:
        assert 10 <= jb.expanded <= 20
        assert gaps(outs, GapReason.EXPAND) == jb.expanded


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["push", "pop"]),
            st.floats(0, 0.2),  # time step
            st.integers(-5, 40),  # seq step
            st.integers(-3, 60),  # ts step in frames
            st.booleans(),  # marker
            st.sampled_from([0, 13]),
            st.sampled_from([1, 1, 1, 2]),
            st.binary(max_size=3),
        ),
        max_size=200,
    )
)
@settings(max_examples=300, deadline=None)
def test_random_operations_never_break_invariants(ops):
    jb = JitterBuffer()
    now, seq, ts = 0.0, 65500, (1 << 32) - 5000
    accepted = frames = 0
    for op, dt, dseq, dts, marker, pt, ssrc, payload in ops:
        now += dt
        if op == "push":
            seq, ts = (seq + dseq) & 0xFFFF, (ts + dts * SPF) & 0xFFFFFFFF
            accepted += jb.push(seq, ts, payload, now, marker=marker, payload_type=pt, ssrc=ssrc)
        else:
            out = jb.pop(now)
            assert isinstance(out, (Frame, ComfortNoise, Gap))
            frames += isinstance(out, Frame)
        s = jb.stats()
        assert 20 <= s.target_delay_ms <= 200
        assert min(s.lost, s.late, s.duplicates, s.concealed, s.buffered) >= 0
        assert s.buffered <= jb.capacity
    assert frames <= accepted
