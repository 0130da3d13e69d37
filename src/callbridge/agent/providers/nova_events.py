"""Nova Sonic's bidirectional-stream events, sans-IO: input event builders and an output parser.

Event names and fields follow the Nova Sonic user guide ("Input events" / "Output events"
of the bidirectional streaming API); every event travels as ``{"event": {NAME: {...}}}``.
No SDK, sockets or clocks here: the driver in ``nova_sonic.py`` moves the dicts.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from callbridge.agent.realtime import (
    ErrorCode,
    AgentAudio,
    AgentEvent,
    AgentTranscript,
    BackendError,
    SpeechStarted,
    ToolCall,
    TurnEnded,
    UserTranscript,
    Usage,
)

log = logging.getLogger(__name__)

INPUT_RATE = 16000
OUTPUT_RATE = 24000
MAX_TEXT_INPUT_BYTES = 1024  # AWS: each textInput at most 1 KB, so longer text is split
AUDIO_CHUNK_SAMPLES = 1024  # 64 ms at 16 kHz, as AWS's own samples send: half the per-event signing of 32 ms
QUIET_AUDIO_CHUNK_SAMPLES = 4096  # 256 ms, while the model is not waiting on the caller (see chunking.py)
TEXT_PLAIN = {"mediaType": "text/plain"}

# Bedrock stream exception names -> (contract code, recoverable)
EXCEPTION_CODES: dict[str, tuple[ErrorCode, bool]] = {
    "modelTimeoutException": (ErrorCode.SESSION_EXPIRED, True),
    "throttlingException": (ErrorCode.THROTTLED, True),
    "serviceUnavailableException": (ErrorCode.UNAVAILABLE, True),
    "internalServerException": (ErrorCode.INTERNAL, True),
    "modelStreamErrorException": (ErrorCode.INTERNAL, True),
    "validationException": (ErrorCode.INVALID, False),
    "accessDeniedException": (ErrorCode.AUTH, False),
    "invalidSignatureException": (ErrorCode.AUTH, False),
    "unrecognizedClientException": (ErrorCode.AUTH, False),
    "expiredTokenException": (ErrorCode.AUTH, False),
}


def classify_error(exc: BaseException) -> tuple[ErrorCode, bool, str]:
    """(code, recoverable, message) for an SDK exception or a transport failure.

    Modelled stream errors arrive as classes named after the exception member
    (``ModelTimeoutException``...); unmodelled HTTP errors (403 InvalidSignatureException)
    arrive as a generic ``CallError`` whose message carries the error id and status."""
    name = type(exc).__name__
    message = str(getattr(exc, "message", None) or exc) or name
    key = name[:1].lower() + name[1:]
    if key in EXCEPTION_CODES:
        code, recoverable = EXCEPTION_CODES[key]
        return code, recoverable, f"{name}: {message}"
    metadata = getattr(exc, "response_metadata", None)
    status = getattr(metadata, "http_status_code", None)
    lowered = message.lower()
    for error_name, (code, recoverable) in EXCEPTION_CODES.items():
        if error_name.lower() in lowered:
            return code, recoverable, message
    if status in (401, 403):
        return ErrorCode.AUTH, False, message
    if status == 429:
        return ErrorCode.THROTTLED, True, message
    if status is not None and 400 <= status < 500:
        return ErrorCode.INVALID, False, message
    return ErrorCode.UNAVAILABLE, True, f"{name}: {message}"


def split_utf8(text: str, limit: int = MAX_TEXT_INPUT_BYTES) -> list[str]:
    """Split text into pieces of at most ``limit`` UTF-8 bytes without cutting a character."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for char in text:
        width = len(char.encode("utf-8"))
        if size + width > limit:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += width
    if current or not pieces:
        pieces.append("".join(current))
    return pieces


def _event(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"event": {name: fields}}


@dataclass(frozen=True, slots=True)
class PromptSettings:
    voice: str
    tools: list[dict[str, Any]]  # chat-completions "tools" schemas
    max_tokens: int
    top_p: float
    temperature: float
    endpointing_sensitivity: str | None  # Nova 2 only: LOW | MEDIUM | HIGH


