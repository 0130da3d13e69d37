"""A scriptable stand-in for the OpenAI chat-completions streaming API.

It is a real HTTP/1.1 server on 127.0.0.1 (asyncio streams, chunked
transfer-encoding) so clients are tested over actual sockets. Each request
to ``POST /v1/chat/completions`` pops the next scripted reply; with none
scripted it answers 500 so a missing script fails loudly. Streams look like
OpenAI's: ``chat.completion.chunk`` objects as ``data:`` events, tool-call
arguments split over several chunks, an optional usage chunk with empty
``choices``, then ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakeOpenAI", "RecordedRequest"]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 429: "Too Many Requests", 500: "Internal Server Error"}

# Default messages and types shaped like OpenAI's own error bodies.
_ERRORS = {
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
}


@dataclass(frozen=True)
class _Text:
    steps: tuple[str | float, ...]  # a float is a pause in seconds


@dataclass(frozen=True)
class _ToolCalls:
    calls: tuple[tuple[str, str, str], ...]  # (id, name, arguments_json)
    fragments: int


@dataclass(frozen=True)
class _Error:
    status: int
    message: str | None


@dataclass(frozen=True)
class _Stall:
    after_first_chunk: bool


@dataclass(frozen=True)
class _Raw:
    body: bytes


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


@dataclass
class FakeOpenAI:
    api_key: str | None = "sk-test"
    model: str = "fake-model"
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._replies: deque[Any] = deque()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    # -- scripting ---------------------------------------------------------
    def reply_text(self, *steps: str | float) -> None:
        """Stream each string as one content delta; a number pauses that long."""
        self._replies.append(_Text(steps))

    def reply_tool_call(self, name: str, arguments: dict | str, *,
                        call_id: str = "call_0", fragments: int = 3) -> None:
        self.reply_tool_calls([(call_id, name, arguments)], fragments=fragments)

    def reply_tool_calls(self, calls: list[tuple[str, str, dict | str]], *,
                         fragments: int = 3) -> None:
        normalized = tuple((call_id, name, args if isinstance(args, str) else json.dumps(args))
                           for call_id, name, args in calls)
        self._replies.append(_ToolCalls(normalized, fragments))

    def reply_error(self, status: int, message: str | None = None) -> None:
        self._replies.append(_Error(status, message))

    def reply_stall(self, *, after_first_chunk: bool = False) -> None:
        """Accept the request and then never finish answering."""
        self._replies.append(_Stall(after_first_chunk))

    def reply_raw(self, body: bytes) -> None:
        """Send these exact bytes as the event-stream body (for malformed input)."""
        self._replies.append(_Raw(body))

    # -- lifecycle ---------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- HTTP --------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; that is its right
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.rstrip("\r\n").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        raw_body = await reader.readexactly(int(headers.get("content-length", "0")))
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = None
        self.requests.append(RecordedRequest(method, target, headers, body))

        if target.split("?")[0] != "/v1/chat/completions":
            return await self._send_error(writer, 404, "Unknown URL.", "invalid_request_error")
        if method != "POST":
            return await self._send_error(writer, 405, "Use POST.", "invalid_request_error")
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return await self._send_error(writer, 401)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return await self._send_error(writer, 400, "Body must be JSON with messages.",
                                          "invalid_request_error")
        if body.get("stream") is not True:
            return await self._send_error(writer, 400, "This fake only streams.",
                                          "invalid_request_error")
        reply = self._replies.popleft() if self._replies else _Error(500, "No reply scripted.")
        if isinstance(reply, _Error):
            return await self._send_error(writer, reply.status, reply.message)
        await self._stream(reader, writer, reply, body)

    async def _send_error(self, writer: asyncio.StreamWriter, status: int,
                          message: str | None = None, error_type: str | None = None) -> None:
        default_message, default_type, code = _ERRORS.get(status, ("Error.", "invalid_request_error", None))
        payload = json.dumps({"error": {"message": message or default_message,
                                        "type": error_type or default_type,
                                        "param": None, "code": code}}).encode()
        writer.write(self._status_line(status) + (
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n").encode() + payload)
        await writer.drain()

    @staticmethod
    def _status_line(status: int) -> bytes:
        return f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n".encode()

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      reply: Any, body: dict) -> None:
        writer.write(self._status_line(200) + (
            "Content-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode())
        await writer.drain()
        if isinstance(reply, _Raw):
            await self._send_chunk(writer, reply.body)
            return await self._end(writer)
        chunks = _ChunkFactory(self.model, body)
        if isinstance(reply, _Stall):
            if reply.after_first_chunk:
                await self._send_event(writer, chunks.make({"role": "assistant", "content": ""}))
            await reader.read()  # wait until the client gives up
            return
        if isinstance(reply, _Text):
            await self._send_event(writer, chunks.make({"role": "assistant", "content": ""}))
            for step in reply.steps:
                if isinstance(step, str):
                    chunks.completion_tokens += 1
                    await self._send_event(writer, chunks.make({"content": step}))
                else:
                    await asyncio.sleep(step)
            finish_reason = "stop"
        else:
            await self._send_event(writer, chunks.make({"role": "assistant", "content": None}))
            for index, (call_id, name, arguments) in enumerate(reply.calls):
                await self._send_event(writer, chunks.make({"tool_calls": [{
                    "index": index, "id": call_id, "type": "function",
                    "function": {"name": name, "arguments": ""}}]}))
                for piece in _split(arguments, reply.fragments):
                    chunks.completion_tokens += 1
                    await self._send_event(writer, chunks.make({"tool_calls": [{
                        "index": index, "function": {"arguments": piece}}]}))
            finish_reason = "tool_calls"
        await self._send_event(writer, chunks.make({}, finish_reason))
        if chunks.include_usage:
            await self._send_event(writer, chunks.usage_chunk())
        await self._send_chunk(writer, b"data: [DONE]\n\n")
        await self._end(writer)

    async def _send_event(self, writer: asyncio.StreamWriter, chunk: dict) -> None:
        await self._send_chunk(writer, b"data: " + json.dumps(chunk).encode() + b"\n\n")

    @staticmethod
    async def _send_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    @staticmethod
    async def _end(writer: asyncio.StreamWriter) -> None:
        writer.write(b"0\r\n\r\n")
        await writer.drain()


class _ChunkFactory:
    """Builds chat.completion.chunk objects sharing one id, like OpenAI does."""

    def __init__(self, model: str, body: dict) -> None:
        self.id = f"chatcmpl-fake{time.monotonic_ns() % 10**9}"
        self.created = int(time.time())
        self.model = body.get("model") or model
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.prompt_tokens = sum(len(str(m.get("content") or "").split())
                                 for m in body["messages"] if isinstance(m, dict))
        self.completion_tokens = 0

    def _base(self) -> dict:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": "fp_fake"}

    def make(self, delta: dict, finish_reason: str | None = None) -> dict:
        chunk = self._base()
        chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish_reason}]
        if self.include_usage:
            chunk["usage"] = None  # OpenAI sends null usage on every content chunk
        return chunk

    def usage_chunk(self) -> dict:
        chunk = self._base()
        chunk["choices"] = []
        chunk["usage"] = {"prompt_tokens": self.prompt_tokens,
                          "completion_tokens": self.completion_tokens,
                          "total_tokens": self.prompt_tokens + self.completion_tokens}
        return chunk


def _split(text: str, parts: int) -> list[str]:
    """Cut text into about `parts` pieces, the way a tokenizer would dribble it."""
    if not text:
        return []
    size = max(1, -(-len(text) // max(1, parts)))
    return [text[i:i + size] for i in range(0, len(text), size)]
