"""What the console shows beyond call records: the flows (running and draft) and the agents.

Flows: the configured ones are those the server loaded at start-up and runs; a configured flow that
fails validation stops start-up with file:line:column (``callbridge serve`` and ``check-config``), as
a broken config does, so a line never goes live on a flow it cannot run. Flow files that the config
does not name yet (drafts next to the configured ones, or in ``<config dir>/flows/``) are validated
on every ``GET /api/flows``, off the event loop and bounded in count and size, so an author sees a
draft's first error, with its position, before routing calls to it.

Agents: the config's agents as the console may show them: kind and provider settings that are not
secret (never ``api_key``, never a provider's own settings, never credentials in a URL).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from ...ivr import load_flow_text
from ...ivr.model import Flow
from ...offload import run_files
from ...yamlsource import SourceError
from ..config import AgentConfig, Config
from ..demo import operator_uri
from .flowgraph import flow_graph

FLOW_SUFFIXES = (".yaml", ".yml")
MAX_DRAFT_FILES = 50  # per listing; a directory with more is cut short (and says so)
MAX_DRAFT_BYTES = 256 * 1024  # real flows are a few KiB
DRAFTS_DIR = "flows"  # <config dir>/flows/ is searched even when no configured flow lives there


@dataclass(frozen=True)
class ConsoleSources:
    config: Config
    flows: dict[str, Flow]  # loaded at start-up: what calls run
    reachable: Callable[[], set[str]]  # flows some route leads to (the router may change with API trunks)

    async def flow_listing(self) -> dict[str, Any]:
        reachable = self.reachable()
        running = [{**flow_graph(flow), "configured_as": name, "routed": name in reachable}
                   for name, flow in sorted(self.flows.items())]
        drafts, truncated = await run_files(self._drafts)
        return {"flows": running, "drafts": drafts, "drafts_truncated": truncated}

    def _draft_files(self) -> tuple[list[Path], bool]:
        running = {Path(flow.file).resolve() for flow in self.flows.values()}
        skip = running | ({Path(self.config.source).resolve()} if self.config.source else set())
        directories = {path.parent for path in running if self.config.source}
        if self.config.source:
            directories.add(self.config.base_dir / DRAFTS_DIR)
        # The built-in demo's folder is the package's, not the user's.
        directories = {d for d in directories if d.is_dir() and d != _builtin_dir()}
        found = sorted({p.resolve() for d in directories for p in d.iterdir()
                        if p.suffix in FLOW_SUFFIXES and p.is_file()} - skip)
        return found[:MAX_DRAFT_FILES], len(found) > MAX_DRAFT_FILES

    def _drafts(self) -> tuple[list[dict[str, Any]], bool]:
        files, truncated = self._draft_files()
        results = [entry for path in files if (entry := self._validate(path)) is not None]
        return results, truncated

    def _validate(self, path: Path) -> dict[str, Any] | None:
        """A draft's outcome; None for a YAML file that is no flow (no ``nodes:``), e.g. an intents file."""
        entry: dict[str, Any] = {"file": str(path), "name": path.name}
        try:
            if path.stat().st_size > MAX_DRAFT_BYTES:
                return {**entry, "error": {"file": str(path), "line": 1, "column": 1,
                                           "reason": f"larger than {MAX_DRAFT_BYTES // 1024} KiB: not read"}}
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return {**entry, "error": {"file": str(path), "line": 1, "column": 1, "reason": f"cannot read: {exc}"}}
        if not _looks_like_a_flow(text):
            return None
        settings = {"operator_uri": operator_uri(self.config)}
        try:
            flow = load_flow_text(text, str(path), agents=self.config.agent_names,
                                  trunks=self.config.outbound_trunk_names, settings=settings, base_dir=path.parent)
        except SourceError as exc:
            where = exc.position
            return {**entry, "error": {"file": where.file, "line": where.line, "column": where.column,
                                       "reason": exc.reason}}
        return {**entry, "flow": flow_graph(flow)}

    def agents(self) -> list[dict[str, Any]]:
        return [agent_summary(agent) for agent in self.config.agents]


def _builtin_dir() -> Path:
    from ...ivr import DEMO_FLOW_PATH

    return DEMO_FLOW_PATH.parent.resolve()


def _looks_like_a_flow(text: str) -> bool:
    """A mapping with ``nodes:`` (or text YAML cannot even parse: that is worth showing in a flows folder)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return True
    return isinstance(value, dict) and "nodes" in value


def public_url(url: str) -> str:
    """A URL without user:password, query or fragment: where the model is, not how to get in."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:  # a port that is no number: leave it out
        port = None
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def agent_summary(agent: AgentConfig) -> dict[str, Any]:
    """Only fields that are no secret; provider settings (nova_sonic, openai_realtime) may hold keys."""
    engine = "chat model" if agent.llm is not None else "intents" if agent.provider == "local" else agent.provider
    return {
        "name": agent.name, "provider": agent.provider, "engine": engine, "dispatch": agent.dispatch,
        "language": agent.language, "voice": agent.voice, "tools": agent.tools, "fallback": agent.fallback,
        "silence_ms": agent.silence_ms, "max_session_s": agent.max_session_s,
        "intents": agent.intents.name if agent.intents is not None else None,
        "llm": None if agent.llm is None else {"model": agent.llm.model, "base_url": public_url(agent.llm.base_url)},
    }


__all__ = ["ConsoleSources", "agent_summary", "public_url"]
