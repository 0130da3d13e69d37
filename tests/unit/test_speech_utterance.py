"""Endpointing on telephone audio: real piper speech, µ-law, line noise."""

from __future__ import annotations

import numpy as np
import pytest

from callbridge.media.codecs import PcmuCodec
from callbridge.media.resample import resample
from callbridge.speech.tts import synthesizer_for
from callbridge.speech.utterance import PRE_ROLL_MS, TAIL_MS, UtteranceDetector

RATE = 8000
FRAME = 160  # 20 ms, as RTP delivers it


def noise(seconds: float, dbfs: float, seed: int = 7, rate: int = RATE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal(int(seconds * rate)) * 32768 * 10 ** (dbfs / 20), -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def answer() -> np.ndarray:
    """A caller's answer as it arrives over PCMU, with the leading/trailing quiet trimmed."""
    voice = synthesizer_for("en")
    codec = PcmuCodec()
    pcm = codec.decode(codec.encode(resample(voice.synthesize("Yes, I would like to talk to an agent."),
                                             voice.sample_rate, RATE)))
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)
    return pcm[loud[0]:loud[-1] + 1]


def feed_frames(detector: UtteranceDetector, audio: np.ndarray, frame: int = FRAME) -> list[tuple[float, np.ndarray]]:
    """Feed 20 ms frames; return (time of the frame that completed it, utterance) pairs."""
    found = []
    for start in range(0, len(audio), frame):
        utterance = detector.feed(audio[start:start + frame])
        if utterance is not None:
            found.append(((start + frame) / detector.sample_rate, utterance))
    return found


def test_silence_gives_nothing():
    detector = UtteranceDetector(RATE)
    assert feed_frames(detector, np.zeros(5 * RATE, dtype=np.int16)) == []
    assert not detector.speaking
    assert detector.finish() is None


@pytest.mark.parametrize("dbfs", [-65.0, -45.0])
def test_line_noise_does_not_trigger(dbfs: float):
    detector = UtteranceDetector(RATE)
    assert feed_frames(detector, noise(6.0, dbfs)) == []
    assert not detector.speaking


def test_speech_then_silence_gives_the_utterance(answer: np.ndarray):
    detector = UtteranceDetector(RATE, silence_ms=700)
    lead, trail = 1.0, 2.0
    bed = noise(lead + len(answer) / RATE + trail, -65.0)
    audio = bed.copy()
    at = int(lead * RATE)
    audio[at:at + len(answer)] += answer
    saw_speaking = False
    found = []
    for start in range(0, len(audio), FRAME):
        utterance = detector.feed(audio[start:start + FRAME])
        saw_speaking |= detector.speaking
        if utterance is not None:
            found.append(((start + FRAME) / RATE, utterance))
    assert saw_speaking
    assert len(found) == 1
    when, utterance = found[0]
    speech_end = lead + len(answer) / RATE
    assert speech_end + 0.6 <= when <= speech_end + 1.0  # ~silence_ms after the last word
    seconds = len(utterance) / RATE
    assert len(answer) / RATE - 0.1 <= seconds <= len(answer) / RATE + (PRE_ROLL_MS + TAIL_MS) / 1000 + 0.1
    assert utterance.dtype == np.int16
    assert not detector.speaking


def test_two_answers_come_out_one_per_feed(answer: np.ndarray):
    detector = UtteranceDetector(RATE)
    gap = np.zeros(RATE, dtype=np.int16)
    audio = np.concatenate([answer, gap, answer, gap])
    first = detector.feed(audio)  # everything in one call
    second = detector.feed(np.zeros(0, dtype=np.int16))
    assert first is not None and second is not None
    assert detector.feed(np.zeros(FRAME, dtype=np.int16)) is None


@pytest.mark.parametrize("rate", [16000, 22050])
def test_other_rates(answer: np.ndarray, rate: int):
    detector = UtteranceDetector(rate)
    audio = resample(np.concatenate([np.zeros(RATE // 2, dtype=np.int16), answer, np.zeros(RATE, dtype=np.int16)]),
                     RATE, rate)
    found = feed_frames(detector, audio, frame=rate // 50)
    assert len(found) == 1
    assert len(found[0][1]) / rate == pytest.approx(len(answer) / RATE, abs=0.6)


def test_a_short_blip_is_not_an_answer(answer: np.ndarray):
    blip = np.concatenate([np.zeros(RATE // 2, dtype=np.int16), answer[:int(0.15 * RATE)],
                           np.zeros(2 * RATE, dtype=np.int16)])
    assert len(feed_frames(UtteranceDetector(RATE, min_speech_ms=50), blip)) == 1  # the VAD does hear it
    assert feed_frames(UtteranceDetector(RATE, min_speech_ms=400), blip) == []


def test_long_talk_is_cut_at_max_length(answer: np.ndarray):
    detector = UtteranceDetector(RATE, max_utterance_s=1.0)
    found = feed_frames(detector, answer)
    assert found
    assert len(found[0][1]) / RATE <= 1.0 + PRE_ROLL_MS / 1000 + 0.05


def test_finish_returns_the_answer_in_progress(answer: np.ndarray):
    detector = UtteranceDetector(RATE)
    assert feed_frames(detector, answer) == []  # no trailing silence yet
    assert detector.speaking
    utterance = detector.finish()
    assert utterance is not None and len(utterance) >= len(answer) * 0.9
    detector.reset()
    assert not detector.speaking and detector.finish() is None
