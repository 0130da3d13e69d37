"""The Nova Sonic stand-in's model, sans-IO: input event dicts in, output events out.

It checks the input protocol the way Bedrock documents it (Nova Sonic user guide,
"Handling input events with the bidirectional API"): sessionStart, then promptStart,
then a SYSTEM text block, then history TEXT blocks (starting with USER; each textInput
at most 1 KB and the history at most 40 KB in total), then audio. A violation is a
``validationException`` and the stream closes. Caller turns are found by energy on the
16 kHz audio (in audio time, so tests are deterministic); each plays the next scripted
step. ``now`` is passed in: the only timers are the end of a reply's playback window and
the session-length limit.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from callbridge.standins.bedrock_script import BedrockScript, CallTool, Fail, Say, SessionRecord, Step

INPUT_RATE = 16000
OUTPUT_RATE = 24000
MAX_TEXT_INPUT_BYTES = 1024  # per textInput event
MAX_HISTORY_BYTES = 40_000  # all history text, as AWS documents it ("40 KB")
ENERGY_BLOCK_SAMPLES = INPUT_RATE // 100  # 10 ms
AUDIO_OUTPUT_CHUNK_SAMPLES = OUTPUT_RATE // 10  # 100 ms per audioOutput event
TONE_AMPLITUDE = 8000
INTERRUPTED_MARKER = '{ "interrupted" : true }'
SESSION_TIMEOUT_MESSAGE = "Model has timed out in processing request"


@dataclass(frozen=True, slots=True)
class OutEvent:
    body: dict[str, Any]  # {"event": {name: {...}}}


@dataclass(frozen=True, slots=True)
class OutException:
    name: str  # e.g. "validationException"
    message: str


Outbound = OutEvent | OutException


class ProtocolViolation(Exception):
    pass


@dataclass(slots=True)
class _Content:
    name: str
    type: str
    role: str
    interactive: bool
    text: list[str]
    tool_use_id: str | None = None


@dataclass(slots=True)
class _Reply:
    """The reply being 'spoken': its FINAL text is due when the playback window ends."""

    text: str
    speaking_until: float
    completion_id: str


def tone(ms: int, hz: float) -> bytes:
    samples = OUTPUT_RATE * ms // 1000
    t = np.arange(samples) / OUTPUT_RATE
    return (np.sin(2 * math.pi * hz * t) * TONE_AMPLITUDE).astype("<i2").tobytes()


class ModelSession:
    def __init__(self, script: BedrockScript, record: SessionRecord, now: float) -> None:
        self.script = script
        self.record = record
        self.closed = False
        self._out: list[Outbound] = []
        self._steps: list[Step] = script.turns if script.shared_turns else list(script.turns)
        self._expires_at = None if script.session_limit_s is None else now + script.session_limit_s
        self._prompt_name: str | None = None
        self._contents: dict[str, _Content] = {}
        self._seen_contents: set[str] = set()
        self._system_done = False
        self._audio_started = False
        self._history_bytes = 0
        self._greeted = False
        # turn detection, in samples of caller audio
        self._pending_samples = np.zeros(0, dtype=np.int16)
        self._in_speech = False
        self._quiet_samples = 0
        self._reply: _Reply | None = None
        self._waiting_tool: tuple[str, Say] | None = None  # (toolUseId, follow-up)
        self._tokens = (0, 0)

    # -- the driver's interface --------------------------------------------------------

    def receive(self, event: dict[str, Any], now: float) -> None:
        if self.closed:
            return
        try:
            self._handle(event, now)
        except ProtocolViolation as exc:
            self.record.rejected.append(str(exc))
            self._fail("validationException", str(exc))

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self._expires_at, self._reply.speaking_until if self._reply else None)
                     if d is not None]
        return None if self.closed or not deadlines else min(deadlines)

    def on_timer(self, now: float) -> None:
        if self.closed:
            return
        if self._expires_at is not None and now >= self._expires_at:
            exception = self.script.session_limit_exception
            self._fail(exception, SESSION_TIMEOUT_MESSAGE if exception == "modelTimeoutException"
                       else "The system encountered an unexpected error during processing. Try your request again.")
            return
        if self._reply is not None and now >= self._reply.speaking_until:
            reply, self._reply = self._reply, None
            self._text_block("ASSISTANT", "FINAL", reply.text, "END_TURN", reply.completion_id)
            self._emit("completionEnd", {"completionId": reply.completion_id, "stopReason": "END_TURN"})

    def fail(self, name: str, message: str) -> None:
        """Close with an exception decided by the driver (e.g. a bad chunk signature)."""
        if not self.closed:
            self.record.rejected.append(message)
            self._fail(name, message)

    def take_output(self) -> list[Outbound]:
        out, self._out = self._out, []
        return out

    # -- input protocol --------------------------------------------------------------------

    def _handle(self, event: dict[str, Any], now: float) -> None:
        body = event.get("event")
        if not isinstance(body, dict) or len(body) != 1:
            raise ProtocolViolation("each input must be {\"event\": {<one event name>: {...}}}")
        (name, fields), = body.items()
        if not isinstance(fields, dict):
            raise ProtocolViolation(f"{name}: fields must be an object")
        self.record.events.append(name)
        events = self.record.events
        if len(events) == 1 and name != "sessionStart":
            raise ProtocolViolation("the first event must be sessionStart")
        if len(events) == 2 and name != "promptStart":
            raise ProtocolViolation("promptStart must follow sessionStart")
        handler = {
            "sessionStart": self._session_start, "promptStart": self._prompt_start,
            "contentStart": self._content_start, "textInput": self._text_input,
            "audioInput": self._audio_input, "toolResult": self._tool_result,
            "contentEnd": self._content_end, "promptEnd": self._prompt_end,
            "sessionEnd": self._session_end,
        }.get(name)
        if handler is None:
            raise ProtocolViolation(f"unknown input event {name!r}")
        handler(fields, now)

    def _session_start(self, fields: dict[str, Any], now: float) -> None:
        if len(self.record.events) != 1:
            raise ProtocolViolation("sessionStart sent twice")
        self.record.session_start = fields

    def _prompt_start(self, fields: dict[str, Any], now: float) -> None:
        if self._prompt_name is not None:
            raise ProtocolViolation("only one prompt per session is supported")
        name = fields.get("promptName")
        if not isinstance(name, str) or not name:
            raise ProtocolViolation("promptStart needs a promptName")
        audio_out = fields.get("audioOutputConfiguration") or {}
        if audio_out and audio_out.get("sampleRateHertz") not in (8000, 16000, 24000):
            raise ProtocolViolation("audioOutputConfiguration.sampleRateHertz must be 8000, 16000 or 24000")
        for tool in (fields.get("toolConfiguration") or {}).get("tools", []):
            schema = ((tool.get("toolSpec") or {}).get("inputSchema") or {}).get("json")
            if not isinstance(schema, str):
                raise ProtocolViolation("toolSpec.inputSchema.json must be a JSON string")
        self._prompt_name = name
        self.record.prompt_start = fields

    def _check_prompt(self, fields: dict[str, Any]) -> None:
        if self._prompt_name is None or fields.get("promptName") != self._prompt_name:
            raise ProtocolViolation("event for an unknown promptName")

    def _content(self, fields: dict[str, Any]) -> _Content:
        self._check_prompt(fields)
        content = self._contents.get(fields.get("contentName", ""))
        if content is None:
            raise ProtocolViolation(f"no open content named {fields.get('contentName')!r}")
        return content

    def _content_start(self, fields: dict[str, Any], now: float) -> None:
        self._check_prompt(fields)
        name, kind, role = fields.get("contentName"), fields.get("type"), fields.get("role")
        if not isinstance(name, str) or not name or name in self._seen_contents:
            raise ProtocolViolation("contentStart needs a new, unique contentName")
        interactive = bool(fields.get("interactive", False))
        if not self._system_done and (kind != "TEXT" or role != "SYSTEM"):
            raise ProtocolViolation("the first content must be the SYSTEM text")
        if kind == "TEXT":
            if role not in ("SYSTEM", "USER", "ASSISTANT"):
                raise ProtocolViolation(f"bad TEXT role {role!r}")
            if role == "SYSTEM" and self._system_done:
                raise ProtocolViolation("only one SYSTEM text is allowed")
            if (role in ("USER", "ASSISTANT") and not interactive and not self.record.history
                    and role != "USER"):
                raise ProtocolViolation("history must start with a USER message")
            if not interactive and role != "SYSTEM" and self._audio_started:
                raise ProtocolViolation("history must be sent before any audio")
        elif kind == "AUDIO":
            config = fields.get("audioInputConfiguration") or {}
            if role != "USER" or config.get("sampleRateHertz") != INPUT_RATE or config.get("encoding") != "base64":
                raise ProtocolViolation("AUDIO content must be USER, 16000 Hz, base64")
            self._audio_started = True
        elif kind == "TOOL":
            config = fields.get("toolResultInputConfiguration") or {}
            if role != "TOOL" or not config.get("toolUseId"):
                raise ProtocolViolation("TOOL content needs role TOOL and toolResultInputConfiguration.toolUseId")
        else:
            raise ProtocolViolation(f"unknown content type {kind!r}")
        self._seen_contents.add(name)
        tool_use_id = (fields.get("toolResultInputConfiguration") or {}).get("toolUseId")
        self._contents[name] = _Content(name, kind, role, interactive, [], tool_use_id)

    def _text_input(self, fields: dict[str, Any], now: float) -> None:
        content = self._content(fields)
        text = fields.get("content")
        if content.type != "TEXT" or not isinstance(text, str):
            raise ProtocolViolation("textInput needs an open TEXT content and string content")
        size = len(text.encode("utf-8"))
        if size > MAX_TEXT_INPUT_BYTES:
            raise ProtocolViolation(f"textInput is {size} bytes; the limit is {MAX_TEXT_INPUT_BYTES}")
        if content.role != "SYSTEM" and not content.interactive:
            self._history_bytes += size
            if self._history_bytes > MAX_HISTORY_BYTES:
                raise ProtocolViolation(f"history exceeds {MAX_HISTORY_BYTES} bytes")
        content.text.append(text)

    def _audio_input(self, fields: dict[str, Any], now: float) -> None:
        content = self._content(fields)
        if content.type != "AUDIO":
            raise ProtocolViolation("audioInput needs an open AUDIO content")
        try:
            pcm = base64.b64decode(fields.get("content", ""), validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise ProtocolViolation("audioInput content is not base64") from None
        if len(pcm) % 2:
            raise ProtocolViolation("audioInput must hold whole 16-bit samples")
        self.record.audio += pcm
        self.record.audio_frames += 1
        self._detect_turns(np.frombuffer(pcm, dtype="<i2"), now)

    def _tool_result(self, fields: dict[str, Any], now: float) -> None:
        content = self._content(fields)
        if content.type != "TOOL" or not isinstance(fields.get("content"), str):
            raise ProtocolViolation("toolResult needs an open TOOL content and string content")
        content.text.append(fields["content"])

    def _content_end(self, fields: dict[str, Any], now: float) -> None:
        content = self._content(fields)
        del self._contents[content.name]
        text = "".join(content.text)
        if content.type == "TEXT" and content.role == "SYSTEM":
            self.record.system_prompt = text
            self._system_done = True
        elif content.type == "TEXT" and not content.interactive:
            self.record.history.append((content.role, text))
        elif content.type == "TEXT":
            self.record.interactive_texts.append((content.role, text))
            if content.role == "USER":
                self._text_turn(now)
        elif content.type == "TOOL":
            self.record.tool_results.append((content.tool_use_id or "", text))
            if self._waiting_tool and self._waiting_tool[0] == content.tool_use_id:
                follow_up = self._waiting_tool[1]
                self._waiting_tool = None
                self._play(follow_up, now, transcribe=False)

    def _prompt_end(self, fields: dict[str, Any], now: float) -> None:
        self._check_prompt(fields)

    def _session_end(self, fields: dict[str, Any], now: float) -> None:
        self.record.ended_cleanly = True
        self.closed = True

    # -- the scripted model --------------------------------------------------------------------

    def _detect_turns(self, samples: np.ndarray, now: float) -> None:
        pending = np.concatenate([self._pending_samples, samples])
        usable = len(pending) - len(pending) % ENERGY_BLOCK_SAMPLES
        self._pending_samples = pending[usable:]
        end_of_turn = INPUT_RATE * self.script.end_of_turn_ms // 1000
        for start in range(0, usable, ENERGY_BLOCK_SAMPLES):
            block = pending[start:start + ENERGY_BLOCK_SAMPLES].astype(np.float64)
            loud = math.sqrt(float(np.mean(block * block))) >= self.script.speech_rms
            if loud:
                if not self._in_speech:
                    self._in_speech = True
                    self._speech_started(now)
                self._quiet_samples = 0
            elif self._in_speech:
                self._quiet_samples += ENERGY_BLOCK_SAMPLES
                if self._quiet_samples >= end_of_turn:
                    self._in_speech = False
                    self._quiet_samples = 0
                    self._next_step(now, transcribe=True)
                    if self.closed:
                        return

    def _speech_started(self, now: float) -> None:
        """Caller speech while the reply still plays: Nova marks the FINAL text interrupted."""
        if self._reply is not None and now < self._reply.speaking_until:
            reply, self._reply = self._reply, None
            self._text_block("ASSISTANT", "FINAL", INTERRUPTED_MARKER, "INTERRUPTED", reply.completion_id)
            self._emit("completionEnd", {"completionId": reply.completion_id, "stopReason": "INTERRUPTED"})

    def _text_turn(self, now: float) -> None:
        if self.script.greeting is not None and not self._greeted and not self._audio_started:
            self._greeted = True
            self._play(self.script.greeting, now, transcribe=False)
        else:
            self._next_step(now, transcribe=False)

    def _next_step(self, now: float, *, transcribe: bool) -> None:
        step = self._steps.pop(0) if self._steps else self.script.fallback
        if step is not None:
            self._play(step, now, transcribe=transcribe)

    def _play(self, step: Step, now: float, *, transcribe: bool) -> None:
        completion_id = str(uuid.uuid4())
        self._emit("completionStart", {"completionId": completion_id})
        if transcribe and step.user_text is not None:
            self._text_block("USER", "FINAL", step.user_text, "END_TURN", completion_id)
        match step:
            case Say():
                spoken = step.speculative if step.speculative is not None else step.text
                self._text_block("ASSISTANT", "SPECULATIVE", spoken, "PARTIAL_TURN", completion_id)
                self._audio_block(tone(step.audio_ms, step.tone_hz), completion_id)
                self._reply = _Reply(step.text, now + step.audio_ms / 1000, completion_id)
            case CallTool():
                tool_use_id = str(uuid.uuid4())
                content_id = self._start_output_content("TOOL", "TOOL", completion_id, {
                    "toolUseOutputConfiguration": {"mediaType": "application/json"}})
                self._emit("toolUse", {"completionId": completion_id, "contentId": content_id,
                                       "toolName": step.name, "toolUseId": tool_use_id,
                                       "content": json.dumps(step.arguments)})
                self._emit("contentEnd", {"completionId": completion_id, "contentId": content_id,
                                          "type": "TOOL", "stopReason": "TOOL_USE"})
                self._waiting_tool = (tool_use_id, step.then)
            case Fail():
                if step.speculative is not None:
                    self._text_block("ASSISTANT", "SPECULATIVE", step.speculative, "PARTIAL_TURN", completion_id)
                self._fail(step.exception, step.message)
                return
        # Bedrock reports running totals for the session, plus this completion's delta.
        self._tokens = (self._tokens[0] + 10, self._tokens[1] + 20)
        self._emit("usageEvent", {"completionId": completion_id, "totalInputTokens": self._tokens[0],
                                  "totalOutputTokens": self._tokens[1], "totalTokens": sum(self._tokens),
                                  "details": {"delta": {"input": {"speechTokens": 10, "textTokens": 0},
                                                        "output": {"speechTokens": 15, "textTokens": 5}}}})

    # -- output events ----------------------------------------------------------------------

    def _emit(self, name: str, fields: dict[str, Any]) -> None:
        fields = {"promptName": self._prompt_name, **fields}
        self._out.append(OutEvent({"event": {name: fields}}))

    def _start_output_content(self, kind: str, role: str, completion_id: str, extra: dict[str, Any]) -> str:
        content_id = str(uuid.uuid4())
        self._emit("contentStart", {"completionId": completion_id, "contentId": content_id,
                                    "type": kind, "role": role, **extra})
        return content_id

    def _text_block(self, role: str, stage: str, text: str, stop: str, completion_id: str) -> None:
        content_id = self._start_output_content("TEXT", role, completion_id, {
            "additionalModelFields": json.dumps({"generationStage": stage}),
            "textOutputConfiguration": {"mediaType": "text/plain"}})
        self._emit("textOutput", {"completionId": completion_id, "contentId": content_id,
                                  "role": role, "content": text})
        self._emit("contentEnd", {"completionId": completion_id, "contentId": content_id,
                                  "type": "TEXT", "stopReason": stop})

    def _audio_block(self, pcm: bytes, completion_id: str) -> None:
        content_id = self._start_output_content("AUDIO", "ASSISTANT", completion_id, {
            "audioOutputConfiguration": {"mediaType": "audio/lpcm", "sampleRateHertz": OUTPUT_RATE,
                                         "sampleSizeBits": 16, "channelCount": 1, "encoding": "base64"}})
        step = AUDIO_OUTPUT_CHUNK_SAMPLES * 2
        for start in range(0, len(pcm), step):
            self._emit("audioOutput", {"completionId": completion_id, "contentId": content_id,
                                       "content": base64.b64encode(pcm[start:start + step]).decode()})
        self._emit("contentEnd", {"completionId": completion_id, "contentId": content_id,
                                  "type": "AUDIO", "stopReason": "PARTIAL_TURN"})

    def _fail(self, name: str, message: str) -> None:
        self.record.sent_exceptions.append(name)
        self._out.append(OutException(name, message))
        self.closed = True
