"""DtmfMerger: one key press reported once across RFC 4733, SIP INFO and in-band."""

from __future__ import annotations

import numpy as np
import pytest

from callbridge.media.dtmf import DtmfEvent, DtmfMerger, InbandDtmfDetector, Rfc4733Receiver
from callbridge.media.dtmf.inband import dtmf_tone
from callbridge.media.dtmf.rfc4733 import digit_packets


def emitted(merger: DtmfMerger, events: list[DtmfEvent]) -> list[tuple[str, str]]:
    out = []
    for event in events:
        accepted = merger.push(event)
        if accepted is not None:
            out.append((accepted.digit, accepted.source))
    return out


def test_event_validation_and_normalisation() -> None:
    assert DtmfEvent("a", "info", 0.0).digit == "A"
    with pytest.raises(ValueError):
        DtmfEvent("x", "info", 0.0)
    with pytest.raises(ValueError):
        DtmfEvent("1", "carrier-pigeon", 0.0)  # type: ignore[arg-type]


def test_rfc4733_plus_inband_same_press_reported_once() -> None:
    merger = DtmfMerger(prefer_rfc4733=False)
    events = [
        DtmfEvent("5", "rfc4733", 1.000),
        DtmfEvent("5", "inband", 1.045),  # detector lags the start packet
        DtmfEvent("7", "rfc4733", 1.300),
        DtmfEvent("7", "inband", 1.340),
    ]
    assert emitted(merger, events) == [("5", "rfc4733"), ("7", "rfc4733")]


def test_inband_first_then_rfc4733() -> None:
    merger = DtmfMerger()
    assert emitted(merger, [DtmfEvent("9", "inband", 2.00), DtmfEvent("9", "rfc4733", 2.03)]) == [("9", "inband")]


def test_info_duplicate_within_window_only() -> None:
    merger = DtmfMerger(window_s=0.2)
    events = [
        DtmfEvent("1", "rfc4733", 0.0),
        DtmfEvent("1", "info", 0.15),  # same press, signalled twice
        DtmfEvent("1", "info", 0.9),  # a later, real press
    ]
    assert emitted(merger, events) == [("1", "rfc4733"), ("1", "info")]


def test_same_source_never_merged() -> None:
    merger = DtmfMerger()
    events = [DtmfEvent("4", "rfc4733", 0.0), DtmfEvent("4", "rfc4733", 0.12)]
    assert emitted(merger, events) == [("4", "rfc4733"), ("4", "rfc4733")]


def test_one_press_does_not_absorb_two_from_another_source() -> None:
    merger = DtmfMerger(prefer_rfc4733=False)
    events = [
        DtmfEvent("2", "inband", 0.00),
        DtmfEvent("2", "rfc4733", 0.02),  # duplicate of the first press
        DtmfEvent("2", "rfc4733", 0.15),  # second, fast press: the inband one is already matched
    ]
    assert emitted(merger, events) == [("2", "inband"), ("2", "rfc4733")]


def test_different_digits_are_not_duplicates() -> None:
    merger = DtmfMerger(prefer_rfc4733=False)
    events = [DtmfEvent("1", "rfc4733", 0.0), DtmfEvent("2", "inband", 0.01), DtmfEvent("3", "info", 0.02)]
    assert [d for d, _ in emitted(merger, events)] == ["1", "2", "3"]


def test_inband_disabled_after_rfc4733_seen() -> None:
    merger = DtmfMerger()
    assert merger.inband_enabled
    assert emitted(merger, [DtmfEvent("3", "inband", 0.0)]) == [("3", "inband")]
    assert merger.inband_enabled  # in-band alone proves nothing
    emitted(merger, [DtmfEvent("6", "rfc4733", 1.0)])
    assert merger.rfc4733_seen and not merger.inband_enabled
    # a stray tone detection much later (e.g. talk-off or echo) is dropped
    assert emitted(merger, [DtmfEvent("8", "inband", 5.0)]) == []
    # INFO stays live
    assert emitted(merger, [DtmfEvent("8", "info", 6.0)]) == [("8", "info")]


def test_policy_can_keep_inband() -> None:
    merger = DtmfMerger(prefer_rfc4733=False)
    emitted(merger, [DtmfEvent("6", "rfc4733", 1.0)])
    assert merger.inband_enabled
    assert emitted(merger, [DtmfEvent("8", "inband", 5.0)]) == [("8", "inband")]


def test_end_to_end_trunk_sending_both() -> None:
    """A trunk sends "1#" as RFC 4733 packets and leaves the tones in the audio."""
    rate, clock = 8000, 8000
    rx = Rfc4733Receiver(clock_rate=clock)
    detector = InbandDtmfDetector(rate)
    merger = DtmfMerger(prefer_rfc4733=False)
    audio = np.zeros(rate, dtype=np.int16)
    events: list[DtmfEvent] = []
    for start_s, digit in ((0.1, "1"), (0.4, "#")):
        start = int(start_s * rate)
        audio[start : start + 800] = dtmf_tone(digit, 0.1, rate)
        for packet in digit_packets(digit, start, clock):
            for d in rx.feed(packet.timestamp, packet.marker, packet.payload):
                events.append(DtmfEvent(d.digit, "rfc4733", d.timestamp / clock))
    for start in range(0, audio.size, 160):
        for d in detector.feed(audio[start : start + 160]):
            events.append(DtmfEvent(d.digit, "inband", d.sample_offset / rate))
    events.sort(key=lambda e: e.at)
    assert len(events) == 4
    assert emitted(merger, events) == [("1", "rfc4733"), ("#", "rfc4733")]
