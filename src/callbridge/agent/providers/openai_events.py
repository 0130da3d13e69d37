"""Sans-IO core of the OpenAI Realtime adapter: client events out, agent events in.

Follows the GA Realtime API (``gpt-realtime``, the ``session.type = "realtime"``
session shape, API reference of Aug 2025 onwards) - not the beta
(``OpenAI-Beta: realtime=v1``) shape with ``input_audio_format`` and
``response.audio.delta``.

Nothing here touches a socket or a clock: :func:`session_update` and friends
build the JSON events a client sends, and :class:`ServerEventInterpreter`
turns the server's JSON events into :mod:`callbridge.agent.realtime` events,
keeping the little state that needs (which response is generating, which
output item carries audio, how much of it arrived).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ...media.codecs.g711 import ulaw_decode, ulaw_encode
from ..realtime import (
    ErrorCode,
    AgentAudio,
    AgentEvent,
    AgentTranscript,
    BackendError,
    SessionSetup,
    SpeechStarted,
    ToolCall,
    TurnEnded,
    Usage,
    UserTranscript,
)

log = logging.getLogger("callbridge.agent.openai")

AudioFormatName = Literal["pcm16", "g711_ulaw"]

PCM16_RATE = 24_000  # GA `audio/pcm` is 24 kHz only (RealtimeAudioFormats: rate "Always 24000")
ULAW_RATE = 8_000  # GA `audio/pcmu` is G.711 µ-law, narrowband

# Error codes the API sends for races the adapter cannot avoid: the server may finish a
# response between our decision to cancel it and the cancel arriving, or start one on its
# own VAD just as we ask for one (that response then sees our item anyway).
BENIGN_ERROR_CODES = frozenset({"response_cancel_not_active", "conversation_already_has_active_response"})


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """One wire format: its GA ``format`` object and the int16 <-> bytes conversion."""

    name: AudioFormatName
    rate: int
    wire: dict[str, Any]
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[[bytes], np.ndarray]
    bytes_per_sample: int


def _pcm16_encode(pcm: np.ndarray) -> bytes:
    return np.asarray(pcm, dtype="<i2").tobytes()  # the API wants little-endian


def _pcm16_decode(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


AUDIO_FORMATS: dict[str, AudioFormat] = {
    "pcm16": AudioFormat("pcm16", PCM16_RATE, {"type": "audio/pcm", "rate": PCM16_RATE},
                         _pcm16_encode, _pcm16_decode, 2),
    "g711_ulaw": AudioFormat("g711_ulaw", ULAW_RATE, {"type": "audio/pcmu"},
                             lambda pcm: ulaw_encode(np.asarray(pcm, dtype=np.int16)), ulaw_decode, 1),
}


# -- client events --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TurnDetection:
    """GA ``audio.input.turn_detection`` for ``server_vad`` (API defaults: 0.5, 300 ms, 500 ms)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    # The adapter cancels on speech_started itself (ServerEventInterpreter): one party decides,
    # and the audio of the cancelled response still in flight is dropped from that same event.
    interrupt_response: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {"type": "server_vad", "threshold": self.threshold, "prefix_padding_ms": self.prefix_padding_ms,
                "silence_duration_ms": self.silence_duration_ms, "create_response": True,
                "interrupt_response": self.interrupt_response}


def realtime_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """Chat-completions ``{"type":"function","function":{...}}`` -> the flat realtime function tool."""
    spec = tool.get("function", tool)
    return {"type": "function", "name": spec["name"], "description": spec.get("description", ""),
            "parameters": spec.get("parameters", {"type": "object", "properties": {}})}


def session_update(setup: SessionSetup, *, audio: AudioFormat, voice: str, turn_detection: TurnDetection,
                   transcription_model: str, event_id: str | None = None) -> dict[str, Any]:
    session: dict[str, Any] = {
        "type": "realtime",
        "output_modalities": ["audio"],  # audio always comes with its transcript
        "instructions": setup.instructions,
        "audio": {
            "input": {
                "format": dict(audio.wire),
                "turn_detection": turn_detection.to_wire(),
                # without it the API sends no input transcripts at all (off by default)
                "transcription": {"model": transcription_model, "language": setup.language.split("-")[0]},
            },
            "output": {"format": dict(audio.wire), "voice": setup.voice or voice},
        },
        "tools": [realtime_tool(t) for t in setup.tools],
        "tool_choice": "auto",
    }
    return _event("session.update", event_id, session=session)


def history_item(message: dict[str, str], event_id: str | None = None) -> dict[str, Any]:
    """A priming message. GA content types: user ``input_text``, assistant ``output_text``."""
    role = "assistant" if message["role"] in ("assistant", "agent") else "user"
    kind = "output_text" if role == "assistant" else "input_text"
    item = {"type": "message", "role": role, "content": [{"type": kind, "text": message["text"]}]}
    return _event("conversation.item.create", event_id, item=item)


def user_text(text: str, event_id: str | None = None) -> dict[str, Any]:
    return history_item({"role": "user", "text": text}, event_id)


