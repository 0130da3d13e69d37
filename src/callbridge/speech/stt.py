"""Offline speech-to-text with faster-whisper "base" (multilingual, int8).

Audio goes in as a 16 kHz float32 array, never a file path: faster-whisper's
file decoding through PyAV breaks with the PyAV version that installs here,
and a phone gateway holds PCM in memory anyway.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from callbridge.offload import run_speech

from .audio import float32_at
from .whisper_model import Progress, ensure_whisper_base
from .whisper_short import transcribe_short

WHISPER_RATE = 16000
# Callers answer in a few words: beam search beyond 2 costs time and gains
# nothing measurable on such short answers.
DEFAULT_BEAM_SIZE = 2
MIN_AUDIO_S = 0.1  # shorter than this is a click, not a word; whisper would hallucinate
MAX_CPU_THREADS = 2  # the service runs on 2 cores; more threads only contend


class Transcriber:
    """One whisper model shared by every call; transcriptions run one at a time.

    Serialising is deliberate: ctranslate2 already spreads one decode over
    the cores, so concurrent decodes would only slow each other down.
    """

    def __init__(self, model_dir: Path | None = None, *, beam_size: int = DEFAULT_BEAM_SIZE,
                 cpu_threads: int | None = None, progress: Progress | None = None, short_window: bool = True) -> None:
        self._model_dir = model_dir
        self._progress = progress  # hears the model being assembled on first use
        self._beam_size = beam_size
        self._cpu_threads = cpu_threads or min(MAX_CPU_THREADS, os.cpu_count() or 1)
        self._model: Any = None
        self._lock = threading.Lock()
        self.short_window = short_window  # see whisper_short: ~10x faster on short utterances
        self.full_passes = 0  # short-window results rejected as degenerate, for the benchmark

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load now instead of on the first utterance (e.g. at server start)."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> Any:
        if self._model is None:
            from faster_whisper import WhisperModel

            directory = ensure_whisper_base(self._model_dir, self._progress)
            self._model = WhisperModel(
                str(directory),
                device="cpu",
                compute_type="int8",
                cpu_threads=self._cpu_threads,
                local_files_only=True,  # a hub lookup would fail here; never try one
            )
        return self._model

    def transcribe(self, pcm: np.ndarray, sample_rate: int, *, language: str | None = None,
                   hints: list[str] | None = None) -> str:
        """Text of an utterance: int16 or float PCM at any rate.

        ``language`` ("en", "es") skips language detection; ``hints`` are
        words the caller is likely to say (menu options, names) and bias the
        decoder towards their spelling.
        """
        audio = float32_at(pcm, sample_rate, WHISPER_RATE)
        if len(audio) < MIN_AUDIO_S * WHISPER_RATE:
            return ""
        prompt = ", ".join(hints) if hints else None
        language = language.split("-")[0].lower() if language else None
        with self._lock:
            model = self._load_locked()
            if language is not None and self.short_window:
                text = transcribe_short(model, audio, language=language, prompt=prompt, beam_size=self._beam_size)
                if text is not None:
                    return text
                self.full_passes += 1
            segments, _info = model.transcribe(
                audio,
                language=language,
                beam_size=self._beam_size,
                initial_prompt=prompt,
                condition_on_previous_text=False,  # one short utterance: no context to carry
                without_timestamps=True,
                vad_filter=False,  # the caller already cut the utterance out
            )
            # segments is lazy: decoding happens while iterating, so inside the lock
            return " ".join(segment.text.strip() for segment in segments).strip()

    async def transcribe_async(self, pcm: np.ndarray, sample_rate: int, *, language: str | None = None,
                               hints: list[str] | None = None) -> str:
        """:meth:`transcribe` in the speech pool, keeping the event loop free."""
        return await run_speech(self.transcribe, pcm, sample_rate, language=language, hints=hints)
