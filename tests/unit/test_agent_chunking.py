"""Caller audio into provider events: small while the model listens, large otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from callbridge.agent.providers.chunking import ONSET_PEAK, CallerAudioChunker

RATE = 16000
FRAME = 320  # 20 ms


def voice(n: int = FRAME) -> np.ndarray:
    return np.full(n, ONSET_PEAK * 4, dtype=np.int16)


def quiet(n: int = FRAME) -> np.ndarray:
    return np.full(n, 5, dtype=np.int16)


def chunker(listen_s: float = 0.2) -> CallerAudioChunker:
    return CallerAudioChunker(RATE, listening_samples=640, quiet_samples=2560, listen_s=listen_s)


def feed_all(c: CallerAudioChunker, frames) -> list[bytes]:
    return [chunk for frame in frames for chunk in c.feed(frame)]


def sizes(chunks: list[bytes]) -> list[int]:
    return [len(chunk) // 2 for chunk in chunks]


def test_a_new_session_listens_in_small_events_then_grows_them_after_the_quiet():
    c = chunker(listen_s=0.2)  # 10 frames
    assert sizes(feed_all(c, [quiet()] * 10)) == [640] * 4 and not c.listening and c.held_samples == 640
    assert sizes(feed_all(c, [quiet()] * 16)) == [2560, 2560] and c.held_samples == 640


def test_the_first_voiced_frame_sends_everything_held_at_once():
    c = chunker()
    feed_all(c, [quiet()] * 23)
    held = c.held_samples
    assert not c.listening and held > 0
    out = c.feed(voice())
    assert sizes(out) == [held + FRAME]
    assert np.frombuffer(out[0], "<i2")[-1] == ONSET_PEAK * 4  # the onset itself is in it


def test_speech_to_a_quiet_agent_goes_in_large_events_and_its_end_at_once():
    c = chunker()
    feed_all(c, [quiet()] * 20)
    c.feed(voice())  # onset, flushed
    assert not c.listening  # the model is not timing anything while the caller talks
    assert sizes(feed_all(c, [voice()] * 9)) == [2560]  # 8 frames make one large event
    assert c.held_samples == FRAME
    # The first quiet frame: the pause is what the model times, so speech is not held.
    assert sizes(c.feed(quiet())) == [640] and c.listening
    assert sizes(feed_all(c, [quiet()] * 2)) == [640]


def test_a_negative_peak_counts_as_voice():
    c = chunker()
    feed_all(c, [quiet()] * 20)
    c.feed(quiet())
    assert c.feed(-voice()) and c.held_samples == 0


def test_the_model_answering_ends_the_listening_and_a_barge_in_is_listened_to_closely():
    c = chunker(listen_s=10)
    feed_all(c, [voice()] * 5)
    c.model_answered()
    assert not c.listening
    assert feed_all(c, [quiet()] * 2) == []  # held for a large event
    assert len(c.feed(voice())) == 1 and c.listening  # barge-in: out at once
    assert sizes(feed_all(c, [voice()] * 4)) == [640, 640]  # and small while it goes on
    c.model_finished()
    assert not c.listening  # the agent stopped: the caller's speech is not timed any more


def test_a_level_hovering_at_the_threshold_makes_no_more_events_than_small_ones():
    c = chunker(listen_s=10)
    frames = [voice() if i % 2 else quiet() for i in range(200)]
    out = feed_all(c, frames)
    assert all(size % 640 == 0 for size in sizes(out))
    assert len(out) <= 200 * FRAME // 640


def test_every_sample_comes_out_once_in_order():
    rng = np.random.default_rng(7)
    c = chunker(listen_s=0.1)
    frames = [voice() if rng.random() < 0.2 else quiet() for _ in range(300)]
    frames = [frame + np.int16(i % 3) for i, frame in enumerate(frames)]
    out = feed_all(c, frames) + c.flush()
    assert b"".join(out) == np.concatenate(frames).astype("<i2").tobytes()
    assert c.flush() == [] and c.held_samples == 0


def test_sizes_are_checked():
    with pytest.raises(ValueError):
        CallerAudioChunker(RATE, listening_samples=0, quiet_samples=100)
    with pytest.raises(ValueError):
        CallerAudioChunker(RATE, listening_samples=200, quiet_samples=100)
