"""Optional LLM brain: any OpenAI-compatible chat-completions endpoint."""

from .chat import (
    ChatBrain,
    ChatConfig,
    ChatError,
    ChatEvent,
    Done,
    SentenceReady,
    TextDelta,
    ToolCallRequest,
)
from .sentences import SentenceSplitter
from .sse import SseEvent, SseParser
from .turn import ToolOutcome, TurnEvent, run_turn

__all__ = [
    "ChatBrain",
    "ChatConfig",
    "ChatError",
    "ChatEvent",
    "Done",
    "SentenceReady",
    "SentenceSplitter",
    "SseEvent",
    "SseParser",
    "TextDelta",
    "ToolCallRequest",
    "ToolOutcome",
    "TurnEvent",
    "run_turn",
]
