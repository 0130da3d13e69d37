"""A protocol-faithful stand-in for the OpenAI Realtime API (GA), over a real WebSocket.

It follows the GA event protocol (``session.type="realtime"``, ``response.output_audio.*``,
``conversation.item.added/done``) closely enough that the real adapter cannot tell it from
the service on the paths a phone agent uses:

- the upgrade on ``/v1/realtime?model=...`` needs ``Authorization: Bearer <key>``
  (HTTP 401 with OpenAI's ``invalid_api_key`` body otherwise; 400 without ``model``);
- ``session.created`` on connect; ``session.update`` validated (``type`` must be
  ``realtime``, unknown parameters and chat-completions shaped tools are rejected as the
  API does) and answered with the full ``session.updated``;
- server VAD by energy on the appended audio (:mod:`.openai_vad`), with
  ``speech_started/stopped`` (``audio_start_ms``/``audio_end_ms``), ``committed``, the user
  item, and its input transcription (only if transcription is configured, as in the API);
- responses scripted by :class:`~.openai_script.OpenAIRealtimeScript`: ``response.created``,
  output items, content parts, audio and transcript deltas generated faster than real time,
  ``response.done`` with usage; function calls that wait for ``function_call_output``;
- ``response.cancel`` (``response.done`` status ``cancelled``; ``response_cancel_not_active``
  when nothing generates), ``conversation.item.truncate`` validated against the item's audio,
  ``conversation_already_has_active_response`` on an overlapping ``response.create``;
- bad JSON or an unknown event type is an ``error`` event, never a crash;
- an optional session limit: the ``session_expired`` error, then close 1001, as the API
  does at 60 minutes.

Token counts in ``usage`` are estimates (4 characters or 50 ms of audio a token).

Run outside tests: ``python -m callbridge.standins.openai_realtime --port 8765 --key test``.

One module over the usual size because it is one server's session state machine: its event
handlers share the conversation, response and audio-buffer state, and reading them together
is how the stand-in is checked against the API reference.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import itertools
import json
import logging
import secrets
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..media.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from .openai_script import Answer, FunctionCall, OpenAIRealtimeScript, Reply, ScriptedError
from .openai_vad import EnergyVad

__all__ = ["OpenAIRealtimeStandin", "SessionRecord", "OpenAIRealtimeScript", "Reply", "FunctionCall", "ScriptedError"]

log = logging.getLogger("callbridge.standins.openai")

PATH = "/v1/realtime"
PCM_RATE = 24_000
G711_RATE = 8_000
TONE_HZ = 440.0
TONE_AMPLITUDE = 6000
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
CHARS_PER_TOKEN = 4
AUDIO_MS_PER_TOKEN = 50
SESSION_KEYS = frozenset({"type", "model", "output_modalities", "instructions", "audio", "include", "tracing",
                          "tools", "tool_choice", "max_output_tokens", "truncation", "prompt"})
TOOL_KEYS = frozenset({"type", "name", "description", "parameters"})
FORMATS = {"audio/pcm": PCM_RATE, "audio/pcmu": G711_RATE, "audio/pcma": G711_RATE}
CONTENT_TYPES = {"user": {"input_text", "input_audio"}, "assistant": {"output_text", "output_audio"},
                 "system": {"input_text"}}


@dataclass
class SessionRecord:
    """Everything one session received, for a test to inspect."""

    model: str
    extensions: str | None = None  # the Sec-WebSocket-Extensions the client offered
    events: list[dict[str, Any]] = field(default_factory=list)  # client events in order (bad JSON as {"raw": ...})
    session: dict[str, Any] = field(default_factory=dict)  # the effective configuration
    history: list[dict[str, Any]] = field(default_factory=list)  # items created before the first audio append
    input_audio: bytearray = field(default_factory=bytearray)  # exactly the bytes appended, in the wire format
    truncations: list[dict[str, Any]] = field(default_factory=list)
    function_outputs: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)  # server events, in order
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def received(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    def types(self) -> list[str]:
        return [str(e.get("type")) for e in self.events]


class _ClientError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


@dataclass
class _Active:
    response_id: str
    task: asyncio.Task[None] | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = "client_cancelled"
    output: list[dict[str, Any]] = field(default_factory=list)


def _default_session(model: str) -> dict[str, Any]:
    return {
        "type": "realtime", "object": "realtime.session", "id": f"sess_{secrets.token_hex(8)}", "model": model,
        "output_modalities": ["audio"], "instructions": "You are a helpful assistant.",
        "tools": [], "tool_choice": "auto", "max_output_tokens": "inf", "tracing": None, "truncation": "auto",
        "prompt": None, "include": None,
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": PCM_RATE}, "transcription": None,
                      "noise_reduction": None,
                      "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                         "silence_duration_ms": 500, "create_response": True,
                                         "interrupt_response": True, "idle_timeout_ms": None}},
            "output": {"format": {"type": "audio/pcm", "rate": PCM_RATE}, "voice": "alloy", "speed": 1.0},
        },
    }


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """Only the fields present in session.update change (API reference: session.update)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key not in ("format", "turn_detection"):
            _merge(into[key], value)
        else:
            into[key] = value