def function_output(call_id: str, output: str, event_id: str | None = None) -> dict[str, Any]:
    item = {"type": "function_call_output", "call_id": call_id, "output": output}
    return _event("conversation.item.create", event_id, item=item)


def response_create(instructions: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {}
    if instructions is not None:
        response["instructions"] = instructions  # replaces the session instructions for this response only
    return _event("response.create", event_id, response=response)


def audio_append(data: bytes, event_id: str | None = None) -> dict[str, Any]:
    return _event("input_audio_buffer.append", event_id, audio=base64.b64encode(data).decode("ascii"))


def _event(kind: str, event_id: str | None, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": kind}
    if event_id is not None:
        event["event_id"] = event_id  # echoed back in `error.event_id`, so errors point at their cause
    event.update(fields)
    return event


# -- errors ---------------------------------------------------------------------------------

def map_error(error: dict[str, Any]) -> tuple[ErrorCode, bool]:
    """An API ``error`` object -> (its ErrorCode, recoverable).

    The session limit arrives as ``invalid_request_error`` with code ``session_expired``
    ("Your session hit the maximum duration of 60 minutes."), so the code wins over the type."""
    code = str(error.get("code") or "")
    kind = str(error.get("type") or "")
    if code == "session_expired":
        return ErrorCode.SESSION_EXPIRED, True
    if code == "rate_limit_exceeded" or kind in ("rate_limit_error", "rate_limit_exceeded"):
        return ErrorCode.THROTTLED, True
    if code == "invalid_api_key" or kind in ("authentication_error", "permission_error"):
        return ErrorCode.AUTH, False
    if kind == "server_error" or code == "server_error":
        return ErrorCode.INTERNAL, True
    if kind == "invalid_request_error":
        return ErrorCode.INVALID, True
    return ErrorCode.INTERNAL, True


def error_text(error: dict[str, Any]) -> str:
    return f"{error.get('type', 'error')}/{error.get('code') or '-'}: {error.get('message', '')}"


# -- server events --------------------------------------------------------------------------

@dataclass(slots=True)
class _Item:
    kind: str  # "message" | "function_call"
    response_id: str
    name: str = ""
    call_id: str = ""
    audio_samples: int = 0  # decoded samples of this item's audio received so far
    carry: bytes = b""  # an odd trailing byte of a pcm16 delta, completed by the next delta


@dataclass(slots=True)
class _Response:
    audio_items: list[str] = field(default_factory=list)
    function_calls: int = 0
    audio_samples: int = 0


class ServerEventInterpreter:
    """Feed it each server event (parsed JSON); it returns the agent events it means.

    ``failed`` turns True after a fatal ``error``: the session is over and the caller must end
    the event stream (the contract: a BackendError, then the iterator ends). Client events the
    interpreter decides on (a cancel at barge-in) wait in :meth:`take_outgoing`."""

    def __init__(self, audio: AudioFormat) -> None:
        self.audio = audio
        self.active_response: str | None = None
        self.failed = False
        self._items: dict[str, _Item] = {}
        self._responses: dict[str, _Response] = {}
        self._interrupted: set[str] = set()  # items cut by interrupted(): drop their late audio/text
        self._cancelled_responses: set[str] = set()
        self._input_samples = 0  # caller audio appended since the last Usage
        self._outgoing: list[dict[str, Any]] = []

    def take_outgoing(self) -> list[dict[str, Any]]:
        out, self._outgoing = self._outgoing, []
        return out

    def note_audio_sent(self, samples: int) -> None:
        self._input_samples += samples

    def receive(self, event: dict[str, Any]) -> list[AgentEvent]:
        handler = self._HANDLERS.get(str(event.get("type")))
        return handler(self, event) if handler is not None else []

    # what interrupted() sends: cancel the response if it still generates, and cut the item's
    # audio to what was played so the model's context matches what the caller heard.
    def interrupt(self, item_id: str, heard_ms: int) -> list[dict[str, Any]]:
        item = self._items.get(item_id)
        if item is None or item.kind != "message":
            log.debug("interrupted() for unknown item %s", item_id)
            return []
        self._interrupted.add(item_id)
        out = self._cancel(item.response_id)
        # audio_end_ms beyond the item's audio is an error: clamp to what we received
        received_ms = item.audio_samples * 1000 // self.audio.rate
        out.append({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                    "audio_end_ms": max(0, min(int(heard_ms), received_ms))})
        return out

    def _cancel(self, response_id: str) -> list[dict[str, Any]]:
        if self.active_response != response_id or response_id in self._cancelled_responses:
            return []
        self._cancelled_responses.add(response_id)
        return [{"type": "response.cancel", "response_id": response_id}]

    def _cut(self, item: _Item | None) -> bool:
        """Whether the caller cut this item off: its late audio and text must not reach the session
        (audio arriving after the barge-in would restart playback)."""
        return item is not None and item.response_id in self._cancelled_responses

    # -- handlers -------------------------------------------------------------------------

    def _speech_started(self, event: dict[str, Any]) -> list[AgentEvent]:
        # Barge-in: a response still generating is cancelled now, whether or not the session has
        # started playing it (server_vad's interrupt_response does the same, server side).
        if self.active_response is not None:
            self._outgoing += self._cancel(self.active_response)
        return [SpeechStarted()]

    def _user_transcript(self, event: dict[str, Any]) -> list[AgentEvent]:
        return [UserTranscript(str(event.get("transcript", "")).strip(), True, str(event.get("item_id", "")))]

    def _response_created(self, event: dict[str, Any]) -> list[AgentEvent]:
        response_id = str(event.get("response", {}).get("id", ""))
        self.active_response = response_id
        self._responses[response_id] = _Response()
        return []

    def _output_item_added(self, event: dict[str, Any]) -> list[AgentEvent]:
        item = event.get("item", {})
        response_id = str(event.get("response_id", ""))
        kind = str(item.get("type", ""))
        self._items[str(item.get("id", ""))] = _Item(kind, response_id, name=str(item.get("name", "")),
                                                     call_id=str(item.get("call_id", "")))
        return []

    def _audio_delta(self, event: dict[str, Any]) -> list[AgentEvent]:
        item_id = str(event.get("item_id", ""))
        item = self._items.setdefault(item_id, _Item("message", str(event.get("response_id", ""))))
        if item_id in self._interrupted or self._cut(item):
            return []  # the caller talked over it: late audio must not restart playback
        try:
            data = item.carry + base64.b64decode(event.get("delta", ""), validate=True)
        except (ValueError, TypeError):
            log.warning("undecodable audio delta for %s", item_id)
            return []
        usable = len(data) - len(data) % self.audio.bytes_per_sample
        item.carry = data[usable:]
        if usable == 0:
            return []
        pcm = self.audio.decode(data[:usable])
        item.audio_samples += len(pcm)
        response = self._responses.get(item.response_id)
        if response is not None:
            response.audio_samples += len(pcm)
            if item_id not in response.audio_items:
                response.audio_items.append(item_id)
        return [AgentAudio(pcm, item_id)]

    def _transcript_done(self, event: dict[str, Any]) -> list[AgentEvent]:
        item_id = str(event.get("item_id", ""))
        if item_id in self._interrupted or self._cut(self._items.get(item_id)):
            return []  # the session already recorded what was heard
        return [AgentTranscript(str(event.get("transcript", "")), item_id, True)]

    def _arguments_done(self, event: dict[str, Any]) -> list[AgentEvent]:
        item_id = str(event.get("item_id", ""))
        item = self._items.get(item_id)
        if self._cut(item):
            return []  # also sent for cancelled responses: the call was never meant
        name = item.name if item is not None else str(event.get("name", ""))
        call_id = str(event.get("call_id") or (item.call_id if item else ""))
        response = self._responses.get(item.response_id if item else "")
        if response is not None:
            response.function_calls += 1
        return [ToolCall(call_id, name, str(event.get("arguments", "")))]

    def _response_done(self, event: dict[str, Any]) -> list[AgentEvent]:
        body = event.get("response", {})
        response_id = str(body.get("id", ""))
        if self.active_response == response_id:
            self.active_response = None
        state = self._responses.pop(response_id, _Response())
        status = body.get("status")
        reason: Literal["completed", "interrupted", "tool_call", "error"]
        if status == "cancelled":
            reason = "interrupted"
        elif status == "failed":
            reason = "error"
        elif state.function_calls:
            reason = "tool_call"
        else:
            reason = "completed"
        turn_id = state.audio_items[-1] if state.audio_items else response_id
        out: list[AgentEvent] = [TurnEnded(turn_id, reason)]
        usage = body.get("usage")
        if usage:
            out.append(self._usage(usage, state.audio_samples))
        return out

    def _usage(self, usage: dict[str, Any], output_samples: int) -> Usage:
        seconds_in = self._input_samples / self.audio.rate
        self._input_samples = 0
        extra: dict[str, Any] = {k: usage[k] for k in ("input_token_details", "output_token_details", "total_tokens")
                                 if k in usage}
        return Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0),
                     seconds_in, output_samples / self.audio.rate, extra)

    def _error(self, event: dict[str, Any]) -> list[AgentEvent]:
        error = event.get("error") or {}
        if error.get("code") in BENIGN_ERROR_CODES:
            log.debug("ignored realtime error %s", error_text(error))
            return []
        code, recoverable = map_error(error)
        self.failed = True
        return [BackendError(error_text(error), recoverable, code)]

    _HANDLERS: dict[str, Callable[[ServerEventInterpreter, dict[str, Any]], list[AgentEvent]]] = {
        "input_audio_buffer.speech_started": _speech_started,
        "conversation.item.input_audio_transcription.completed": _user_transcript,
        "response.created": _response_created,
        "response.output_item.added": _output_item_added,
        "response.output_audio.delta": _audio_delta,
        "response.output_audio_transcript.done": _transcript_done,
        "response.function_call_arguments.done": _arguments_done,
        "response.done": _response_done,
        "error": _error,
    }
