"""Agent definitions from the config file, and the desk that runs them: where config words become agents."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..agent.desk import AgentDefinition, AgentDesk
from .config import Config
from .demo import default_tools, operator_uri, orders_db_for


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
            tools=tuple(agent.tools) if agent.tools is not None else default_tools(config, agent.name))
    return definitions


def agent_desk(config: Config, *, data_dir: Path, transcriber: Callable[[], Any]) -> AgentDesk:
    """The desk for this config: the demo's orders database and operator only where they are used."""
    definitions = agent_definitions(config)
    return AgentDesk(definitions, transcriber=transcriber, operator_uri=operator_uri(config),
                     orders_db=orders_db_for(definitions, data_dir))
