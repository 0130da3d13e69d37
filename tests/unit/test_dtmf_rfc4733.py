"""RFC 4733 telephone-event receiver and sender, driven by hand-built payloads."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.media.dtmf.rfc4733 import (
    END_PACKET_REPEATS,
    DtmfDigit,
    Rfc4733Receiver,
    TelephoneEvent,
    dial_string_packets,
    digit_packets,
    plan_dial_string,
)


def payload(event: int, duration: int, end: bool = False, volume: int = 10) -> bytes:
    # RFC 4733 §2.3: event(8) | E(1) R(1) volume(6) | duration(16), network order
    return struct.pack("!BBH", event, (0x80 if end else 0) | volume, duration)


def press(event: int, ts: int, durations=(160, 320, 480, 640), final: int = 800, marker: bool = True):
    """Packets (timestamp, marker, payload) of one well-behaved key press."""
    packets = [(ts, marker and i == 0, payload(event, d)) for i, d in enumerate(durations)]
    packets += [(ts, False, payload(event, final, end=True))] * 3
    return packets


def feed_all(receiver: Rfc4733Receiver, packets) -> list[DtmfDigit]:
    out: list[DtmfDigit] = []
    for ts, marker, body in packets:
        out += receiver.feed(ts, marker, body)
    return out


def test_payload_layout() -> None:
    assert payload(11, 0x1234, end=True, volume=7) == b"\x0b\x87\x12\x34"
    parsed = TelephoneEvent.parse(b"\x0b\x87\x12\x34")
    assert parsed == TelephoneEvent(event=11, end=True, volume=7, duration=0x1234)
    assert parsed.pack() == b"\x0b\x87\x12\x34"
    assert TelephoneEvent.parse(b"\x01\x02\x03") is None  # truncated


def test_reports_once_on_first_packet_by_default() -> None:
    rx = Rfc4733Receiver()
    packets = press(5, 1000)
    first = rx.feed(*packets[0])
    assert [d.digit for d in first] == ["5"]
    assert first[0].timestamp == 1000 and first[0].duration is None
    assert feed_all(rx, packets[1:]) == []  # updates and the 3 end packets: nothing new


def test_end_mode_reports_once_with_duration() -> None:
    rx = Rfc4733Receiver(report="end")
    out = feed_all(rx, press(9, 5000))
    assert len(out) == 1
    digit = out[0]
    assert (digit.digit, digit.timestamp, digit.duration, digit.volume) == ("9", 5000, 800, 10)
    assert digit.duration_ms == pytest.approx(100.0)


@pytest.mark.parametrize("mode", ["start", "end"])
def test_triple_end_and_retransmits_reported_once(mode: str) -> None:
    rx = Rfc4733Receiver(report=mode)
    packets = press(1, 2000)
    # network duplicates every packet and re-sends an update late
    noisy = [p for p in packets for _ in range(2)] + [packets[1], packets[-1]]
    assert [d.digit for d in feed_all(rx, noisy)] == ["1"]


@pytest.mark.parametrize("mode", ["start", "end"])
def test_start_without_marker_is_accepted(mode: str) -> None:
    # first packet lost (or sender never sets M): the digit must still count
    rx = Rfc4733Receiver(report=mode)
    out = feed_all(rx, press(3, 7000, marker=False)[2:])
    assert [d.digit for d in out] == ["3"]
    assert out[0].timestamp == 7000


def test_only_end_packets_arrive_start_mode_gives_duration() -> None:
    rx = Rfc4733Receiver(report="start")
    out = feed_all(rx, press(4, 100)[-3:])
    assert [(d.digit, d.duration) for d in out] == [("4", 800)]


@pytest.mark.parametrize("mode", ["start", "end"])
def test_sequence_of_digits(mode: str) -> None:
    rx = Rfc4733Receiver(report=mode)
    packets = []
    for i, code in enumerate([1, 2, 3, 11]):  # "123#"
        packets += press(code, 10_000 + i * 1600)
    out = feed_all(rx, packets)
    assert "".join(d.digit for d in out) == "123#"
    assert [d.timestamp for d in out] == [10_000, 11_600, 13_200, 14_800]


def test_same_digit_twice_is_two_presses() -> None:
    rx = Rfc4733Receiver()
    out = feed_all(rx, press(7, 0) + press(7, 1600))
    assert [d.digit for d in out] == ["7", "7"]


def test_late_packet_of_previous_event_is_ignored() -> None:
    rx = Rfc4733Receiver()
    first, second = press(2, 0), press(8, 1600)
    out = feed_all(rx, first + second[:2] + [first[-1], first[1]] + second[2:])
    assert [d.digit for d in out] == ["2", "8"]


def test_lost_end_packets_end_mode_reports_at_next_event_or_flush() -> None:
    rx = Rfc4733Receiver(report="end")
    no_end = press(6, 0)[:4]
    out = feed_all(rx, no_end)
    assert out == []
    out = feed_all(rx, press(0, 1600))
    assert [(d.digit, d.duration) for d in out] == [("6", 640), ("0", 800)]
    assert feed_all(rx, press(5, 3200)[:2]) == []
    assert [(d.digit, d.duration) for d in rx.flush()] == [("5", 320)]
    assert rx.flush() == []


def test_non_dtmf_events_ignored() -> None:
    rx = Rfc4733Receiver()
    assert feed_all(rx, press(16, 0)) == []  # flash
    assert feed_all(rx, press(70, 1600)) == []  # a tone event
    assert [d.digit for d in feed_all(rx, press(15, 3200))] == ["D"]


def test_long_event_segments_are_one_digit() -> None:
    # §2.5.1.3: past 0xFFFF the sender starts a new segment with a new timestamp
    rx = Rfc4733Receiver(report="end")
    seg1 = [(0, True, payload(2, d)) for d in range(160, 0xFFFF, 160)] + [(0, False, payload(2, 0xFFFF))]
    seg2 = [(0xFFFF, False, payload(2, d)) for d in (160, 320, 480)]
    seg2 += [(0xFFFF, False, payload(2, 480, end=True))] * 3
    out = feed_all(rx, seg1 + seg2)
    assert [(d.digit, d.timestamp, d.duration) for d in out] == [("2", 0, 0xFFFF + 480)]


def test_timestamp_wraparound() -> None:
    rx = Rfc4733Receiver()
    out = feed_all(rx, press(1, 0xFFFF_FF00) + press(2, 0x0000_0540))
    assert [d.digit for d in out] == ["1", "2"]


# ------------------------------------------------------------------ sender


def decode(packets):
    return [(p.timestamp, p.marker, TelephoneEvent.parse(p.payload), p.send_offset) for p in packets]


def test_sender_default_press() -> None:
    packets = decode(digit_packets("#", start_timestamp=4000))
    assert [p[2].duration for p in packets] == [160, 320, 480, 640, 800, 800, 800]
    assert [p[1] for p in packets] == [True] + [False] * 6  # marker only on the first
    assert all(p[0] == 4000 for p in packets)  # timestamp fixed at the event start
    assert all(p[2].event == 11 and p[2].volume == 10 for p in packets)
    ends = [p for p in packets if p[2].end]
    assert len(ends) == END_PACKET_REPEATS == 3
    assert len({p[2].duration for p in ends}) == 1
    assert [p[3] for p in packets] == [160, 320, 480, 640, 800, 960, 1120]


def test_sender_durations_clock_rate_and_minimum() -> None:
    packets = decode(digit_packets("A", 0, clock_rate=16000, duration_ms=70))
    # 70 ms at 16 kHz = 1120, last update not a multiple of the 20 ms step
    assert [p[2].duration for p in packets] == [320, 640, 960, 1120, 1120, 1120]
    assert packets[-1][2].end and not packets[-4][2].end
    with pytest.raises(ValueError):
        digit_packets("1", 0, duration_ms=30)
    with pytest.raises(ValueError):
        digit_packets("x", 0)


def test_sender_long_event_segments() -> None:
    packets = decode(digit_packets("0", 100, duration_ms=9000))  # 72000 > 0xFFFF units
    timestamps = sorted({p[0] for p in packets})
    assert timestamps == [100, 100 + 0xFFFF]
    assert sum(p[1] for p in packets) == 1
    assert packets[-1][2].end and packets[-1][2].duration == 72000 - 0xFFFF


def test_sender_round_trip_through_receiver() -> None:
    rx = Rfc4733Receiver(report="end")
    out = []
    for p in dial_string_packets("12w34#", start_timestamp=123_456):
        out += rx.feed(p.timestamp, p.marker, p.payload)
    assert "".join(d.digit for d in out) == "1234#"
    assert all(d.duration == 800 for d in out)
    offsets = [d.timestamp - 123_456 for d in out]
    assert offsets == [0, 1600, 7200, 8800, 10400]  # 'w' adds 0.5 s = 4000 units


def test_plan_dial_string() -> None:
    schedule = plan_dial_string("12w34#")
    assert [d for _, d in schedule] == ["1", "2", "3", "4", "#"]
    assert [t for t, _ in schedule] == pytest.approx([0.0, 0.2, 0.9, 1.1, 1.3])
    spaced = plan_dial_string("1-2 3", duration_ms=60, gap_ms=60)
    assert [d for _, d in spaced] == ["1", "2", "3"]
    assert [t for t, _ in spaced] == pytest.approx([0.0, 0.12, 0.24])
    assert plan_dial_string("ww1")[0][0] == pytest.approx(1.0)
    assert plan_dial_string("*a")[1][1] == "A"
    with pytest.raises(ValueError):
        plan_dial_string("12e")
    with pytest.raises(ValueError):
        plan_dial_string("1", gap_ms=10)


# ------------------------------------------------------------------ property: lossy networks


@st.composite
def lossy_dial(draw):
    """A dial string's packets with per-event loss, duplication and shuffling."""
    dial = draw(st.text(alphabet="0123456789*#ABCD", min_size=1, max_size=6))
    start = draw(st.integers(0, 2**32 - 1))
    packets = dial_string_packets(dial, start, duration_ms=draw(st.sampled_from([40, 60, 100, 250])))
    events: dict[int, list] = {}
    for p in packets:
        events.setdefault(p.timestamp, []).append((p.timestamp, p.marker, p.payload))
    delivered = []
    for group in events.values():
        keep = draw(st.lists(st.booleans(), min_size=len(group), max_size=len(group)))
        survivors = [p for p, k in zip(group, keep, strict=True) if k] or [group[draw(st.integers(0, len(group) - 1))]]
        survivors += draw(st.lists(st.sampled_from(survivors), max_size=3))  # duplicates
        delivered += draw(st.permutations(survivors))
    return dial, delivered


