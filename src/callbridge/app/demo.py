"""The built-in demo line's application (a tone until the IVR lands)."""

from __future__ import annotations

import asyncio

from ..media.tone import ToneSource

# A 440 Hz tone: easy to hear, easy to check in a recording (frequency and energy).
DEMO_TONE_HZ = 440.0


class DemoToneApp:
    async def run(self, call, manager) -> None:
        stream = call.leg.stream
        if stream is None:
            return
        call.log_event("play", source=f"tone {DEMO_TONE_HZ:.0f} Hz")
        stream.play(ToneSource((DEMO_TONE_HZ,), sample_rate=stream.codec.sample_rate))
        await asyncio.Event().wait()  # play until the call ends (the manager cancels us)
