"""The stand-in's server VAD: an energy detector shaped like OpenAI's ``server_vad``.

Sans-IO: int16 samples in, (kind, ms) boundaries out, with the position counted in
milliseconds of audio appended since the session began, as the API's ``audio_start_ms``
and ``audio_end_ms`` are. ``threshold`` (0..1, as in the session config) maps to a frame
RMS of ``threshold * THRESHOLD_FULL_SCALE`` of full scale: an approximation, the real
detector is a model, but a loud tone is speech and digital silence is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

FRAME_MS = 10
THRESHOLD_FULL_SCALE = 0.1  # threshold 0.5 -> RMS 5% of full scale (about -26 dBFS)
INT16_FULL_SCALE = 32768.0


@dataclass(frozen=True, slots=True)
class VadBoundary:
    kind: Literal["started", "stopped"]
    ms: int


class EnergyVad:
    def __init__(self, rate: int, *, threshold: float = 0.5, prefix_padding_ms: int = 300,
                 silence_duration_ms: int = 500) -> None:
        self.rate = rate
        self.level = threshold * THRESHOLD_FULL_SCALE * INT16_FULL_SCALE
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms
        self.in_speech = False
        self._frame = rate * FRAME_MS // 1000
        self._pending = np.zeros(0, dtype=np.int16)
        self._position_ms = 0  # end of the last whole frame examined
        self._last_loud_ms = 0

    def feed(self, pcm: np.ndarray) -> list[VadBoundary]:
        self._pending = np.concatenate([self._pending, np.asarray(pcm, dtype=np.int16)])
        boundaries: list[VadBoundary] = []
        whole = len(self._pending) // self._frame * self._frame
        frames, self._pending = self._pending[:whole], self._pending[whole:]
        for frame in frames.reshape(-1, self._frame) if whole else ():
            start_ms = self._position_ms
            self._position_ms += FRAME_MS
            loud = float(np.sqrt(np.mean(frame.astype(np.float64) ** 2))) >= self.level
            if loud:
                self._last_loud_ms = self._position_ms
                if not self.in_speech:
                    self.in_speech = True
                    # the API's audio_start_ms includes the configured prefix padding
                    boundaries.append(VadBoundary("started", max(0, start_ms - self.prefix_padding_ms)))
            elif self.in_speech and self._position_ms - self._last_loud_ms >= self.silence_duration_ms:
                self.in_speech = False
                # ...and audio_end_ms includes the silence that confirmed the end
                boundaries.append(VadBoundary("stopped", self._position_ms))
        return boundaries
