"""Small PCM conversions shared by the speech engines."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from callbridge.media.codecs.base import PcmArray
from callbridge.media.resample import resample

INT16_SCALE = 32768.0
INT16_MAX = 32767

# Prompts peak at about -3 dBFS: loud enough for a phone line, with headroom
# so resampling overshoot and G.711 companding never clip.
PROMPT_PEAK = 0.7

EMPTY_PCM: PcmArray = np.zeros(0, dtype=np.int16)
EMPTY_PCM.setflags(write=False)


def to_int16(pcm: NDArray[np.generic]) -> PcmArray:
    """Mono int16 from int16 or float ([-1, 1]) samples."""
    arr = np.asarray(pcm)
    if arr.ndim != 1:
        raise ValueError(f"expected mono 1-D samples, got shape {arr.shape}")
    if arr.dtype == np.int16:
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        scaled = np.nan_to_num(arr.astype(np.float64) * INT16_SCALE)
        return np.clip(np.rint(scaled), -INT16_SCALE, INT16_MAX).astype(np.int16)
    raise TypeError(f"expected int16 or float samples, got {arr.dtype}")


def to_float32(pcm: PcmArray) -> NDArray[np.float32]:
    """int16 -> float32 in [-1, 1), the form the neural models take."""
    return (np.asarray(pcm, dtype=np.float32) / np.float32(INT16_SCALE)).astype(np.float32, copy=False)


def float32_at(pcm: NDArray[np.generic], from_rate: int, to_rate: int) -> NDArray[np.float32]:
    """Any int16/float PCM as float32 at ``to_rate`` (one-shot, not for live frames)."""
    return to_float32(resample(to_int16(pcm), from_rate, to_rate))


def normalize_peak(pcm: PcmArray, peak: float = PROMPT_PEAK) -> PcmArray:
    """Scale so the loudest sample sits at ``peak`` of full scale (silence stays silent)."""
    loudest = int(np.max(np.abs(pcm.astype(np.int32)))) if len(pcm) else 0
    if loudest == 0:
        return pcm
    return to_int16(pcm.astype(np.float64) * (peak / loudest))


def rms_dbfs(pcm: PcmArray) -> float:
    """Level relative to full scale; -inf for digital silence."""
    if not len(pcm):
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(pcm.astype(np.float64))))) / INT16_SCALE
    return 20.0 * float(np.log10(rms)) if rms > 0 else float("-inf")
