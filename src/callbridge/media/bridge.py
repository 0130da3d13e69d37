"""Connect two calls' audio: what one side hears, the other side is sent.

Used when the IVR transfers by bridging through a trunk instead of REFER.
Each direction is a :class:`PcmStream` queued on the far stream's playback,
which also converts between the legs' sample rates (G.722 ↔ G.711).
"""

from __future__ import annotations

import numpy as np

from .callaudio import CallAudio
from .sources import PcmStream

# More than this much audio waiting means the legs' clocks drifted apart or one
# side stalled: drop the backlog rather than let the delay grow for the rest of the call.
MAX_BACKLOG_S = 0.2


class AudioBridge:
    def __init__(self, a: CallAudio, b: CallAudio) -> None:
        self.a, self.b = a, b
        self._a_to_b = PcmStream(a.sample_rate, b.sample_rate, label="bridge")
        self._b_to_a = PcmStream(b.sample_rate, a.sample_rate, label="bridge")
        self._listeners = [(a, self._forwarder(self._a_to_b, b.sample_rate)),
                           (b, self._forwarder(self._b_to_a, a.sample_rate))]
        a.flush()
        b.flush()
        b.play(self._a_to_b)
        a.play(self._b_to_a)
        for stream, listener in self._listeners:
            stream.audio_listeners.append(listener)
        self.closed = False

    @staticmethod
    def _forwarder(out: PcmStream, out_rate: int):
        limit = int(MAX_BACKLOG_S * out_rate)

        def forward(pcm: np.ndarray) -> None:
            if out.buffered_samples > limit:
                out.read(out.buffered_samples - limit // 2)  # drop the oldest backlog
            out.write(pcm)

        return forward

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream, listener in self._listeners:
            if listener in stream.audio_listeners:
                stream.audio_listeners.remove(listener)
        self._a_to_b.end()
        self._b_to_a.end()