class NovaInput:
    """Builds the input events of one prompt (one session)."""

    def __init__(self) -> None:
        self.prompt_name = str(uuid.uuid4())
        self.audio_content = str(uuid.uuid4())

    def session_start(self, settings: PromptSettings) -> list[dict[str, Any]]:
        fields: dict[str, Any] = {"inferenceConfiguration": {
            "maxTokens": settings.max_tokens, "topP": settings.top_p, "temperature": settings.temperature}}
        if settings.endpointing_sensitivity is not None:
            fields["turnDetectionConfiguration"] = {"endpointingSensitivity": settings.endpointing_sensitivity}
        return [_event("sessionStart", fields)]

    def prompt_start(self, settings: PromptSettings) -> list[dict[str, Any]]:
        fields: dict[str, Any] = {
            "promptName": self.prompt_name,
            "textOutputConfiguration": TEXT_PLAIN,
            "audioOutputConfiguration": {
                "mediaType": "audio/lpcm", "sampleRateHertz": OUTPUT_RATE, "sampleSizeBits": 16,
                "channelCount": 1, "voiceId": settings.voice, "encoding": "base64", "audioType": "SPEECH"},
        }
        if settings.tools:
            fields["toolUseOutputConfiguration"] = {"mediaType": "application/json"}
            fields["toolConfiguration"] = {"tools": [_tool_spec(tool) for tool in settings.tools]}
        return [_event("promptStart", fields)]

    def text(self, role: str, text: str, *, interactive: bool) -> list[dict[str, Any]]:
        """A TEXT content block; text over 1 KB goes as several textInput events."""
        name = str(uuid.uuid4())
        events = [_event("contentStart", {
            "promptName": self.prompt_name, "contentName": name, "type": "TEXT", "role": role,
            "interactive": interactive, "textInputConfiguration": TEXT_PLAIN})]
        events += [_event("textInput", {"promptName": self.prompt_name, "contentName": name, "content": piece})
                   for piece in split_utf8(text)]
        events.append(_event("contentEnd", {"promptName": self.prompt_name, "contentName": name}))
        return events

    def audio_start(self) -> list[dict[str, Any]]:
        return [_event("contentStart", {
            "promptName": self.prompt_name, "contentName": self.audio_content, "type": "AUDIO",
            "role": "USER", "interactive": True,
            "audioInputConfiguration": {"mediaType": "audio/lpcm", "sampleRateHertz": INPUT_RATE,
                                        "sampleSizeBits": 16, "channelCount": 1,
                                        "audioType": "SPEECH", "encoding": "base64"}})]

    def audio(self, pcm: bytes) -> dict[str, Any]:
        return _event("audioInput", {"promptName": self.prompt_name, "contentName": self.audio_content,
                                     "content": base64.b64encode(pcm).decode("ascii")})

    def tool_result(self, tool_use_id: str, result: str) -> list[dict[str, Any]]:
        name = str(uuid.uuid4())
        return [
            _event("contentStart", {
                "promptName": self.prompt_name, "contentName": name, "type": "TOOL", "role": "TOOL",
                "interactive": False,
                "toolResultInputConfiguration": {"toolUseId": tool_use_id, "type": "TEXT",
                                                 "textInputConfiguration": TEXT_PLAIN}}),
            _event("toolResult", {"promptName": self.prompt_name, "contentName": name, "content": result}),
            _event("contentEnd", {"promptName": self.prompt_name, "contentName": name}),
        ]

    def close(self) -> list[dict[str, Any]]:
        return [_event("contentEnd", {"promptName": self.prompt_name, "contentName": self.audio_content}),
                _event("promptEnd", {"promptName": self.prompt_name}),
                _event("sessionEnd", {})]


