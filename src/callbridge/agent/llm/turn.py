"""One conversational turn with tool use: ask, run requested tools, ask again.

The registry is duck-typed (``schemas()`` and ``async invoke(name,
arguments, context)``) so this module does not import the tool layer.
``messages`` is extended in place with the assistant and tool messages, so
the caller's history stays a valid chat-completions transcript.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from .chat import ChatBrain, ChatError, ChatEvent, Done, TextDelta, ToolCallRequest

__all__ = ["ToolOutcome", "ToolRegistryLike", "TurnEvent", "run_turn"]


class ToolRegistryLike(Protocol):
    def schemas(self) -> list[dict[str, Any]]: ...

    async def invoke(self, name: str, arguments: Any, context: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """A tool the model asked for has run; ``content`` is what the model sees."""

    call: ToolCallRequest
    ok: bool
    content: str
    duration_ms: float


TurnEvent = ChatEvent | ToolOutcome


async def run_turn(brain: ChatBrain, messages: list[dict], registry: ToolRegistryLike, *,
                   context: Any = None, max_tool_rounds: int = 3) -> AsyncIterator[TurnEvent]:
    """Yield every chat event and tool outcome; only the last round's ``Done`` is passed on.

    After ``max_tool_rounds`` rounds of tool calls the model is asked once more
    without tools, so a looping model still ends up saying something.
    """
    for round_index in range(max_tool_rounds + 1):
        tools = registry.schemas() if round_index < max_tool_rounds else None
        text: list[str] = []
        calls: list[ToolCallRequest] = []
        done: Done | None = None
        async for event in brain.stream(messages, tools or None):
            if isinstance(event, TextDelta):
                text.append(event.text)
            elif isinstance(event, ToolCallRequest):
                calls.append(event)
            elif isinstance(event, Done):
                done = event
                continue  # decided below: intermediate rounds are not the end
            elif isinstance(event, ChatError):
                yield event
                return
            yield event
        if not calls:
            messages.append({"role": "assistant", "content": "".join(text)})
            if done is not None:
                yield done
            return
        messages.append(_assistant_with_calls("".join(text), calls))
        for call in calls:
            outcome = await _run_tool(registry, call, context)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": outcome.content})
            yield outcome


def _assistant_with_calls(text: str, calls: list[ToolCallRequest]) -> dict:
    return {
        "role": "assistant",
        "content": text or None,
        "tool_calls": [{"id": call.id, "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments_json}}
                       for call in calls],
    }


async def _run_tool(registry: ToolRegistryLike, call: ToolCallRequest, context: Any) -> ToolOutcome:
    result = await registry.invoke(call.name, call.arguments_json, context)
    ok = bool(getattr(result, "ok", False))
    if hasattr(result, "to_model_text"):
        content = result.to_model_text()
    elif ok:
        content = json.dumps(getattr(result, "value", None), default=str)
    else:
        content = json.dumps({"error": getattr(result, "error", "tool failed")})
    return ToolOutcome(call, ok, content, float(getattr(result, "duration_ms", 0.0)))
