"""One call's DTMF paths merged: each key press once, with where it came from."""

from __future__ import annotations

import numpy as np

from callbridge.media.codecs import codec_for
from callbridge.media.dtmf import DtmfEvent
from callbridge.media.dtmf.collector import DtmfCollector, inband_wanted
from callbridge.media.dtmf.inband import dtmf_sequence
from callbridge.media.dtmf.rfc4733 import digit_packets

TICK = 160


def collector(inband: bool) -> tuple[DtmfCollector, list[DtmfEvent]]:
    seen: list[DtmfEvent] = []
    return DtmfCollector(sample_rate=8000, inband=inband, on_digit=seen.append), seen


def feed_audio(c: DtmfCollector, audio: np.ndarray, start: float = 0.0) -> None:
    for i in range(len(audio) // TICK):
        c.on_audio(audio[i * TICK:(i + 1) * TICK], start + (i + 1) * 0.02)


def feed_event(c: DtmfCollector, digit: str, timestamp: int, start: float) -> None:
    for packet in digit_packets(digit, timestamp):
        c.on_telephone_event(packet.timestamp, packet.marker, packet.payload, start + packet.send_offset / 8000)


def test_policy_auto_runs_the_detector_only_without_telephone_event():
    assert inband_wanted("auto", telephone_event_negotiated=False)
    assert not inband_wanted("auto", telephone_event_negotiated=True)
    assert inband_wanted("always", telephone_event_negotiated=True)
    assert not inband_wanted("never", telephone_event_negotiated=False)


def test_tones_alone_are_reported_as_inband_with_their_start_time():
    c, seen = collector(inband=True)
    # Through G.711, as a trunk would carry them.
    codec = codec_for("PCMU")()
    audio = codec.decode(codec.encode(np.concatenate([np.zeros(800, np.int16), dtmf_sequence("159#")])))
    feed_audio(c, audio)
    assert [(e.digit, e.source) for e in seen] == [("1", "inband"), ("5", "inband"), ("9", "inband"), ("#", "inband")]
    # The first tone starts at 0.1 s; the event is dated from the tone, not from detection.
    assert abs(seen[0].at - 0.1) < 0.03


def test_rfc4733_and_the_same_tones_count_each_press_once():
    c, seen = collector(inband=True)
    tones = dtmf_sequence("7")
    audio = np.concatenate([np.zeros(800, np.int16), tones, np.zeros(1600, np.int16)])
    # The telephone-event starts as the tone does (0.1 s); the tone is heard ~60 ms later
    # because decoded audio waits in the jitter buffer.
    feed_event(c, "7", 800, start=0.1)
    feed_audio(c, audio, start=0.06)
    assert [(e.digit, e.source) for e in seen] == [("7", "rfc4733")]
    assert not c.inband_active  # the trunk proved it signals out-of-band: detector off


def test_info_and_rfc4733_for_one_press_count_once_but_two_presses_count_twice():
    c, seen = collector(inband=False)
    feed_event(c, "5", 1000, start=1.0)
    c.on_info("5", 1.05)
    feed_event(c, "5", 9000, start=2.0)
    assert [(e.digit, e.source) for e in seen] == [("5", "rfc4733"), ("5", "rfc4733")]


def test_an_event_whose_end_never_came_is_reported_on_close():
    seen: list[DtmfEvent] = []
    c = DtmfCollector(sample_rate=8000, inband=False, on_digit=seen.append)
    c.rfc4733.report = "end"
    first = digit_packets("3", 500)[0]
    c.on_telephone_event(first.timestamp, first.marker, first.payload, 0.0)
    assert seen == []
    c.close(1.0)
    assert [e.digit for e in seen] == ["3"]


def test_speech_like_audio_without_tones_reports_nothing():
    c, seen = collector(inband=True)
    rng = np.random.default_rng(3)
    t = np.arange(8000 * 5) / 8000
    # Voiced harmonics with a wandering pitch plus noise: not dual-tone.
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / 8000
    voice = sum(np.sin(k * phase) / k for k in range(1, 12)) * 6000 + rng.normal(0, 500, len(t))
    feed_audio(c, voice.astype(np.int16))
    assert seen == []