class _Session:
    """One connection: the GA protocol state machine and its scripted model."""

    def __init__(self, ws: ServerConnection, record: SessionRecord, script: OpenAIRealtimeScript) -> None:
        self.ws = ws
        self.record = record
        self.script = script
        self.config = _default_session(record.model)
        self._ids = itertools.count(1)
        self._tag = secrets.token_hex(4)
        self._conversation: list[str] = []  # item ids in order
        self._items: dict[str, dict[str, Any]] = {}
        self._audio_ms: dict[str, int] = {}  # assistant item -> ms of audio generated
        self._input_ms = 0
        self._vad = self._make_vad()
        self._speech_item: str | None = None
        self._active: _Active | None = None
        self._follow_ups: dict[str, Reply] = {}  # call_id -> reply once its output arrives
        self._ready: list[Reply] = []  # follow-ups whose output arrived, spoken on response.create
        self._audio_seen = False
        self._limit: asyncio.Task[None] | None = None
        self._expired = False

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{self._tag}{next(self._ids):06d}"

    # -- connection -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._send({"type": "session.created", "session": self.config})
            if self.script.session_limit_s is not None:
                self._limit = asyncio.get_running_loop().create_task(self._expire(self.script.session_limit_s))
            async for raw in self.ws:
                await self._receive(raw)
        except ConnectionClosed:
            pass
        finally:
            for task in (self._limit, self._active.task if self._active else None):
                if task is not None:
                    task.cancel()
            self.record.closed.set()

    async def _send(self, event: dict[str, Any]) -> None:
        event = {"event_id": self._id("event"), **event}
        self.record.sent.append(event)
        await self.ws.send(json.dumps(event))

    async def _error(self, code: str | None, message: str, *, type: str = "invalid_request_error",
                     param: str | None = None, event_id: str | None = None) -> None:
        await self._send({"type": "error", "error": {"type": type, "code": code, "message": message,
                                                     "param": param, "event_id": event_id}})

    async def _receive(self, raw: str | bytes) -> None:
        if self._expired:
            return
        try:
            event = json.loads(raw)
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            self.record.events.append({"raw": raw if isinstance(raw, str) else raw.decode("latin-1")})
            log.warning("stand-in: undecodable client event")
            await self._error("invalid_json", "We could not parse the JSON body of your request.")
            return
        self.record.events.append(event)
        handler = self._HANDLERS.get(str(event.get("type")))
        try:
            if handler is None:
                raise _ClientError("invalid_value", f"Invalid value: '{event.get('type')}'. Unknown event type.",
                                   "type")
            await handler(self, event)
        except _ClientError as exc:
            log.info("stand-in: rejected %s: %s", event.get("type"), exc.message)
            await self._error(exc.code, exc.message, param=exc.param, event_id=event.get("event_id"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("stand-in: malformed %s: %r", event.get("type"), exc)
            await self._error("invalid_value", f"Malformed event: {exc}", event_id=event.get("event_id"))

    # -- session --------------------------------------------------------------------------

    async def _session_update(self, event: dict[str, Any]) -> None:
        update = event.get("session")
        if not isinstance(update, dict):
            raise _ClientError("missing_required_parameter", "Missing required parameter: 'session'.", "session")
        if update.get("type") != "realtime":
            raise _ClientError("missing_required_parameter", "Missing required parameter: 'session.type'.",
                               "session.type")
        for key in update:
            if key not in SESSION_KEYS:
                raise _ClientError("unknown_parameter", f"Unknown parameter: 'session.{key}'.", f"session.{key}")
        for index, tool in enumerate(update.get("tools") or []):
            for key in tool:
                if key not in TOOL_KEYS:
                    raise _ClientError("unknown_parameter", f"Unknown parameter: 'session.tools[{index}].{key}'.",
                                       f"session.tools[{index}].{key}")
            if tool.get("type") != "function" or not tool.get("name"):
                raise _ClientError("missing_required_parameter",
                                   f"Missing required parameter: 'session.tools[{index}].name'.",
                                   f"session.tools[{index}].name")
        for direction in ("input", "output"):
            fmt = ((update.get("audio") or {}).get(direction) or {}).get("format")
            if fmt is None:
                continue
            if fmt.get("type") not in FORMATS:
                raise _ClientError("invalid_value", f"Invalid value: '{fmt.get('type')}'.",
                                   f"session.audio.{direction}.format.type")
            if fmt.get("type") == "audio/pcm" and fmt.get("rate", PCM_RATE) != PCM_RATE:
                raise _ClientError("invalid_value", "audio/pcm supports only rate 24000.",
                                   f"session.audio.{direction}.format.rate")
        _merge(self.config, update)
        self._vad = self._make_vad()
        self.record.session = json.loads(json.dumps(self.config))
        await self._send({"type": "session.updated", "session": self.config})

    def _format(self, direction: str) -> str:
        return str(self.config["audio"][direction]["format"]["type"])

    def _turn_detection(self) -> dict[str, Any] | None:
        return self.config["audio"]["input"].get("turn_detection")

    def _make_vad(self) -> EnergyVad | None:
        detection = self._turn_detection()
        if not detection or detection.get("type") != "server_vad":
            return None
        return EnergyVad(FORMATS[self._format("input")], threshold=float(detection.get("threshold", 0.5)),
                         prefix_padding_ms=int(detection.get("prefix_padding_ms", 300)),
                         silence_duration_ms=int(detection.get("silence_duration_ms", 500)))

    async def _expire(self, after_s: float) -> None:
        await asyncio.sleep(after_s)
        minutes = f"{after_s / 60:g}"
        message = f"Your session hit the maximum duration of {minutes} minutes."
        # From here the session takes nothing more, as the API's does; the client hears of it at
        # once, with nothing awaited in between that would widen the window where input is lost.
        self._expired = True
        await self._error("session_expired", message)
        await self._stop_active("turn_detected", announce=False)
        await self.ws.close(1001, message)

    # -- input audio ----------------------------------------------------------------------

    async def _append(self, event: dict[str, Any]) -> None:
        try:
            data = base64.b64decode(event["audio"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _ClientError("invalid_value", "Invalid 'audio'. Expected base64-encoded audio.", "audio") from exc
        self._audio_seen = True
        self.record.input_audio += data
        fmt = self._format("input")
        if fmt == "audio/pcm":
            pcm = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")
        else:
            pcm = (ulaw_decode if fmt == "audio/pcmu" else alaw_decode)(data)
        self._input_ms += len(pcm) * 1000 // FORMATS[fmt]
        if self._vad is None:
            return
        for boundary in self._vad.feed(pcm):
            if boundary.kind == "started":
                await self._speech_started(boundary.ms)
            else:
                await self._speech_stopped(boundary.ms)

    async def _speech_started(self, ms: int) -> None:
        self._speech_item = self._id("item")
        await self._send({"type": "input_audio_buffer.speech_started", "audio_start_ms": ms,
                          "item_id": self._speech_item})
        detection = self._turn_detection() or {}
        if detection.get("interrupt_response", True):
            await self._stop_active("turn_detected")

    async def _speech_stopped(self, ms: int) -> None:
        item_id = self._speech_item or self._id("item")
        self._speech_item = None
        await self._send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": ms, "item_id": item_id})
        await self._commit(item_id)
        turn = self.script.next_turn()
        transcription = self.config["audio"]["input"].get("transcription")
        if transcription and turn.transcript is not None:
            await self._send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
                              "content_index": 0, "transcript": turn.transcript,
                              "usage": {"type": "duration", "seconds": ms / 1000}})
        detection = self._turn_detection() or {}
        if turn.answer is not None and detection.get("create_response", True):
            if self._active is not None:
                log.info("stand-in: VAD turn while a response is active; not answering it")
                return
            self._start_response(turn.answer)

    async def _commit(self, item_id: str) -> None:
        previous = self._conversation[-1] if self._conversation else None
        await self._send({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous})
        item = {"id": item_id, "object": "realtime.item", "type": "message", "status": "completed", "role": "user",
                "content": [{"type": "input_audio", "transcript": None}]}
        await self._add_item(item)

    async def _commit_event(self, event: dict[str, Any]) -> None:
        if self._input_ms == 0:
            raise _ClientError("input_audio_buffer_commit_empty", "Error committing input audio buffer: empty.")
        await self._commit(self._id("item"))

    async def _clear(self, event: dict[str, Any]) -> None:
        await self._send({"type": "input_audio_buffer.cleared"})

    # -- conversation ---------------------------------------------------------------------

    async def _add_item(self, item: dict[str, Any]) -> None:
        previous = self._conversation[-1] if self._conversation else None
        self._conversation.append(item["id"])
        self._items[item["id"]] = item
        await self._send({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        await self._send({"type": "conversation.item.done", "previous_item_id": previous, "item": item})

    async def _item_create(self, event: dict[str, Any]) -> None:
        received = event["item"]  # recorded as sent; `item` becomes the server's copy
        item = json.loads(json.dumps(received))
        kind = item.get("type")
        if kind == "message":
            role = item.get("role")
            allowed = CONTENT_TYPES.get(str(role))
            if allowed is None:
                raise _ClientError("invalid_value", f"Invalid value: '{role}'.", "item.role")
            for index, part in enumerate(item.get("content") or []):
                if part.get("type") not in allowed:
                    raise _ClientError("invalid_value", f"Invalid value: '{part.get('type')}'. Supported values "
                                       f"are: {', '.join(sorted(allowed))}.", f"item.content[{index}].type")
        elif kind == "function_call_output":
            if not item.get("call_id") or "output" not in item:
                raise _ClientError("missing_required_parameter", "Missing required parameter: 'item.call_id'.",
                                   "item.call_id")
            self.record.function_outputs.append(received)
            follow_up = self._follow_ups.pop(item["call_id"], None)
            if follow_up is not None:
                self._ready.append(follow_up)
        elif kind != "function_call":
            raise _ClientError("invalid_value", f"Invalid value: '{kind}'.", "item.type")
        if not self._audio_seen:
            self.record.history.append(received)
        item.setdefault("id", self._id("item"))
        item.update(object="realtime.item", status="completed")
        await self._add_item(item)

    async def _truncate(self, event: dict[str, Any]) -> None:
        item_id, end_ms = event["item_id"], int(event["audio_end_ms"])
        item = self._items.get(item_id)
        if item is None or item.get("role") != "assistant":
            raise _ClientError("invalid_value", f"Only assistant messages can be truncated: '{item_id}'.", "item_id")
        if int(event.get("content_index", 0)) != 0:
            raise _ClientError("invalid_value", "Invalid 'content_index'.", "content_index")
        if end_ms < 0 or end_ms > self._audio_ms.get(item_id, 0):
            raise _ClientError("invalid_value", f"audio_end_ms {end_ms} is greater than the audio duration "
                               f"{self._audio_ms.get(item_id, 0)} ms.", "audio_end_ms")
        self.record.truncations.append({"item_id": item_id, "content_index": 0, "audio_end_ms": end_ms})
        for part in item.get("content", []):
            part["transcript"] = ""  # the API drops the transcript of truncated audio
        await self._send({"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0,
                          "audio_end_ms": end_ms})

    # -- responses ------------------------------------------------------------------------

    async def _response_create(self, event: dict[str, Any]) -> None:
        if self._active is not None:
            raise _ClientError("conversation_already_has_active_response",
                               "Conversation already has an active response in progress.")
        if self._ready:
            self._start_response(self._ready.pop(0))
            return
        turn = self.script.next_turn()
        self._start_response(turn.answer or Reply("(unscripted)"))

    async def _response_cancel(self, event: dict[str, Any]) -> None:
        if self._active is None:
            raise _ClientError("response_cancel_not_active", "Cancellation failed: no active response found.")
        await self._stop_active("client_cancelled")

    async def _stop_active(self, reason: str, *, announce: bool = True) -> None:
        active = self._active
        if active is None or active.task is None:
            return
        active.reason = reason
        active.cancel.set()
        if not announce:
            active.task.cancel()
        try:
            await active.task
        except asyncio.CancelledError:
            pass

    def _start_response(self, answer: Answer) -> None:
        active = _Active(self._id("resp"))
        self._active = active
        active.task = asyncio.get_running_loop().create_task(self._respond(active, answer))

    def _response_body(self, active: _Active, status: str, usage: dict[str, Any] | None,
                       details: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"object": "realtime.response", "id": active.response_id, "status": status,
                "status_details": details, "output": active.output, "conversation_id": f"conv_{self._tag}",
                "output_modalities": ["audio"], "max_output_tokens": "inf",
                "audio": {"output": {"format": self.config["audio"]["output"]["format"],
                                     "voice": self.config["audio"]["output"]["voice"]}},
                "usage": usage, "metadata": None}

    async def _respond(self, active: _Active, answer: Answer) -> None:
        try:
            await self._send({"type": "response.created", "response": self._response_body(active, "in_progress", None)})
            status, details = "completed", None
            spoken_ms, text = 0, ""
            if isinstance(answer, Reply):
                spoken_ms = await self._speak(active, answer)
                text = answer.text
            elif isinstance(answer, FunctionCall):
                await self._call(active, answer)
                text = answer.arguments
            else:
                if answer.partial_audio_ms:
                    spoken_ms = await self._speak(active, Reply("...", answer.partial_audio_ms))
                if not active.cancel.is_set():
                    await self._error(answer.code, answer.message, type=answer.type)
                    status, details = "failed", {"type": "failed", "error": {"type": answer.type,
                                                                            "code": answer.code}}
            if active.cancel.is_set():
                status, details = "cancelled", {"type": "cancelled", "reason": active.reason}
            if self._active is active:
                self._active = None  # before response.done: the client may answer it at once
            await self._send({"type": "response.done",
                              "response": self._response_body(active, status, self._usage(text, spoken_ms), details)})
            if isinstance(answer, ScriptedError) and answer.close:
                await self.ws.close(1011, "internal error")
        except ConnectionClosed:
            pass
        finally:
            if self._active is active:
                self._active = None

    async def _output_item(self, active: _Active, item: dict[str, Any]) -> int:
        index = len(active.output)
        active.output.append(item)
        await self._send({"type": "response.output_item.added", "response_id": active.response_id,
                          "output_index": index, "item": item})
        previous = self._conversation[-1] if self._conversation else None
        self._conversation.append(item["id"])
        self._items[item["id"]] = item
        await self._send({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        return index

    async def _finish_item(self, active: _Active, index: int, item: dict[str, Any]) -> None:
        await self._send({"type": "response.output_item.done", "response_id": active.response_id,
                          "output_index": index, "item": item})
        await self._send({"type": "conversation.item.done", "item": item})

    async def _speak(self, active: _Active, reply: Reply) -> int:
        """One assistant audio item; returns the ms of audio sent before any cancel."""
        audio_ms = reply.audio_ms
        item_id = self._id("item")
        item: dict[str, Any] = {"id": item_id, "object": "realtime.item", "type": "message", "status": "in_progress",
                                "role": "assistant", "content": []}
        index = await self._output_item(active, item)
        where = {"response_id": active.response_id, "item_id": item_id, "output_index": index, "content_index": 0}
        await self._send({"type": "response.content_part.added", **where, "part": {"type": "audio", "transcript": ""}})
        self._audio_ms[item_id] = 0
        words = reply.text.split()
        chunks = max(1, -(-audio_ms // reply.chunk_ms))
        said = 0
        for chunk in range(chunks):
            if active.cancel.is_set():
                break
            due = len(words) * (chunk + 1) // chunks
            if due > said:
                delta = (" " if said else "") + " ".join(words[said:due])
                said = due
                await self._send({"type": "response.output_audio_transcript.delta", **where, "delta": delta})
            ms = min(reply.chunk_ms, audio_ms - chunk * reply.chunk_ms)
            audio = self._tone(self._audio_ms[item_id], ms)
            await self._send({"type": "response.output_audio.delta", **where,
                              "delta": base64.b64encode(audio).decode("ascii")})
            self._audio_ms[item_id] += ms
            try:
                await asyncio.wait_for(active.cancel.wait(), ms / 1000 / reply.speed)
            except TimeoutError:
                pass
        transcript = " ".join(words[:said]) if active.cancel.is_set() else reply.text
        await self._send({"type": "response.output_audio.done", **where})
        await self._send({"type": "response.output_audio_transcript.done", **where, "transcript": transcript})
        part = {"type": "audio", "transcript": transcript}
        await self._send({"type": "response.content_part.done", **where, "part": part})
        item.update(status="incomplete" if active.cancel.is_set() else "completed",
                    content=[{"type": "output_audio", "transcript": transcript}])
        await self._finish_item(active, index, item)
        return self._audio_ms[item_id]

    async def _call(self, active: _Active, call: FunctionCall) -> None:
        call_id = self._id("call")
        item: dict[str, Any] = {"id": self._id("item"), "object": "realtime.item", "type": "function_call",
                                "status": "in_progress", "name": call.name, "call_id": call_id, "arguments": ""}
        index = await self._output_item(active, item)
        where = {"response_id": active.response_id, "item_id": item["id"], "output_index": index, "call_id": call_id}
        half = len(call.arguments) // 2
        for piece in (call.arguments[:half], call.arguments[half:]):
            await self._send({"type": "response.function_call_arguments.delta", **where, "delta": piece})
        await self._send({"type": "response.function_call_arguments.done", **where, "arguments": call.arguments})
        item.update(status="completed", arguments=call.arguments)
        await self._finish_item(active, index, item)
        self._follow_ups[call_id] = call.then

    def _tone(self, start_ms: int, ms: int) -> bytes:
        fmt = self._format("output")
        rate = FORMATS[fmt]
        t = (np.arange(rate * ms // 1000) + rate * start_ms // 1000) / rate
        pcm = (TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)
        if fmt == "audio/pcm":
            return pcm.astype("<i2").tobytes()
        return (ulaw_encode if fmt == "audio/pcmu" else alaw_encode)(pcm)

    def _usage(self, text: str, audio_ms: int) -> dict[str, Any]:
        context_chars = len(str(self.config.get("instructions", ""))) + sum(
            len(str(part.get("text") or part.get("transcript") or ""))
            for item in self._items.values() for part in item.get("content", []) or [])
        text_in, audio_in = context_chars // CHARS_PER_TOKEN, self._input_ms // AUDIO_MS_PER_TOKEN
        text_out, audio_out = len(text) // CHARS_PER_TOKEN + 1, audio_ms // AUDIO_MS_PER_TOKEN
        return {"total_tokens": text_in + audio_in + text_out + audio_out,
                "input_tokens": text_in + audio_in, "output_tokens": text_out + audio_out,
                "input_token_details": {"text_tokens": text_in, "audio_tokens": audio_in, "cached_tokens": 0},
                "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out}}

    _HANDLERS = {
        "session.update": _session_update,
        "input_audio_buffer.append": _append,
        "input_audio_buffer.commit": _commit_event,
        "input_audio_buffer.clear": _clear,
        "conversation.item.create": _item_create,
        "conversation.item.truncate": _truncate,
        "response.create": _response_create,
        "response.cancel": _response_cancel,
    }


class OpenAIRealtimeStandin:
    """``async with OpenAIRealtimeStandin(script, key="test") as server:`` then connect to ``server.url``."""

    def __init__(self, script: OpenAIRealtimeScript | None = None, *, key: str = "test", host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.script = script or OpenAIRealtimeScript()
        self.key = key
        self.host = host
        self.port = port
        self.sessions: list[SessionRecord] = []
        self.rejected: list[int] = []  # HTTP statuses of refused upgrades
        self._server: Server | None = None
        self._new_session = asyncio.Event()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{PATH}"

    async def start(self) -> None:
        self._server = await serve(self._handle, self.host, self.port, process_request=self._check,
                                   max_size=MAX_MESSAGE_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> OpenAIRealtimeStandin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def session(self, index: int = 0, timeout: float = 5.0) -> SessionRecord:
        """The ``index``-th session, waiting for it to connect."""
        async with asyncio.timeout(timeout):
            while len(self.sessions) <= index:
                self._new_session.clear()
                await self._new_session.wait()
        return self.sessions[index]

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        status: HTTPStatus | None = None
        error: tuple[str, str, str | None] | None = None
        if url.path != PATH:
            status, error = HTTPStatus.NOT_FOUND, ("Invalid URL.", "invalid_request_error", None)
        elif request.headers.get("Authorization", "") != f"Bearer {self.key}":
            status, error = HTTPStatus.UNAUTHORIZED, ("Incorrect API key provided.", "invalid_request_error",
                                                      "invalid_api_key")
        elif not parse_qs(url.query).get("model"):
            status, error = HTTPStatus.BAD_REQUEST, ("Missing required parameter: 'model'.",
                                                     "invalid_request_error", "missing_required_parameter")
        if status is None or error is None:
            return None
        self.rejected.append(int(status))
        body = json.dumps({"error": {"message": error[0], "type": error[1], "code": error[2], "param": None}})
        response = connection.respond(status, body + "\n")
        response.headers["Content-Type"] = "application/json"
        return response

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        model = parse_qs(urlsplit(ws.request.path).query)["model"][0]
        record = SessionRecord(model, extensions=ws.request.headers.get("Sec-WebSocket-Extensions"))
        self.sessions.append(record)
        self._new_session.set()
        await _Session(ws, record, self.script).run()


async def _serve_forever(host: str, port: int, key: str, script: OpenAIRealtimeScript) -> None:
    async with OpenAIRealtimeStandin(script, key=key, host=host, port=port) as server:
        print(f"OpenAI Realtime stand-in on {server.url} (key {key!r})", flush=True)
        await asyncio.Future()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local stand-in for the OpenAI Realtime API (GA).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--key", default="test", help="the API key clients must present as a Bearer token")
    parser.add_argument("--reply", action="append", default=[], help="a scripted reply, in order (repeatable)")
    parser.add_argument("--audio-ms", type=int, default=1500, help="audio length of each scripted reply")
    parser.add_argument("--session-limit-s", type=float, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    script = OpenAIRealtimeScript(session_limit_s=args.session_limit_s)
    for text in args.reply:
        script.reply(text, audio_ms=args.audio_ms, transcript="(caller speech)")
    try:
        asyncio.run(_serve_forever(args.host, args.port, args.key, script))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
