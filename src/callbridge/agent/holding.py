"""The agent a handoff reaches until a conversational model is configured.

It acknowledges the caller in their language and keeps them company with hold
music, so a handoff never ends in dead air or a dropped call.
"""

from __future__ import annotations

import asyncio

from ..media.sources import LoopSource
from ..media.tone import hold_music

ACKNOWLEDGEMENT = {
    "en": "Thank you. Please hold while I connect you to our assistant.",
    "es": "Gracias. Por favor espere mientras le comunico con nuestro asistente.",
}
MAX_HOLD_S = 600.0  # nobody should hold forever on a line with no one behind it
POLL_S = 0.2


async def holding_agent(agent: str, io, context) -> None:
    language = context.language if context.language in ACKNOWLEDGEMENT else "en"
    await io.say(ACKNOWLEDGEMENT[language], language=language, voice=None)
    stream = io.call.leg.stream
    if stream is None:
        return
    stream.play(LoopSource(hold_music(stream.sample_rate), stream.sample_rate, label="agent hold"))
    waited = 0.0
    while io.call.leg.stream is not None and io.call.ended_at is None and waited < MAX_HOLD_S:
        await asyncio.sleep(POLL_S)
        waited += POLL_S
