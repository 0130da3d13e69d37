"""A disk cache of synthesised prompts, plus their PCM at call rates in memory.

IVR prompts are a small fixed set said thousands of times: synthesise each
once into ``<directory>/<key>.wav`` and reuse it across restarts. The key
hashes what changes the audio (text, engine and voice, speed), so editing a
prompt's text or voice makes a new file instead of replaying a stale one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from callbridge.media.wavfile import WavWriter, read_wav
from callbridge.offload import run_files, run_speech

from .audio import to_int16
from .rate import check_rate
from .tts import Synthesizer, synthesizer_for

# Bump when post-processing changes (level, trimming) so old files are not reused.
CACHE_FORMAT = 1
DEFAULT_MEMORY_ENTRIES = 256  # a few minutes of 8 kHz prompts: tens of MB at most

SynthesizerFactory = Callable[[str, str | None], Synthesizer]
Progress = Callable[[int, int, "PromptSpec"], None]


@dataclass(frozen=True)
class PromptSpec:
    text: str
    language: str = "en"
    voice: str | None = None
    rate: float = 1.0


class PromptCache:
    def __init__(self, directory: Path, *, synthesizer_factory: SynthesizerFactory = synthesizer_for,
                 memory_entries: int = DEFAULT_MEMORY_ENTRIES) -> None:
        self.directory = Path(directory)
        self._synthesizer_for = synthesizer_factory
        self._memory_entries = memory_entries
        self._memory: OrderedDict[tuple[PromptSpec, int], np.ndarray] = OrderedDict()
        self._memory_lock = threading.Lock()
        # one lock per file so two callers wanting the same missing prompt synthesise it once
        self._render_locks: dict[Path, threading.Lock] = {}
        self._render_locks_guard = threading.Lock()

    def _synthesizer(self, spec: PromptSpec) -> Synthesizer:
        return self._synthesizer_for(spec.language, spec.voice)

    def path_for(self, spec: PromptSpec) -> Path:
        key = json.dumps([CACHE_FORMAT, spec.text, self._synthesizer(spec).name, repr(check_rate(spec.rate))])
        return self.directory / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()}.wav"

    def render(self, spec: PromptSpec) -> Path:
        """The prompt's WAV file, synthesised now if it is not on disk yet."""
        path = self.path_for(spec)
        if path.exists():
            return path
        with self._render_lock(path):
            if not path.exists():
                synthesizer = self._synthesizer(spec)
                pcm = synthesizer.synthesize(spec.text, rate=spec.rate)
                _write_atomically(path, pcm, synthesizer.sample_rate)
        return path

    def _render_lock(self, path: Path) -> threading.Lock:
        with self._render_locks_guard:
            return self._render_locks.setdefault(path, threading.Lock())

    def pcm(self, spec: PromptSpec, sample_rate: int) -> np.ndarray:
        """int16 audio at ``sample_rate``, read-only (it is shared between calls)."""
        key = (spec, sample_rate)
        with self._memory_lock:
            cached = self._memory.get(key)
            if cached is not None:
                self._memory.move_to_end(key)
                return cached
        pcm, _ = read_wav(self.render(spec), target_rate=sample_rate)
        pcm.setflags(write=False)
        with self._memory_lock:
            self._memory[key] = pcm
            self._memory.move_to_end(key)
            while len(self._memory) > self._memory_entries:
                self._memory.popitem(last=False)
        return pcm

    def cached_pcm(self, spec: PromptSpec, sample_rate: int) -> np.ndarray | None:
        """The in-memory PCM if present, without touching disk or the synthesizer."""
        with self._memory_lock:
            return self._memory.get((spec, sample_rate))

    async def pcm_async(self, spec: PromptSpec, sample_rate: int) -> np.ndarray:
        cached = self.cached_pcm(spec, sample_rate)
        if cached is not None:
            return cached
        # Reading a rendered prompt is file work, synthesising one speech work: a prompt
        # already on disk must not wait behind the calls' transcriptions.
        pcm = await run_files(self._pcm_if_rendered, spec, sample_rate)
        if pcm is None:
            await run_speech(self.render, spec)
            pcm = await run_files(self.pcm, spec, sample_rate)
        return pcm

    def _pcm_if_rendered(self, spec: PromptSpec, sample_rate: int) -> np.ndarray | None:
        return self.pcm(spec, sample_rate) if self.path_for(spec).exists() else None

    async def render_all(self, specs: Iterable[PromptSpec], progress: Progress | None = None) -> None:
        """Render every missing prompt off the event loop, reporting each one done.

        Duplicates count once; prompts already on disk are reported without
        synthesis. The first failure propagates, leaving later prompts for
        the next call (or for :meth:`render` on first use).
        """
        unique = list(dict.fromkeys(specs))
        for done, spec in enumerate(unique, start=1):
            await run_speech(self.render, spec)
            if progress is not None:
                progress(done, len(unique), spec)


def _write_atomically(path: Path, pcm: np.ndarray, sample_rate: int) -> None:
    """Write to a temporary name and rename: readers see the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(fd)
    try:
        with WavWriter(tmp_name, sample_rate, 1) as writer:
            writer.write(to_int16(pcm))
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
