"""Offline speech: text-to-speech, a prompt cache, speech-to-text and endpointing.

Everything here runs on weights shipped inside installed packages (piper's
joe voice, whisper-base split over two packages, silero VAD) or on the
espeak-ng program; nothing is fetched at run time. Heavy engines are
imported and loaded on first use, so importing this package stays cheap.

Layer rule: this package may use :mod:`callbridge.media`, never the call,
IVR, agent or app layers.
"""

from __future__ import annotations

from .prompts import PromptCache, PromptSpec
from .stt import Transcriber
from .tts import (
    Synthesizer,
    UnsupportedLanguage,
    UnsupportedVoice,
    supported_languages,
    synthesize_stream,
    synthesizer_for,
)
from .utterance import UtteranceDetector

__all__ = [
    "PromptCache",
    "PromptSpec",
    "Synthesizer",
    "Transcriber",
    "UnsupportedLanguage",
    "UnsupportedVoice",
    "UtteranceDetector",
    "supported_languages",
    "synthesize_stream",
    "synthesizer_for",
]