@settings(max_examples=150, deadline=None)
@given(lossy_dial(), st.sampled_from(["start", "end"]))
def test_each_press_reported_exactly_once_despite_loss(case, mode) -> None:
    dial, packets = case
    rx = Rfc4733Receiver(report=mode)
    out = feed_all(rx, packets) + rx.flush()
    assert "".join(d.digit for d in out) == dial


def test_a_new_ssrc_starts_a_new_timestamp_space():
    """SIPp sends each play_dtmf from a new SSRC with the same timestamp: two presses, not one."""
    from callbridge.media.dtmf.rfc4733 import Rfc4733Receiver, TelephoneEvent

    receiver = Rfc4733Receiver()
    digits = []
    for ssrc in (0x01020305, 0x01020306):
        for duration, end, marker in ((160, False, True), (800, False, False),
                                      (1600, True, False), (1600, True, False)):
            payload = TelephoneEvent(event=1, end=end, volume=10, duration=duration).pack()
            digits += receiver.feed(24400, marker, payload, ssrc)
    assert [d.digit for d in digits] == ["1", "1"]
    # The same SSRC repeating its packets is still one press.
    again = receiver.feed(24400, False, TelephoneEvent(event=1, end=True, volume=10, duration=1600).pack(), 0x01020306)
    assert again == []
