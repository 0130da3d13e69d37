"""Streaming client for any OpenAI-compatible ``/chat/completions`` endpoint.

``ChatBrain.stream`` turns one streamed completion into a flat sequence of
``ChatEvent`` values: raw text deltas, whole sentences (so TTS can start on
the first one while the model is still talking), assembled tool calls, and
a final ``Done``. Remote failures of any sort become a ``ChatError`` event
rather than an exception, because a phone call must keep going when the
model is down: the caller decides what to say instead.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from .sentences import SentenceSplitter
from .sse import SseError, SseParser

__all__ = [
    "ChatBrain",
    "ChatConfig",
    "ChatError",
    "ChatEvent",
    "Done",
    "SentenceReady",
    "TextDelta",
    "ToolCallRequest",
]


@dataclass(frozen=True, slots=True)
class ChatConfig:
    base_url: str  # e.g. "http://127.0.0.1:8080/v1"; "/chat/completions" is appended
    model: str
    api_key: str | None = None
    timeout_s: float = 20  # connect, and the longest silence tolerated mid-stream
    temperature: float = 0.3
    max_tokens: int = 300


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class SentenceReady:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    id: str
    name: str
    arguments_json: str


@dataclass(frozen=True, slots=True)
class Done:
    finish_reason: str | None
    usage: dict | None = None


@dataclass(frozen=True, slots=True)
class ChatError:
    # auth | rate_limit | server | http | timeout | connection | protocol | upstream
    kind: str
    message: str
    status: int | None = None


ChatEvent = TextDelta | SentenceReady | ToolCallRequest | Done | ChatError


class _ProtocolError(Exception):
    """The server's stream does not look like a chat-completion stream."""


@dataclass(slots=True)
class _PartialToolCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class _Turn:
    """Folds parsed chunks of one completion into events (no I/O)."""

    def __init__(self) -> None:
        self.splitter = SentenceSplitter()
        self.tool_calls: dict[int, _PartialToolCall] = {}
        self.finish_reason: str | None = None
        self.usage: dict | None = None

    def on_chunk(self, chunk: Any) -> list[ChatEvent]:
        if not isinstance(chunk, dict):
            raise _ProtocolError("chunk is not a JSON object")
        if chunk.get("error"):
            # vLLM and OpenAI report failures that happen mid-stream this way
            return [ChatError("upstream", _error_message(chunk, "error in stream"))]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        events: list[ChatEvent] = []
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise _ProtocolError("choices is not a list")
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # we never ask for n > 1
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise _ProtocolError("delta is not an object")
            text = delta.get("content")
            if isinstance(text, str) and text:
                events.append(TextDelta(text))
                events.extend(SentenceReady(s) for s in self.splitter.push(text))
            for fragment in delta.get("tool_calls") or []:
                self._add_tool_fragment(fragment)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def finish(self) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        tail = self.splitter.flush()
        if tail:
            events.append(SentenceReady(tail))
        for index in sorted(self.tool_calls):
            call = self.tool_calls[index]
            if not call.name:
                raise _ProtocolError(f"tool call {index} has no function name")
            events.append(ToolCallRequest(call.id or f"call_{index}", call.name,
                                          "".join(call.arguments) or "{}"))
        events.append(Done(self.finish_reason, self.usage))
        return events

    def _add_tool_fragment(self, fragment: Any) -> None:
        if not isinstance(fragment, dict):
            raise _ProtocolError("tool call fragment is not an object")
        index = fragment.get("index", len(self.tool_calls))
        if not isinstance(index, int):
            raise _ProtocolError("tool call index is not an integer")
        call = self.tool_calls.setdefault(index, _PartialToolCall())
        if fragment.get("id"):
            call.id = fragment["id"]
        function = fragment.get("function") or {}
        if function.get("name"):
            call.name += function["name"]  # some servers stream the name in pieces too
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            call.arguments.append(arguments)
        elif isinstance(arguments, dict):
            call.arguments.append(json.dumps(arguments))  # Ollama-style object


class ChatBrain:
    def __init__(self, config: ChatConfig, http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> ChatBrain:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def request_body(self, messages: list[dict], tools: list[dict] | None) -> dict:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        if tools:
            body["tools"] = tools
        return body

    async def stream(self, messages: list[dict],
                     tools: list[dict] | None = None) -> AsyncIterator[ChatEvent]:
        url = self.config.base_url.rstrip("/") + "/chat/completions"
        headers = {"Accept": "text/event-stream"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        try:
            async with self._http.stream(
                "POST", url, json=self.request_body(messages, tools), headers=headers,
                timeout=httpx.Timeout(self.config.timeout_s),
            ) as response:
                if response.status_code != 200:
                    yield _http_error(response.status_code, await response.aread())
                    return
                async for event in self._events(response):
                    yield event
        except httpx.TimeoutException as exc:
            yield ChatError("timeout", f"no answer within {self.config.timeout_s}s "
                                       f"({type(exc).__name__})")
        except httpx.HTTPError as exc:
            yield ChatError("connection", f"{type(exc).__name__}: {exc}")

    async def _events(self, response: httpx.Response) -> AsyncIterator[ChatEvent]:
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            yield ChatError("protocol", f"expected an event stream, got {content_type!r}",
                            response.status_code)
            return
        parser = SseParser()
        turn = _Turn()
        try:
            async for chunk in response.aiter_bytes():
                for sse in parser.feed(chunk):
                    if sse.is_done:
                        for event in turn.finish():
                            yield event
                        return
                    for event in turn.on_chunk(json.loads(sse.data)):
                        yield event
                        if isinstance(event, ChatError):
                            return
            if turn.finish_reason is None:
                raise _ProtocolError("stream ended before the reply was finished")
            for event in turn.finish():  # finished but no [DONE]: tolerate it
                yield event
        except (_ProtocolError, SseError, json.JSONDecodeError) as exc:
            yield ChatError("protocol", f"malformed stream: {exc}")


def _http_error(status: int, raw: bytes) -> ChatError:
    if status in (401, 403):
        kind = "auth"
    elif status == 429:
        kind = "rate_limit"
    elif status >= 500:
        kind = "server"
    else:
        kind = "http"
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    text = raw.decode("utf-8", errors="replace").strip()[:300]
    return ChatError(kind, _error_message(body, text or f"HTTP {status}"), status)


def _error_message(body: Any, fallback: str) -> str:
    """Find the message in the error shapes OpenAI-compatible servers use."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
        for key in ("message", "detail"):
            if isinstance(body.get(key), str):
                return body[key]
    return fallback
