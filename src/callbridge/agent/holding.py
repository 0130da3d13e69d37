"""The agent a handoff reaches until a conversational model is configured.

It acknowledges the caller in their language and keeps them company with hold
music, so a handoff never ends in dead air or a dropped call.
"""

from __future__ import annotations

from ..media.sources import LoopSource
from ..media.tone import hold_music
from .callport import CallPort

ACKNOWLEDGEMENT = {
    "en": "Thank you. Please hold while I connect you to our assistant.",
    "es": "Gracias. Por favor espere mientras le comunico con nuestro asistente.",
}
MAX_HOLD_S = 600.0  # nobody should hold forever on a line with no one behind it


async def holding_agent(agent: str, call: CallPort) -> None:
    language = call.context.language if call.context.language in ACKNOWLEDGEMENT else "en"
    await call.say(ACKNOWLEDGEMENT[language], language=language)
    rate = call.sample_rate
    call.play(LoopSource(hold_music(rate), rate, label="agent hold"))
    await call.ended(MAX_HOLD_S)
