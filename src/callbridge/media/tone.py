"""Tone sources (sine waves) for the demo line, ring-back and music-on-hold fallbacks."""

from __future__ import annotations

import numpy as np

from .codecs.base import PcmArray

# -10 dBFS: loud enough to hear on a phone, far from clipping after G.711.
DEFAULT_AMPLITUDE = 0.316


class ToneSource:
    """An endless (or ``duration``-long) sum of sines, read 20 ms at a time."""

    def __init__(self, frequencies: tuple[float, ...] = (440.0,), sample_rate: int = 8000,
                 amplitude: float = DEFAULT_AMPLITUDE, duration: float | None = None) -> None:
        self.frequencies = frequencies
        self.sample_rate = sample_rate
        self.amplitude = amplitude
        self._position = 0
        self._end = None if duration is None else int(duration * sample_rate)

    def read(self, samples: int) -> PcmArray | None:
        """The next ``samples`` samples, or None when the tone is over."""
        if self._end is not None and self._position >= self._end:
            return None
        index = np.arange(self._position, self._position + samples)
        self._position += samples
        t = index / self.sample_rate
        wave = sum(np.sin(2 * np.pi * f * t) for f in self.frequencies) / len(self.frequencies)
        pcm = (wave * self.amplitude * 32767).astype(np.int16)
        if self._end is not None and self._position > self._end:
            pcm[self._end - self._position :] = 0
        return pcm
