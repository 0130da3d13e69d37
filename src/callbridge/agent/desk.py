"""Where an IVR handoff lands: the named agent's session, on the offline engine.

Anything that stops the agent from starting (a missing model, a broken
intents file) sends the caller to the holding agent instead: a handoff never
ends in a dropped call.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..ivr.handoff import HandoffContext
from ..speech.tts import synthesizer_for
from .brain.intents import IntentEngine
from .call_tools import call_control_tools
from .demo_orders import ORDERS_DB_KEY, OrdersDb, lookup_order
from .holding import holding_agent
from .local import DEFAULT_SILENCE_MS, LocalBackend
from .realtime import SessionSetup
from .session import AgentSession
from .tools import ToolContext, ToolRegistry

log = logging.getLogger("callbridge.agent")

DEMO_INTENTS = Path(__file__).resolve().parent / "brain" / "demo_intents.yaml"
OPENING = "Hi, this is the callbridge assistant."
REASON_LINES = {
    "order_status": "I see you're calling about an order. Which order can I check for you?",
    "billing": "I see you have a billing question. How can I help?",
}
DEFAULT_LINE = "How can I help you today?"


@dataclass(frozen=True)
class AgentDefinition:
    name: str
    instructions: str = "You are a helpful phone assistant."
    greeting: str | None = None  # default: an opening that uses the handoff reason
    provider: str = "local"  # local | holding
    intents: Path = DEMO_INTENTS
    silence_ms: int = DEFAULT_SILENCE_MS


def greeting_for(definition: AgentDefinition, context: HandoffContext) -> str:
    if definition.greeting:
        return definition.greeting
    return f"{OPENING} {REASON_LINES.get(context.reason or '', DEFAULT_LINE)}"


class AgentDesk:
    def __init__(self, agents: dict[str, AgentDefinition], *, transcriber: Any, operator_uri: str,
                 orders_db: OrdersDb | None = None) -> None:
        self.agents = agents
        self.transcriber = transcriber  # a factory: the model loads once, on first need
        self.operator_uri = operator_uri
        self.orders_db = orders_db
        self._brains: dict[Path, IntentEngine] = {}

    def preload(self) -> None:
        """Load what the local agents need (run it in a thread at start-up)."""
        for definition in self.agents.values():
            if definition.provider == "local":
                self._brain(definition.intents)
        synthesizer_for("en")
        self.transcriber().load()

    def _brain(self, path: Path) -> IntentEngine:
        brain = self._brains.get(path)
        if brain is None:
            brain = self._brains[path] = IntentEngine(path)
        return brain

    async def __call__(self, name: str, io: Any, context: HandoffContext) -> None:
        definition = self.agents.get(name)
        if definition is None or definition.provider == "holding":
            await holding_agent(name, io, context)
            return
        try:
            brain = await asyncio.to_thread(self._brain, definition.intents)
            backend = LocalBackend(brain=brain, transcriber=self.transcriber(), synthesizer=synthesizer_for("en"),
                                   input_rate=16000, silence_ms=definition.silence_ms)
        except Exception as exc:  # noqa: BLE001 - the caller still gets someone: the holding agent
            log.exception("agent %s could not start; the caller goes to the holding agent", name)
            io.record("agent_fallback", agent=name, error=str(exc))
            await holding_agent(name, io, context)
            return
        tool_context = ToolContext(call_id=io.info.call_id, caller=context.caller_number, language=context.language,
                                   extras={ORDERS_DB_KEY: self.orders_db})
        session = AgentSession(io, backend, ToolRegistry(), tool_context, io.call.transcript)
        for item in [lookup_order, *call_control_tools(io, lambda: session.last_played, self.operator_uri)]:
            session.tools.register(item)
        setup = SessionSetup(instructions=f"{definition.instructions}\n\n{context.to_instructions()}",
                             language=context.language, voice=None, tools=session.tools.schemas(),
                             greeting=greeting_for(definition, context))
        await session.run(setup)
