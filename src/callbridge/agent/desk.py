"""Where a handoff (or a dispatch) lands: the named agent's session, on its provider.

Anything that stops the agent from starting (a missing model, a broken
intents file) sends the caller to the holding agent instead, and a provider
that stays down ends in an apology and a transfer: a handoff never ends in a
dropped call.

An agent gets the tools its definition lists, of those this desk can offer:
``transfer_to_human`` needs an operator URI, ``lookup_order`` (the demo
line's) needs the demo orders database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ivr.handoff import HandoffContext
from ..offload import run_speech
from ..speech.tts import synthesizer_for
from .brain.intents import IntentEngine
from .call_tools import CALL_CONTROL_TOOLS, call_control_tools
from .callport import CallPort
from .demo_orders import ORDERS_DB_KEY, OrdersDb, lookup_order
from .holding import holding_agent
from .llm import ChatBrain, ChatConfig
from .local import DEFAULT_SILENCE_MS, LocalBackend
from .realtime import RealtimeBackend, SessionSetup
from .session import AgentSession, SessionFailed, SessionPolicy
from .tools import ToolContext, ToolRegistry

log = logging.getLogger("callbridge.agent")

BRAIN_DIR = Path(__file__).resolve().parent / "brain"
DEMO_INTENTS = BRAIN_DIR / "demo_intents.yaml"
DEMO_INTENTS_BY_LANGUAGE = {"en": DEMO_INTENTS, "es": BRAIN_DIR / "demo_intents_es.yaml"}
PROVIDERS = ("local", "holding", "nova_sonic", "openai_realtime")
DEMO_TOOLS = ("lookup_order",)  # the demo line's: its orders database
BUILTIN_TOOLS = (*DEMO_TOOLS, *CALL_CONTROL_TOOLS)  # every name a config may list
DEFAULT_TOOLS = CALL_CONTROL_TOOLS  # an agent whose config lists none

OPENING = {"en": "Hi, this is the callbridge assistant.", "es": "Hola, le atiende el asistente de callbridge."}
REASON_LINES = {
    "en": {"order_status": "I see you're calling about an order. Which order can I check for you?",
           "billing": "I see you have a billing question. How can I help?"},
    "es": {"order_status": "Veo que llama por un pedido. ¿Qué pedido quiere que consulte?",
           "billing": "Veo que tiene una pregunta de facturación. ¿En qué le ayudo?"},
}
DEFAULT_LINE = {"en": "How can I help you today?", "es": "¿En qué puedo ayudarle hoy?"}
APOLOGY = {"en": SessionPolicy.apology_text,
           "es": "Lo siento, tengo un problema en este momento. Le comunico con una persona."}
FILLER = {"en": SessionPolicy.filler_text, "es": "Un momento, por favor."}


@dataclass(frozen=True)
class AgentDefinition:
    name: str
    instructions: str = "You are a helpful phone assistant."
    greeting: str | None = None  # default: an opening that uses the handoff reason
    provider: str = "local"  # one of PROVIDERS
    intents: Path | None = None  # local engine; None: the demo intents in the caller's language
    llm: dict[str, Any] | None = None  # local engine with an OpenAI-compatible chat model: base_url, model, api_key
    silence_ms: int = DEFAULT_SILENCE_MS
    language: str | None = None  # None: the language the IVR settled on
    max_session_s: float | None = None  # local engine: a session limit, to show renewal offline
    options: dict[str, Any] = field(default_factory=dict)  # the cloud provider's own settings
    fallback: str = "transfer"  # when the provider stays down: transfer (to the operator) or holding
    voice: str | None = None  # local: a piper or espeak-ng voice; cloud: the provider's voice
    tools: tuple[str, ...] = DEFAULT_TOOLS  # which built-in tools this agent may use
    policy: SessionPolicy = field(default_factory=SessionPolicy)


def greeting_for(definition: AgentDefinition, context: HandoffContext, language: str) -> str:
    if definition.greeting:
        return definition.greeting
    lines = REASON_LINES.get(language, REASON_LINES["en"])
    line = lines.get(context.reason or "", DEFAULT_LINE.get(language, DEFAULT_LINE["en"]))
    return f"{OPENING.get(language, OPENING['en'])} {line}"


def cloud_factory(provider: str, options: dict[str, Any]) -> Callable[[], RealtimeBackend]:
    """A maker of sessions for a cloud provider; bad options fail here, at start-up, not mid-call."""
    if provider == "nova_sonic":
        from .providers.nova_sonic import NovaSonicBackend, NovaSonicConfig
        nova = _provider_config(NovaSonicConfig, provider, options)
        return lambda: NovaSonicBackend(nova)
    if provider == "openai_realtime":
        from .providers.openai_realtime import OpenAIRealtimeBackend, OpenAIRealtimeConfig
        openai = _provider_config(OpenAIRealtimeConfig, provider, options)
        return lambda: OpenAIRealtimeBackend(openai)
    raise ValueError(f"unknown agent provider {provider!r}; expected one of {', '.join(PROVIDERS)}")


def _provider_config(kind: Any, provider: str, options: dict[str, Any]) -> Any:
    known = set(kind.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"{provider}: unknown setting {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return kind(**options)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{provider}: {exc}") from None


class AgentDesk:
    def __init__(self, agents: dict[str, AgentDefinition], *, transcriber: Any, operator_uri: str | None = None,
                 orders_db: OrdersDb | None = None) -> None:
        self.agents = agents
        self.transcriber = transcriber  # a factory: the model loads once, on first need
        self.operator_uri = operator_uri  # None: no transfers to a person (the tool is not offered)
        self.orders_db = orders_db  # None: no lookup_order
        self._brains: dict[Path, IntentEngine] = {}
        for definition in agents.values():
            for tool_name in definition.tools:
                missing = self._missing_for(tool_name)
                if missing:
                    log.warning("agent %s lists %s, but it is not offered: %s", definition.name, tool_name, missing)

    def _missing_for(self, tool_name: str) -> str | None:
        """Why this desk cannot offer ``tool_name``, or None if it can."""
        if tool_name == "transfer_to_human" and not self.operator_uri:
            return "no operator URI is configured (demo.operator_uri)"
        if tool_name in DEMO_TOOLS and self.orders_db is None:
            return "no demo orders database"
        return None

    def preload(self) -> None:
        """Load what the local agents need (run it in a thread at start-up)."""
        local = [d for d in self.agents.values() if d.provider == "local"]
        for definition in local:
            if definition.llm is None:
                for path in self._intents_files(definition):
                    self._brain(path)
        if local:
            synthesizer_for("en")
            self.transcriber().load()

    @staticmethod
    def _intents_files(definition: AgentDefinition) -> list[Path]:
        return [definition.intents] if definition.intents else list(DEMO_INTENTS_BY_LANGUAGE.values())

    def _brain(self, path: Path) -> IntentEngine:
        brain = self._brains.get(path)
        if brain is None:
            brain = self._brains[path] = IntentEngine(path)
        return brain

    async def __call__(self, name: str, call: CallPort) -> None:
        definition = self.agents.get(name)
        if definition is None or definition.provider == "holding":
            await holding_agent(name, call)
            return
        context = call.context
        language = definition.language or context.language or "en"
        try:
            open_backend = await self._backend_factory(definition, language)
        except Exception as exc:  # noqa: BLE001 - the caller still gets someone: the holding agent
            log.exception("agent %s could not start; the caller goes to the holding agent", name)
            call.note("agent_fallback", agent=name, error=str(exc))
            await holding_agent(name, call)
            return
        extras = {ORDERS_DB_KEY: self.orders_db} if self.orders_db is not None else {}
        tool_context = ToolContext(call_id=call.call_id, caller=context.caller_number, language=language,
                                   extras=extras)
        policy = definition.policy
        policy = SessionPolicy(**{**policy.__dict__, "filler_text": FILLER.get(language, policy.filler_text),
                                  "apology_text": APOLOGY.get(language, policy.apology_text)})

        async def say(text: str) -> None:  # the session's filler and apology, in the caller's language
            await call.say(text, language=language)
            call.note("agent_notice", text=text)  # noted once played, so the record shows it was heard

        session = AgentSession(call, open_backend, ToolRegistry(), tool_context, policy=policy, say=say)
        offered = call_control_tools(call, lambda: session.last_played, self.operator_uri)
        if self.orders_db is not None:
            offered.insert(0, lookup_order)
        for item in offered:
            if item.__tool_spec__.name in definition.tools:
                session.tools.register(item)
        setup = SessionSetup(instructions=f"{definition.instructions}\n\n{context.to_instructions()}",
                             language=language, voice=definition.voice or definition.options.get("voice"),
                             tools=session.tools.schemas(), greeting=greeting_for(definition, context, language))
        try:
            await session.run(setup)
        except SessionFailed as exc:
            call.note("agent_fallback", agent=name, error=str(exc), action=definition.fallback)
            await self._fall_back(definition, call)

    async def _fall_back(self, definition: AgentDefinition, call: CallPort) -> None:
        if definition.fallback == "transfer" and self.operator_uri:
            if await call.transfer(self.operator_uri):
                return
        await holding_agent(definition.name, call)

    async def _backend_factory(self, definition: AgentDefinition,
                               language: str) -> Callable[[], RealtimeBackend]:
        if definition.provider == "local":
            return await self._local_factory(definition, language)
        return cloud_factory(definition.provider, definition.options)

    async def _local_factory(self, definition: AgentDefinition, language: str) -> Callable[[], RealtimeBackend]:
        brain = None
        if definition.llm is None:
            path = definition.intents or DEMO_INTENTS_BY_LANGUAGE.get(language, DEMO_INTENTS)
            brain = await run_speech(self._brain, path)
        synthesizer = await run_speech(synthesizer_for, language, definition.voice)
        transcriber = self.transcriber()

        def open_local() -> RealtimeBackend:
            chat = ChatBrain(ChatConfig(**definition.llm)) if definition.llm is not None else None
            return LocalBackend(brain=brain, transcriber=transcriber, synthesizer=synthesizer, input_rate=16000,
                                silence_ms=definition.silence_ms, chat=chat, max_session_s=definition.max_session_s)
        return open_local
