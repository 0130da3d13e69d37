"""Agent definitions from the config file: the one place config words become agent settings."""

from __future__ import annotations

from ..agent.desk import BUILTIN_TOOLS, AgentDefinition
from .config import Config


def agent_definitions(config: Config) -> dict[str, AgentDefinition]:
    definitions = {}
    for agent in config.agents:
        options = agent.nova_sonic if agent.provider == "nova_sonic" else agent.openai_realtime
        definitions[agent.name] = AgentDefinition(
            name=agent.name, instructions=agent.instructions, greeting=agent.greeting, provider=agent.provider,
            intents=config.base_dir / agent.intents if agent.intents else None,
            llm=agent.llm.model_dump() if agent.llm else None, silence_ms=agent.silence_ms,
            language=agent.language, max_session_s=agent.max_session_s, options=dict(options),
            fallback=agent.fallback, voice=agent.voice,
            tools=tuple(agent.tools) if agent.tools is not None else BUILTIN_TOOLS)
    return definitions
