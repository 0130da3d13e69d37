"""Things a call can play: a source returns PCM on ``read(samples)`` and None when done.

All sources produce int16 mono at the stream's sample rate; conversion
happens once, when a source is made, never per tick.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Protocol

import numpy as np

from .codecs.base import PcmArray, as_pcm
from .framecache import NOT_A_FRAME, FramePayloads
from .resample import StreamResampler, resample


class Source(Protocol):
    def read(self, samples: int) -> PcmArray | None: ...


class EncodedSource(Source, Protocol):
    """A source over a shared buffer: what it last read can come pre-encoded (:mod:`.framecache`)."""

    def encoded(self, payloads: FramePayloads) -> bytes | None:
        """The payload of what the last :meth:`read` returned, or None to encode it as usual."""
        ...


class PcmSource:
    """A finite buffer: a prompt, a loaded WAV, a synthesised sentence."""

    def __init__(self, pcm: PcmArray, sample_rate: int, *, label: str = "pcm") -> None:
        self.pcm = as_pcm(pcm)
        self.sample_rate = sample_rate
        self.label = label
        self.position = 0
        self._last_start = NOT_A_FRAME

    @property
    def total_samples(self) -> int:
        return len(self.pcm)

    def read(self, samples: int) -> PcmArray | None:
        start = self.position
        if start >= len(self.pcm):
            return None
        self._last_start = start
        self.position = start + samples
        return self.pcm[start:start + samples]

    def encoded(self, payloads: FramePayloads) -> bytes | None:
        return payloads.payload(self.pcm, self._last_start)


def pcm_source(pcm: PcmArray, from_rate: int, to_rate: int, *, label: str = "pcm") -> PcmSource:
    """A buffer at any common rate, converted once to the stream's rate."""
    return PcmSource(resample(as_pcm(pcm), from_rate, to_rate) if from_rate != to_rate else pcm, to_rate, label=label)


def wav_source(path: str | Path, sample_rate: int) -> PcmSource:
    """A WAV file of any common encoding, rate and channel count (see :mod:`.wavfile`)."""
    from .wavfile import read_wav  # local: keeps module import light for the SIP-only tools

    pcm, rate = read_wav(path, target_rate=sample_rate)
    return PcmSource(pcm, rate, label=Path(path).name)


async def load_wav_source(path: str | Path, sample_rate: int) -> PcmSource:
    """:func:`wav_source` in the files pool: decoding and resampling a long file (music on
    hold can be minutes of audio) on the event loop would stall every call's media."""
    from ..offload import run_files

    return await run_files(wav_source, path, sample_rate)


class LoopSource:
    """Plays a buffer forever (music on hold)."""

    def __init__(self, pcm: PcmArray, sample_rate: int, *, label: str = "loop") -> None:
        if not len(pcm):
            raise ValueError("cannot loop an empty buffer")
        self.pcm = as_pcm(pcm)
        self.sample_rate = sample_rate
        self.label = label
        self._position = 0
        self._last_start = NOT_A_FRAME

    def read(self, samples: int) -> PcmArray:
        pcm, start = self.pcm, self._position
        end = start + samples
        if end <= len(pcm):
            self._position = end % len(pcm)
            self._last_start = start
            return pcm[start:end]
        out = np.resize(np.roll(pcm, -start), samples)  # wraps as many times as needed
        self._position = end % len(pcm)
        self._last_start = NOT_A_FRAME  # the loop's seam: not one frame of the buffer
        return out

    def encoded(self, payloads: FramePayloads) -> bytes | None:
        return payloads.payload(self.pcm, self._last_start)


def take_samples(chunks: deque[PcmArray], count: int) -> PcmArray:
    """Up to ``count`` samples from the front of a queue of chunks (a chunk split if need be)."""
    parts: list[PcmArray] = []
    wanted = count
    while wanted and chunks:
        head = chunks[0]
        if len(head) <= wanted:
            parts.append(chunks.popleft())
            wanted -= len(head)
        else:
            parts.append(head[:wanted])
            chunks[0] = head[wanted:]
            wanted = 0
    if not parts:
        return np.zeros(0, dtype=np.int16)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class PcmStream:
    """Audio that arrives while it plays (TTS, a speech-to-speech model).

    The producer calls :meth:`write` with chunks at its own rate and
    :meth:`end` when done. An underrun plays silence but keeps the stream
    open, so later chunks are not lost; the stream finishes once ended and drained.
    """

    def __init__(self, input_rate: int, sample_rate: int, *, label: str = "stream") -> None:
        self.sample_rate = sample_rate
        self.label = label
        self._resampler = StreamResampler(input_rate, sample_rate)
        self._chunks: deque[PcmArray] = deque()
        self._buffered = 0
        self._ended = False
        self.underruns = 0
        self.samples_written = 0

    @property
    def buffered_samples(self) -> int:
        return self._buffered

    def write(self, pcm: PcmArray) -> None:
        if self._ended:
            raise RuntimeError("write after end()")
        out = self._resampler.process(as_pcm(pcm))
        if len(out):
            self._chunks.append(out)
            self._buffered += len(out)
            self.samples_written += len(out)

    def end(self) -> None:
        if not self._ended:
            tail = self._resampler.flush()
            if len(tail):
                self._chunks.append(tail)
                self._buffered += len(tail)
            self._ended = True

    def read(self, samples: int) -> PcmArray | None:
        if self._buffered == 0:
            if self._ended:
                return None
            self.underruns += 1
            return np.zeros(samples, dtype=np.int16)
        pcm = take_samples(self._chunks, samples)
        self._buffered -= len(pcm)
        return pcm