def _tool_spec(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function", tool)
    schema = function.get("parameters") or {"type": "object", "properties": {}}
    # Nova wants the JSON schema as a JSON *string*, not an object.
    return {"toolSpec": {"name": function["name"], "description": function.get("description", ""),
                         "inputSchema": {"json": json.dumps(schema)}}}


def _is_interrupted_marker(text: str) -> bool:
    """Nova signals barge-in with the text ``{ "interrupted" : true }`` (spacing varies)."""
    if "interrupted" not in text:
        return False
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and value.get("interrupted") is True


def decode_output_event(raw: bytes | None) -> dict[str, Any] | None:
    """The JSON event one output chunk carries; None when it is not a JSON object (dropped by the caller)."""
    try:
        event = json.loads(raw or b"{}")
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the stack
        return None
    return event if isinstance(event, dict) else None


@dataclass(slots=True)
class _OpenContent:
    type: str
    role: str
    stage: str  # SPECULATIVE | FINAL ("" for audio and tools)


class NovaOutput:
    """Turns output event dicts into :data:`AgentEvent` values, keeping reply turns together.

    A reply's speculative text, audio and final text are separate contents with their own
    ids; they share one ``turn_id``: the contentId of the reply's first assistant content.
    The turn ends on the FINAL text's END_TURN, on INTERRUPTED or TOOL_USE, or at completionEnd."""

    def __init__(self) -> None:
        self._contents: dict[str, _OpenContent] = {}
        self._turn_id: str | None = None
        self._totals = (0, 0)  # usageEvent totals are cumulative; Usage carries deltas
        self.output_samples = 0

    def feed(self, event: dict[str, Any]) -> list[AgentEvent]:
        body = event.get("event", event)
        if not isinstance(body, dict) or not body:
            return []
        name, fields = next(iter(body.items()))
        handler = getattr(self, f"_on_{name}", None)
        if handler is None or not isinstance(fields, dict):
            return []  # completionStart and anything new: nothing to report
        return handler(fields)

    def _reply_turn(self, content_id: str) -> str:
        if self._turn_id is None:
            self._turn_id = content_id or str(uuid.uuid4())
        return self._turn_id

    def _end_turn(self, reason: str) -> list[AgentEvent]:
        if self._turn_id is None:
            return []
        turn_id, self._turn_id = self._turn_id, None
        return [TurnEnded(turn_id, reason)]  # type: ignore[arg-type]

    def _on_contentStart(self, fields: dict[str, Any]) -> list[AgentEvent]:
        stage = ""
        extra = fields.get("additionalModelFields")
        if isinstance(extra, str) and extra:
            try:
                stage = str(json.loads(extra).get("generationStage", ""))
            except (ValueError, AttributeError, RecursionError):
                log.debug("unparsable additionalModelFields %r", extra)
        content_id = str(fields.get("contentId", ""))
        role = str(fields.get("role", ""))
        self._contents[content_id] = _OpenContent(str(fields.get("type", "")), role, stage)
        if role in ("ASSISTANT", "TOOL"):
            self._reply_turn(content_id)
        return []

    def _on_textOutput(self, fields: dict[str, Any]) -> list[AgentEvent]:
        content_id = str(fields.get("contentId", ""))
        text = str(fields.get("content", ""))
        content = self._contents.get(content_id)
        role = str(fields.get("role") or (content.role if content else ""))
        if role == "USER":
            return [UserTranscript(text, True, content_id)]
        if _is_interrupted_marker(text):
            return [SpeechStarted()]
        turn_id = self._reply_turn(content_id)
        final = content is None or content.stage != "SPECULATIVE"
        return [AgentTranscript(text, turn_id, final)]

    def _on_audioOutput(self, fields: dict[str, Any]) -> list[AgentEvent]:
        try:
            pcm = np.frombuffer(base64.b64decode(fields.get("content", "")), dtype="<i2").astype(np.int16)
        except (ValueError, TypeError):  # TypeError: content that is not a string
            log.warning("dropped an undecodable audioOutput chunk")
            return []
        self.output_samples += len(pcm)
        return [AgentAudio(pcm, self._reply_turn(str(fields.get("contentId", ""))))]

    def _on_toolUse(self, fields: dict[str, Any]) -> list[AgentEvent]:
        self._reply_turn(str(fields.get("contentId", "")))
        return [ToolCall(str(fields.get("toolUseId", "")), str(fields.get("toolName", "")),
                         str(fields.get("content") or "{}"))]

    def _on_contentEnd(self, fields: dict[str, Any]) -> list[AgentEvent]:
        content = self._contents.pop(str(fields.get("contentId", "")), None)
        stop = fields.get("stopReason")
        if stop == "INTERRUPTED":
            return self._end_turn("interrupted")
        if stop == "TOOL_USE":
            return self._end_turn("tool_call")
        if stop == "END_TURN" and content is not None and content.role == "ASSISTANT" and content.type == "TEXT":
            return self._end_turn("completed")
        return []

    def _on_completionEnd(self, fields: dict[str, Any]) -> list[AgentEvent]:
        return self._end_turn("completed")

    def _on_usageEvent(self, fields: dict[str, Any]) -> list[AgentEvent]:
        totals = (_token_count(fields.get("totalInputTokens")), _token_count(fields.get("totalOutputTokens")))
        delta_in, delta_out = totals[0] - self._totals[0], totals[1] - self._totals[1]
        self._totals = totals
        return [Usage(max(delta_in, 0), max(delta_out, 0),
                      extra={"details": fields.get("details", {}), "total_tokens": fields.get("totalTokens")})]


def _token_count(value: Any) -> int:
    """A usage total as Nova sends it (a JSON integer); anything unreadable counts as 0."""
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError, OverflowError):  # "x", [1], 1e999
        return 0


def error_event(exc: BaseException) -> BackendError:
    code, recoverable, message = classify_error(exc)
    return BackendError(message, recoverable, code)
