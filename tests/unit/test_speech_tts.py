"""Offline TTS with the real voices: piper (English) and espeak-ng (others)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from callbridge.speech.audio import PROMPT_PEAK, rms_dbfs
from callbridge.speech.tts import (
    Synthesizer,
    UnsupportedLanguage,
    UnsupportedVoice,
    supported_languages,
    synthesize_stream,
    synthesizer_for,
)
from tests.support.tools import must_have

needs_espeak = must_have(shutil.which("espeak-ng") is not None, "espeak-ng")


def test_english_is_piper_joe_and_sounds():
    voice = synthesizer_for("en")
    assert isinstance(voice, Synthesizer)
    assert voice.name == "piper:joe"
    assert voice.sample_rate == 22050
    pcm = voice.synthesize("Thank you for calling. How can I help you today?")
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert 1.5 < len(pcm) / voice.sample_rate < 6.0
    assert rms_dbfs(pcm) > -30.0  # speech, not near-silence
    assert np.abs(pcm.astype(np.int32)).max() <= PROMPT_PEAK * 32768 + 1


def test_regional_english_reuses_the_same_loaded_voice():
    assert synthesizer_for("en-US") is synthesizer_for("en")
    assert synthesizer_for("EN_gb", "joe") is synthesizer_for("en")


def test_faster_rate_is_shorter():
    voice = synthesizer_for("en")
    text = "Please say the number of your order after the tone."
    # Piper draws phoneme durations at random: one pair of takes can differ by 15 %
    # on their own (a single-pair version of this test failed about one run in 30).
    normal = sum(len(voice.synthesize(text)) for _ in range(5))
    fast = sum(len(voice.synthesize(text, rate=1.5)) for _ in range(5))
    assert fast < 0.85 * normal


def test_empty_text_is_empty_audio():
    assert len(synthesizer_for("en").synthesize("   ")) == 0


def test_out_of_range_rate_is_refused():
    with pytest.raises(ValueError):
        synthesizer_for("en").synthesize("hello", rate=10)


def test_piper_streams_one_chunk_per_sentence():
    chunks = list(synthesize_stream(synthesizer_for("en"), "Hello there. Your order has shipped."))
    assert len(chunks) == 2
    assert all(c.dtype == np.int16 and len(c) for c in chunks)


@needs_espeak
def test_spanish_renders_with_espeak():
    voice = synthesizer_for("es")
    assert voice.name == "espeak-ng:es"
    pcm = voice.synthesize("Gracias por llamar. ¿En qué puedo ayudarle?")
    assert pcm.dtype == np.int16
    assert 1.0 < len(pcm) / voice.sample_rate < 6.0
    assert rms_dbfs(pcm) > -30.0
    # espeak has no sentence streaming: one chunk with the whole text
    assert len(list(synthesize_stream(voice, "Hola. Adiós."))) == 1


@needs_espeak
def test_spanish_regions_map_to_espeak_voices():
    assert synthesizer_for("es-419").name == "espeak-ng:es-419"
    assert synthesizer_for("es-MX").name == "espeak-ng:es-419"  # listed by espeak as an alias
    assert synthesizer_for("es-AR").name == "espeak-ng:es"  # unknown region: the base language
    assert synthesizer_for("es", voice="es-419").name == "espeak-ng:es-419"


@needs_espeak
def test_text_starting_with_a_dash_is_spoken_not_parsed_as_an_option():
    assert len(synthesizer_for("es").synthesize("-h uno dos tres")) > 0


def test_unsupported_language_raises_a_value_error():
    with pytest.raises(UnsupportedLanguage) as caught:
        synthesizer_for("tlh")  # Klingon
    assert isinstance(caught.value, ValueError)
    assert "tlh" in str(caught.value)
    with pytest.raises(UnsupportedLanguage):
        synthesizer_for("")


def test_unknown_or_mismatched_voice_raises():
    with pytest.raises(UnsupportedVoice):
        synthesizer_for("en", voice="no-such-voice")
    with pytest.raises(UnsupportedVoice):
        synthesizer_for("es", voice="joe")  # joe speaks English only


def test_supported_languages():
    languages = supported_languages()
    assert "en" in languages
    if shutil.which("espeak-ng"):
        assert {"es", "es-419", "fr"} <= languages
    assert "tlh" not in languages
