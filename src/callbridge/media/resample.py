"""Sample-rate conversion between the rates a call bridge meets.

Telephony codecs run at 8 kHz (G.711) or 16 kHz (G.722, L16/16000); speech
engines want 16/22.05/24/48 kHz. Each call direction owns one
:class:`StreamResampler` so the filter state carries across 20 ms frames:
resampling frames independently restarts the filter at every boundary and
clicks at the frame rate.

The streaming path uses libsoxr's variable-rate engine (``vr=True``): its
default DFT engine releases output in bursts of ~100 ms, which is fine for
files but adds that much latency to a live call. The VR engine emits output
for every chunk after a short fixed start-up delay, with stop-band
rejection still far below int16 resolution.
"""

from __future__ import annotations

import numpy as np
import soxr
from numpy.typing import NDArray

PcmArray = NDArray[np.int16]

COMMON_RATES = (8000, 16000, 22050, 24000, 48000)
ONE_SHOT_QUALITY = "HQ"  # whole-buffer conversion (prompts, assets): latency irrelevant
STREAM_QUALITY = "HQ"
STREAM_VARIABLE_RATE = True  # low-latency engine, see module docstring
MONO = 1

_EMPTY: PcmArray = np.zeros(0, dtype=np.int16)
_EMPTY.setflags(write=False)


def _mono_int16(pcm: NDArray[np.int16]) -> PcmArray:
    arr = np.asarray(pcm)
    if arr.dtype != np.int16 or arr.ndim != 1:
        raise TypeError(f"expected 1-D int16 samples, got {arr.dtype} with shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _check_rate(rate: int) -> None:
    if rate <= 0:
        raise ValueError(f"sample rate must be positive, got {rate}")


def resample(pcm: NDArray[np.int16], from_rate: int, to_rate: int) -> PcmArray:
    """Convert a complete buffer (not for live frames: use StreamResampler)."""
    _check_rate(from_rate)
    _check_rate(to_rate)
    samples = _mono_int16(pcm)
    if from_rate == to_rate or samples.size == 0:
        return samples.copy()
    out: PcmArray = soxr.resample(samples, from_rate, to_rate, quality=ONE_SHOT_QUALITY)
    return out


class StreamResampler:
    """Stateful int16 resampler for one direction of one call.

    Output length per chunk varies slightly (rate ratios such as 441/320 do
    not divide a frame evenly, and the first chunk or two are shorter while
    the filter fills); callers should queue samples, not assume a size.
    Samples beyond int16 range after filtering are saturated by libsoxr.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        _check_rate(from_rate)
        _check_rate(to_rate)
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._stream: soxr.ResampleStream | None = None
        if from_rate != to_rate:
            self._stream = self._new_stream()

    def _new_stream(self) -> soxr.ResampleStream:
        return soxr.ResampleStream(
            self.from_rate,
            self.to_rate,
            MONO,
            dtype="int16",
            quality=STREAM_QUALITY,
            vr=STREAM_VARIABLE_RATE,
        )

    @property
    def passthrough(self) -> bool:
        return self._stream is None

    def process(self, pcm: NDArray[np.int16]) -> PcmArray:
        """Resample the next chunk of the stream."""
        samples = _mono_int16(pcm)
        if self._stream is None:
            return samples.copy()
        if samples.size == 0:
            return _EMPTY
        out: PcmArray = self._stream.resample_chunk(samples)
        return out

    def flush(self) -> PcmArray:
        """Drain the filter tail at end of stream; the object is then reset."""
        if self._stream is None:
            return _EMPTY
        tail: PcmArray = self._stream.resample_chunk(_EMPTY, last=True)
        self.reset()
        return tail

    def reset(self) -> None:
        """Forget history, e.g. when the far end's stream restarts."""
        if self._stream is not None:
            self._stream = self._new_stream()
