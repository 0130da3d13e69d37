"""G.711 µ-law (PCMU) and A-law (PCMA), RFC 3551 §4.5.14.

Both directions are single numpy gathers: a 65536-entry table indexed by the
int16 sample's bit pattern for encoding, a 256-entry table for decoding.
The tables are built once, vectorised, from the segment/mantissa rules of
ITU-T G.711 (tables 1a/1b and 2a/2b). G.711 is defined on 13/14-bit uniform
PCM; int16 input is rounded to nearest onto that grid (as sox does) rather
than truncated, which removes a half-step negative bias.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .base import PcmArray, as_pcm

SAMPLE_RATE = 8000  # G.711 is narrowband only; RTP clock == audio rate

# µ-law works on 14-bit linear samples (G.711 table 2a): drop 2 LSBs of int16.
ULAW_SHIFT = 2
ULAW_BIAS = 33  # 14-bit bias that makes segment edges powers of two
ULAW_CLIP = 8159  # largest 14-bit magnitude before the bias overflows 13 bits
ULAW_SIGN_POSITIVE = 0xFF  # µ-law transmits all bits inverted; positive -> MSB set
ULAW_SIGN_NEGATIVE = 0x7F

# A-law works on 13-bit linear samples (G.711 table 1a): drop 3 LSBs.
ALAW_SHIFT = 3
ALAW_SEG0_TOP = 32  # segments 0 and 1 share the same step size
ALAW_EVEN_BIT_INVERSION = 0x55  # G.711 §2: even bits inverted on the line
ALAW_SIGN_POSITIVE = 0x80

MANTISSA_BITS = 4
MANTISSA_MASK = 0x0F
SEGMENT_MASK = 0x70


def _bit_length(values: NDArray[np.int32]) -> NDArray[np.int32]:
    """Vectorised int.bit_length() for non-negative values < 2**16."""
    out = np.zeros(values.shape, dtype=np.int32)
    nz = values > 0
    out[nz] = np.floor(np.log2(values[nz])).astype(np.int32) + 1
    return out


def _all_int16_at(shift: int) -> NDArray[np.int32]:
    """Every int16 (indexed by its uint16 bit pattern) rounded to 16-shift bits."""
    x = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    top = (1 << (15 - shift)) - 1
    return np.minimum((x + (1 << (shift - 1))) >> shift, top)


def _build_ulaw_encode() -> NDArray[np.uint8]:
    x = _all_int16_at(ULAW_SHIFT)
    negative = x < 0
    magnitude = np.minimum(np.where(negative, -x, x), ULAW_CLIP) + ULAW_BIAS
    # biased magnitude 33..8192: segment = position of the leading one - 5
    segment = np.clip(_bit_length(magnitude) - 6, 0, 7)
    mantissa = (magnitude >> (segment + 1)) & MANTISSA_MASK
    code = (segment << MANTISSA_BITS) | mantissa
    # the biased clip value 8192 lands one past segment 7: saturate
    code = np.where(_bit_length(magnitude) > 13, 0x7F, code)
    sign = np.where(negative, ULAW_SIGN_NEGATIVE, ULAW_SIGN_POSITIVE)
    return (code ^ sign).astype(np.uint8)


def _build_ulaw_decode() -> NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    segment = (code & SEGMENT_MASK) >> MANTISSA_BITS
    mantissa = code & MANTISSA_MASK
    # reconstruct the mid-point of the interval, in int16 units (bias*4 = 132)
    bias16 = ULAW_BIAS << ULAW_SHIFT
    magnitude = (((mantissa << 3) + bias16) << segment) - bias16
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _build_alaw_encode() -> NDArray[np.uint8]:
    x = _all_int16_at(ALAW_SHIFT)
    negative = x < 0
    # A-law is symmetric about -1/2 LSB: negative magnitudes are one's complement
    magnitude = np.where(negative, ~x, x)  # 0..4095
    segment = np.clip(_bit_length(magnitude) - 5, 0, 7)
    shift = np.maximum(segment, 1)  # segments 0 and 1 have the same step
    mantissa = (magnitude >> shift) & MANTISSA_MASK
    code = (segment << MANTISSA_BITS) | mantissa
    code = np.where(negative, code, code | ALAW_SIGN_POSITIVE)
    return (code ^ ALAW_EVEN_BIT_INVERSION).astype(np.uint8)


def _build_alaw_decode() -> NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ ALAW_EVEN_BIT_INVERSION
    segment = (code & SEGMENT_MASK) >> MANTISSA_BITS
    mantissa = code & MANTISSA_MASK
    # interval mid-point in 13-bit units: 2m+1 in segment 0, (2m+33)<<(s-1) above
    mid = np.where(
        segment == 0,
        2 * mantissa + 1,
        (2 * mantissa + ALAW_SEG0_TOP + 1) << np.maximum(segment - 1, 0),
    )
    magnitude = mid << (ALAW_SHIFT)
    return np.where(code & ALAW_SIGN_POSITIVE, magnitude, -magnitude).astype(np.int16)


ULAW_ENCODE_TABLE: NDArray[np.uint8] = _build_ulaw_encode()
ULAW_DECODE_TABLE: NDArray[np.int16] = _build_ulaw_decode()
ALAW_ENCODE_TABLE: NDArray[np.uint8] = _build_alaw_encode()
ALAW_DECODE_TABLE: NDArray[np.int16] = _build_alaw_decode()
for _table in (ULAW_ENCODE_TABLE, ULAW_DECODE_TABLE, ALAW_ENCODE_TABLE, ALAW_DECODE_TABLE):
    _table.setflags(write=False)


_UINT8 = np.dtype(np.uint8)
_UINT16 = np.dtype(np.uint16)


class _TableCodec:
    """G.711 is a pair of lookup tables. Stateless, so one instance could be
    shared, but the registry still creates one per call for symmetry with
    stateful codecs."""

    name: str
    clock_rate = SAMPLE_RATE
    sample_rate = SAMPLE_RATE
    _encode_table: NDArray[np.uint8]
    _decode_table: NDArray[np.int16]

    # ``take`` with a dtype object: the same lookup as ``table[indices]``, about half the
    # per-frame cost (fancy indexing checks bounds and types that these indices always pass).
    def encode(self, pcm: PcmArray) -> bytes:
        return self._encode_table.take(as_pcm(pcm).view(_UINT16)).tobytes()

    def decode(self, payload: bytes) -> PcmArray:
        return self._decode_table.take(np.frombuffer(payload, _UINT8))


class PcmuCodec(_TableCodec):
    """G.711 µ-law."""

    name = "PCMU"
    _encode_table = ULAW_ENCODE_TABLE
    _decode_table = ULAW_DECODE_TABLE


class PcmaCodec(_TableCodec):
    """G.711 A-law."""

    name = "PCMA"
    _encode_table = ALAW_ENCODE_TABLE
    _decode_table = ALAW_DECODE_TABLE


# Stateless codecs: the module-level functions (used by the WAV reader and
# tests) are simply shared instances' methods.
_PCMU, _PCMA = PcmuCodec(), PcmaCodec()
ulaw_encode, ulaw_decode = _PCMU.encode, _PCMU.decode
alaw_encode, alaw_decode = _PCMA.encode, _PCMA.decode
