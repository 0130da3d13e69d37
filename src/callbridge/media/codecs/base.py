"""Tiny codec interface and a name -> factory registry.

A codec instance belongs to one call (G.722 keeps ADPCM state between
frames), so the registry hands out factories, not shared instances.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast, runtime_checkable

import numpy as np
from numpy.typing import NDArray

PcmArray = NDArray[np.int16]

INT16_MIN = -32768
INT16_MAX = 32767


@runtime_checkable
class AudioCodec(Protocol):
    """One direction-agnostic audio codec bound to a single call.

    ``clock_rate`` is the RTP timestamp rate from the rtpmap, which is not
    always the audio rate: G.722 runs at 16 kHz but keeps an 8000 Hz RTP
    clock (RFC 3551 §4.5.2).
    """

    name: str
    clock_rate: int
    sample_rate: int

    def encode(self, pcm: PcmArray) -> bytes: ...

    def decode(self, payload: bytes) -> PcmArray: ...


CodecFactory = Callable[[], AudioCodec]

# RFC 3551 §6, table 4: static payload types for the codecs we carry.
STATIC_PAYLOAD_TYPES: dict[str, int] = {"PCMU": 0, "PCMA": 8, "G722": 9}


class UnsupportedCodecError(KeyError):
    """No codec is registered under the requested rtpmap name / clock rate."""


# (upper-case encoding name, RTP clock rate) -> factory
_REGISTRY: dict[tuple[str, int], CodecFactory] = {}
# encoding name -> clock rate used when the caller gives none
_DEFAULT_CLOCK: dict[str, int] = {}


def register_codec(name: str, clock_rate: int, factory: CodecFactory) -> None:
    """Register ``factory`` for rtpmap ``name/clock_rate``.

    The first clock rate registered for a name becomes its default.
    """
    key = name.upper()
    _REGISTRY[(key, clock_rate)] = factory
    _DEFAULT_CLOCK.setdefault(key, clock_rate)


def codec_for(name: str, clock_rate: int | None = None) -> CodecFactory:
    """Factory for rtpmap encoding ``name`` (case-insensitive) at ``clock_rate``."""
    key = name.upper()
    rate = _DEFAULT_CLOCK.get(key) if clock_rate is None else clock_rate
    try:
        return _REGISTRY[(key, rate)]  # type: ignore[index]
    except KeyError:
        raise UnsupportedCodecError(f"{name}/{clock_rate}") from None


def available_codecs() -> list[tuple[str, int]]:
    """All registered (name, clock_rate) pairs, in registration order."""
    return list(_REGISTRY)


_INT16 = np.dtype(np.int16)


def as_pcm(pcm: NDArray[np.integer] | NDArray[np.floating]) -> PcmArray:
    """Contiguous 1-D int16 copy/view of ``pcm``; other dtypes are rounded and
    saturated (not rescaled) so a stray float frame cannot wrap around."""
    if pcm.__class__ is np.ndarray and pcm.dtype is _INT16 and pcm.ndim == 1:
        return cast(PcmArray, pcm)  # the hot path: every frame the engine makes is already this
    arr = np.asarray(pcm)
    if arr.ndim != 1:
        raise ValueError(f"expected mono 1-D samples, got shape {arr.shape}")
    if arr.dtype != np.int16:
        arr = np.clip(np.rint(arr), INT16_MIN, INT16_MAX).astype(np.int16)
    return np.ascontiguousarray(arr)
