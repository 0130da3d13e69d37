"""Audio codecs: G.711 (PCMU/PCMA), G.722 and L16, behind one tiny interface.

Use :func:`codec_for` with the rtpmap encoding name and clock rate to get a
per-call factory::

    codec = codec_for("PCMU")()          # or codec_for("L16", 16000)()
    payload = codec.encode(pcm_int16)
"""

from __future__ import annotations

from functools import partial

from .base import (
    STATIC_PAYLOAD_TYPES,
    AudioCodec,
    CodecFactory,
    PcmArray,
    UnsupportedCodecError,
    available_codecs,
    codec_for,
    register_codec,
)
from .g711 import PcmaCodec, PcmuCodec
from .g722 import G722Codec, g722_available
from .l16 import DEFAULT_SAMPLE_RATE as L16_DEFAULT_RATE
from .l16 import SUPPORTED_RATES as L16_RATES
from .l16 import L16Codec


def _register_builtins() -> None:
    register_codec(PcmuCodec.name, PcmuCodec.clock_rate, PcmuCodec)
    register_codec(PcmaCodec.name, PcmaCodec.clock_rate, PcmaCodec)
    register_codec(G722Codec.name, G722Codec.clock_rate, G722Codec)
    # the default rate goes first so codec_for("L16") picks it
    for rate in sorted(L16_RATES, key=lambda r: r != L16_DEFAULT_RATE):
        register_codec(L16Codec.name, rate, partial(L16Codec, rate))


_register_builtins()

__all__ = [
    "STATIC_PAYLOAD_TYPES",
    "AudioCodec",
    "CodecFactory",
    "G722Codec",
    "L16Codec",
    "PcmArray",
    "PcmaCodec",
    "PcmuCodec",
    "UnsupportedCodecError",
    "available_codecs",
    "codec_for",
    "g722_available",
    "register_codec",
]
