"""G.722 wideband ADPCM at 64 kbit/s (ITU-T G.722), via the ``G722`` package.

Audio is 16 kHz but the RTP clock is 8000 Hz: RFC 3551 §4.5.2 kept an
erroneous 8 kHz rate in the original spec for compatibility, so RTP
timestamps advance by 160 per 20 ms frame.

G.722 is stateful ADPCM: encoder and decoder each carry predictor state from
frame to frame, so a codec instance belongs to one call and each direction
gets its own native coder object.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import PcmArray, as_pcm

SAMPLE_RATE = 16000
RTP_CLOCK_RATE = 8000  # RFC 3551 §4.5.2
BIT_RATE = 64000  # mode 1; 56k/48k modes steal LSBs for data and are not used on SIP trunks
SAMPLES_PER_BYTE = 2  # 64 kbit/s at 16 kHz: one 8-bit code word per two samples


def _native_coder(sample_rate: int, bit_rate: int) -> Any:
    try:
        import G722  # the PyPI distribution "g722" installs this module name
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("G.722 needs the 'g722' package (pip install g722)") from exc
    return G722.G722(sample_rate, bit_rate)


def g722_available() -> bool:
    try:
        import G722  # noqa: F401
    except ImportError:
        return False
    return True


class G722Codec:
    name = "G722"
    clock_rate = RTP_CLOCK_RATE
    sample_rate = SAMPLE_RATE

    def __init__(self, bit_rate: int = BIT_RATE) -> None:
        self._bit_rate = bit_rate
        self._encoder = _native_coder(SAMPLE_RATE, bit_rate)
        self._decoder = _native_coder(SAMPLE_RATE, bit_rate)
        # One code word covers two samples; an odd frame's last sample waits
        # for the next frame instead of being silently dropped.
        self._pending: PcmArray = np.zeros(0, dtype=np.int16)

    def encode(self, pcm: PcmArray) -> bytes:
        samples = as_pcm(pcm)
        if self._pending.size:
            samples = np.concatenate((self._pending, samples))
        usable = samples.size - samples.size % SAMPLES_PER_BYTE
        self._pending = samples[usable:].copy()
        if usable == 0:
            return b""
        encoded: bytes = self._encoder.encode(np.ascontiguousarray(samples[:usable]))
        return encoded

    def decode(self, payload: bytes) -> PcmArray:
        if not payload:
            return np.zeros(0, dtype=np.int16)
        # The package returns array('h') (or ndarray with G722-numpy); both expose a buffer.
        return np.asarray(self._decoder.decode(payload), dtype=np.int16)

    def reset(self) -> None:
        """Fresh ADPCM state, e.g. after an SSRC change or re-INVITE."""
        self._encoder = _native_coder(SAMPLE_RATE, self._bit_rate)
        self._decoder = _native_coder(SAMPLE_RATE, self._bit_rate)
        self._pending = np.zeros(0, dtype=np.int16)
