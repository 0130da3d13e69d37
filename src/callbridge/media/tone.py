"""Tone sources (sine waves) for the demo line, ring-back and music-on-hold fallbacks."""

from __future__ import annotations

import functools

import numpy as np

from .codecs.base import PcmArray
from .framecache import NOT_A_FRAME, FramePayloads

# -10 dBFS: loud enough to hear on a phone, far from clipping after G.711.
DEFAULT_AMPLITUDE = 0.316
TONE_TABLES = 32  # distinct tones (frequencies, rate, level) whose one-second tables are kept


class ToneSource:
    """An endless (or ``duration``-long) sum of sines, read 20 ms at a time.

    Whole-hertz tones repeat exactly every second, so one second is computed
    once and then sliced: the demo line plays hundreds of these at a time.
    Tones with the same settings share that second (read-only), and with it
    their encoded frames (:mod:`.framecache`).
    """

    def __init__(self, frequencies: tuple[float, ...] = (440.0,), sample_rate: int = 8000,
                 amplitude: float = DEFAULT_AMPLITUDE, duration: float | None = None) -> None:
        self.frequencies = frequencies
        self.sample_rate = sample_rate
        self.amplitude = amplitude
        self._position = 0
        self._end = None if duration is None else int(duration * sample_rate)
        periodic = all(float(f).is_integer() for f in frequencies)
        self._table = _periodic_table(tuple(frequencies), sample_rate, amplitude) if periodic else None
        self._last_start = NOT_A_FRAME

    def _render(self, start: int, samples: int) -> PcmArray:
        return _render(self.frequencies, self.sample_rate, self.amplitude, start, samples)

    def read(self, samples: int) -> PcmArray | None:
        """The next ``samples`` samples, or None when the tone is over."""
        start = self._position
        if self._end is not None and start >= self._end:
            return None
        self._position = start + samples
        table = self._table
        self._last_start = NOT_A_FRAME
        if table is None:
            pcm = self._render(start, samples)
        else:
            offset = start % len(table)
            pcm = table[offset:offset + samples]
            if len(pcm) < samples:
                pcm = np.concatenate((pcm, table[:samples - len(pcm)]))
            else:
                self._last_start = offset
        if self._end is not None and self._position > self._end:
            pcm = pcm.copy()
            pcm[self._end - self._position:] = 0
            self._last_start = NOT_A_FRAME
        return pcm

    def encoded(self, payloads: FramePayloads) -> bytes | None:
        """The payload of the last read, when it was one whole frame of the shared table."""
        table = self._table
        return None if table is None else payloads.payload(table, self._last_start)


def _render(frequencies: tuple[float, ...], sample_rate: int, amplitude: float, start: int,
            samples: int) -> PcmArray:
    t = np.arange(start, start + samples) / sample_rate
    wave = np.zeros(samples)
    for f in frequencies:
        wave += np.sin(2 * np.pi * f * t)
    return (wave / len(frequencies) * amplitude * 32767).astype(np.int16)


@functools.lru_cache(maxsize=TONE_TABLES)
def _periodic_table(frequencies: tuple[float, ...], sample_rate: int, amplitude: float) -> PcmArray:
    """One second of a whole-hertz tone, read-only: shared by every source playing it."""
    table = _render(frequencies, sample_rate, amplitude, 0, sample_rate)
    table.setflags(write=False)
    return table


# Built-in music on hold: a slow, quiet arpeggio (A major), so a held caller
# knows the line is alive without a file to configure.
HOLD_NOTES_HZ = (440.0, 554.37, 659.25, 880.0, 659.25, 554.37)
HOLD_NOTE_SECONDS = 0.4
HOLD_AMPLITUDE = 0.1  # -20 dBFS: background level
HOLD_FADE_SECONDS = 0.03


@functools.lru_cache(maxsize=4)
def hold_music(sample_rate: int) -> PcmArray:
    """One loop of the built-in hold music at ``sample_rate`` (read-only: every held call shares it)."""
    n = int(HOLD_NOTE_SECONDS * sample_rate)
    t = np.arange(n) / sample_rate
    fade = int(HOLD_FADE_SECONDS * sample_rate)
    envelope = np.ones(n)
    envelope[:fade] = np.linspace(0, 1, fade)
    envelope[-fade:] = np.linspace(1, 0, fade)
    notes = [np.sin(2 * np.pi * f * t) * envelope for f in HOLD_NOTES_HZ]
    music = (np.concatenate(notes) * HOLD_AMPLITUDE * 32767).astype(np.int16)
    music.setflags(write=False)
    return music
