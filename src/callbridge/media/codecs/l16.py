"""L16: uncompressed 16-bit linear PCM, network byte order (RFC 3551 §4.5.11).

The RTP clock equals the sample rate; the rate comes from the rtpmap
(e.g. ``L16/16000``), so one codec class serves every rate. Mono only.
"""

from __future__ import annotations

import numpy as np

from .base import PcmArray, as_pcm

BIG_ENDIAN_INT16 = np.dtype(">i2")  # RFC 3551 §4.5.11: most significant byte first
BYTES_PER_SAMPLE = 2
DEFAULT_SAMPLE_RATE = 16000
# Rates we register an rtpmap for; 44100 is the static payload type 11 rate.
SUPPORTED_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)


class L16Codec:
    name = "L16"

    def __init__(self, sample_rate: int = DEFAULT_SAMPLE_RATE) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self.clock_rate = sample_rate

    def encode(self, pcm: PcmArray) -> bytes:
        return as_pcm(pcm).astype(BIG_ENDIAN_INT16).tobytes()

    def decode(self, payload: bytes) -> PcmArray:
        # A trailing odd byte cannot form a sample (truncated packet): drop it.
        usable = len(payload) - len(payload) % BYTES_PER_SAMPLE
        return np.frombuffer(payload, dtype=BIG_ENDIAN_INT16, count=usable // BYTES_PER_SAMPLE).astype(np.int16)
