"""The outgoing queue: order, marks, barge-in flush, streaming sources."""

from __future__ import annotations

import numpy as np
import pytest

from callbridge.media.playback import PlaybackQueue
from callbridge.media.sources import LoopSource, PcmSource, PcmStream, pcm_source
from callbridge.media.tone import ToneSource, hold_music

TICK = 160


def ramp(n: int, start: int = 1) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int16)


def test_sources_play_in_order_and_the_last_tick_is_padded():
    queue = PlaybackQueue(8000)
    queue.enqueue(PcmSource(ramp(200), 8000))
    queue.enqueue(PcmSource(ramp(100, 1000), 8000))
    first, second, third = queue.read(TICK), queue.read(TICK), queue.read(TICK)
    assert list(first) == list(range(1, 161))
    # The end of one source runs straight into the next one, in the same tick.
    assert list(second[:40]) == list(range(161, 201)) and list(second[40:140]) == list(range(1000, 1100))
    assert not np.any(second[140:])
    assert third is None and queue.idle


def test_marks_fire_when_playback_passes_them():
    seen = []
    queue = PlaybackQueue(8000, on_mark=lambda name, played: seen.append((name, played)))
    queue.enqueue(PcmSource(ramp(320), 8000))
    queue.mark("sentence-1")
    queue.enqueue(PcmSource(ramp(320), 8000))
    queue.mark("sentence-2")
    queue.read(TICK)
    assert seen == []
    queue.read(TICK)
    queue.read(TICK)  # discovers the first source is done: its mark fires before the next audio
    assert seen == [("sentence-1", True)]
    queue.read(TICK)
    queue.read(TICK)
    assert seen == [("sentence-1", True), ("sentence-2", True)]


def test_a_mark_on_an_empty_queue_fires_at_once():
    seen = []
    queue = PlaybackQueue(8000, on_mark=lambda name, played: seen.append((name, played)))
    queue.mark("nothing-before-me")
    assert seen == [("nothing-before-me", True)]


def test_flush_stops_at_once_and_reports_what_the_caller_heard():
    seen = []
    queue = PlaybackQueue(8000, on_mark=lambda name, played: seen.append((name, played)))
    prompt = PcmSource(ramp(8000), 8000, label="long prompt")
    queue.enqueue(prompt)
    queue.mark("end-of-prompt")
    queue.enqueue(PcmSource(ramp(800), 8000))
    queue.read(TICK)
    queue.read(TICK)
    interrupted = queue.flush()
    assert interrupted is not None and interrupted.source is prompt and interrupted.played_samples == 2 * TICK
    assert seen == [("end-of-prompt", False)]
    assert queue.read(TICK) is None  # silence from the very next tick


def test_enqueue_front_plays_before_queued_audio():
    queue = PlaybackQueue(8000)
    queue.enqueue(PcmSource(ramp(TICK, 100), 8000))
    queue.enqueue_front(PcmSource(ramp(TICK, 5000), 8000))
    assert queue.read(TICK)[0] == 5000 and queue.read(TICK)[0] == 100


def test_stream_underrun_plays_silence_and_keeps_later_audio():
    stream = PcmStream(8000, 8000)
    queue = PlaybackQueue(8000)
    queue.enqueue(stream)
    queue.enqueue(PcmSource(ramp(TICK, 7000), 8000))
    stream.write(ramp(100))
    assert list(queue.read(TICK)[:100]) == list(range(1, 101))
    assert not np.any(queue.read(TICK))  # the model is slow: silence, the stream stays current
    assert stream.underruns == 2  # the rest of the first tick, then the whole second one
    stream.write(ramp(TICK, 300))
    stream.end()
    played = np.concatenate([queue.read(TICK) for _ in range(2)])
    assert 300 in played and 7000 in played  # nothing lost, then the next source


def test_stream_resamples_model_audio_to_the_call_rate():
    stream = PcmStream(24000, 8000)
    t = np.arange(24000) / 24000
    stream.write((np.sin(2 * np.pi * 500 * t) * 10000).astype(np.int16))
    stream.end()
    chunks = []
    while (chunk := stream.read(TICK)) is not None:
        chunks.append(chunk)
    out = np.concatenate(chunks)
    assert abs(len(out) - 8000) <= TICK
    spectrum = np.abs(np.fft.rfft(out[1000:7000]))
    assert abs(np.argmax(spectrum) * 8000 / 6000 - 500) < 5


def test_pcm_source_converts_rate_once():
    source = pcm_source(np.zeros(48000, dtype=np.int16), 48000, 8000)
    assert source.total_samples == 8000 and source.sample_rate == 8000


def test_loop_source_wraps_seamlessly():
    loop = LoopSource(ramp(250), 8000)
    out = np.concatenate([loop.read(TICK) for _ in range(5)])
    assert list(out[:500]) == list(range(1, 251)) * 2


def test_loop_source_rejects_empty_audio():
    with pytest.raises(ValueError):
        LoopSource(np.zeros(0, dtype=np.int16), 8000)


def test_hold_music_is_audible_and_quiet():
    music = hold_music(8000).astype(np.float64)
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(music**2)) / 32767)
    assert -30 < rms_dbfs < -18


def test_tone_source_ends_after_its_duration():
    tone = ToneSource((440.0,), 8000, duration=0.04)
    assert len(tone.read(TICK)) == TICK and len(tone.read(TICK)) == TICK
    assert tone.read(TICK) is None
