"""OpenAI Realtime (GA) speech-to-speech back end over WebSocket.

API version: the GA Realtime API (``gpt-realtime``; session shape ``session.type="realtime"``
with ``audio.input`` / ``audio.output``, events ``response.output_audio.delta`` and
``response.output_audio_transcript.*``). No ``OpenAI-Beta`` header is sent: that header
selects the older beta protocol.

Wire facts this follows:
- Connect ``wss://api.openai.com/v1/realtime?model=gpt-realtime`` with
  ``Authorization: Bearer <key>``; the server speaks first with ``session.created``.
- ``session.update`` -> ``session.updated``; then priming history as
  ``conversation.item.create`` messages (user ``input_text``, assistant ``output_text``).
- Audio: ``audio/pcm`` is 24 kHz 16-bit mono little-endian only; ``audio/pcmu`` (G.711 µ-law,
  8 kHz) is also a GA format, so a phone call can skip resampling entirely.
- A session lasts at most 60 minutes (GA; the beta had 15, then 30); the server then sends an
  ``error`` with code ``session_expired`` and closes with 1001.
- ``conversation.item.truncate`` with ``audio_end_ms`` past the item's audio is an error, so
  the adapter clamps to the audio it actually received.

DTMF: the model hears no keypad tones over this path, so digits become a user text item
("The caller pressed 4") followed by ``response.create``. Digits typed in a burst are sent
as one item once '#' is pressed or the keypad pauses for ``dtmf_pause_s``.

History limits: OpenAI publishes no per-message limit for ``conversation.item.create``; the
binding constraint is the model context (32k tokens for ``gpt-realtime``, shared with the
instructions, audio tokens and the reply). 48 KB of text is about 12k tokens, leaving room
for all of those; one message is capped at 8 KB so a single old monologue cannot crowd out
the rest.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ..realtime import (
    ErrorCode,
    AgentEvent,
    BackendError,
    HistoryLimits,
    ProviderError,
    SessionSetup,
    let_reader_catch_up,
)
from . import openai_events as wire
from .openai_events import AUDIO_FORMATS, AudioFormatName, ServerEventInterpreter, TurnDetection

log = logging.getLogger("callbridge.agent.openai")

DEFAULT_URL = "wss://api.openai.com/v1/realtime"
DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "marin"  # OpenAI recommends marin or cedar for gpt-realtime
DEFAULT_TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
GA_MAX_SESSION_S = 60 * 60.0  # "Your session hit the maximum duration of 60 minutes."
OPENAI_HISTORY_LIMITS = HistoryLimits(total_bytes=48_000, message_bytes=8_000)  # see module docstring

SETUP_TIMEOUT_S = 10.0  # connect + session.created + session.updated
CLOSE_TIMEOUT_S = 2.0
AUDIO_BATCH_MS = 60  # one append per 60 ms: a third of the frames, well inside server VAD's 500 ms
AUDIO_MAX_WAIT_S = 0.06  # a partial batch still leaves within 60 ms
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # audio deltas are large; websockets' 1 MiB default is too small
DTMF_PAUSE_S = 2.0
DTMF_END = "#"


@dataclass(frozen=True, slots=True)
class OpenAIRealtimeConfig:
    api_key: str = field(default_factory=lambda: os.environ.get("OPENAI_API_KEY", ""), repr=False)
    model: str = DEFAULT_MODEL
    url: str = DEFAULT_URL  # the stand-in: ws://127.0.0.1:PORT/v1/realtime
    voice: str = DEFAULT_VOICE  # used when the SessionSetup names none
    audio_format: AudioFormatName = "pcm16"  # or "g711_ulaw": 8 kHz µ-law, no resampling on a G.711 call
    threshold: float = 0.5
    silence_duration_ms: int = 500
    prefix_padding_ms: int = 300
    # GA sessions have no temperature (the field was dropped from the beta session); kept so
    # configs stay portable, logged and not sent.
    temperature: float | None = None
    transcription_model: str = DEFAULT_TRANSCRIPTION_MODEL
    max_session_s: float | None = GA_MAX_SESSION_S
    history_limits: HistoryLimits = OPENAI_HISTORY_LIMITS
    dtmf_pause_s: float = DTMF_PAUSE_S

    def __post_init__(self) -> None:
        if self.audio_format not in AUDIO_FORMATS:
            raise ValueError(f"audio_format must be one of {', '.join(AUDIO_FORMATS)}, not {self.audio_format!r}")

    def endpoint(self) -> str:
        separator = "&" if "?" in self.url else "?"
        return f"{self.url}{separator}model={quote(self.model, safe='')}"


class OpenAIRealtimeBackend:
    """One OpenAI Realtime session (see :class:`callbridge.agent.realtime.RealtimeBackend`)."""

    def __init__(self, config: OpenAIRealtimeConfig | None = None) -> None:
        self.config = config or OpenAIRealtimeConfig()
        self._audio = AUDIO_FORMATS[self.config.audio_format]
        self.input_rate = self.output_rate = self._audio.rate
        self.max_session_s = self.config.max_session_s
        self.history_limits = self.config.history_limits
        self._interpreter = ServerEventInterpreter(self._audio)
        self._ws: ClientConnection | None = None
        self._events: asyncio.Queue[AgentEvent | None] = asyncio.Queue()
        # (message, the caller PCM an append carries, else None); unbounded: send_* never blocks
        self._outbox: asyncio.Queue[tuple[str, np.ndarray | None] | None] = asyncio.Queue()
        self._pending_audio = bytearray()
        self._pending_pcm: list[np.ndarray] = []  # the batch's caller audio as given, for a replay
        self._pending_samples = 0
        # The server has ended the session (a fatal error, or the socket closed): caller audio
        # not yet written stays here for the next session.
        self._server_ended = False
        self._unaccepted: list[np.ndarray] = []
        self._audio_withdrawn = False
        self._flush_timer: asyncio.TimerHandle | None = None
        self._batch_bytes = self._audio.rate * AUDIO_BATCH_MS // 1000 * self._audio.bytes_per_sample
        self._keys = ""
        self._key_timer: asyncio.TimerHandle | None = None
        self._event_ids = itertools.count(1)
        # One response at a time: the API rejects a response.create while one is active
        # (conversation_already_has_active_response), and a fast tool answers before response.done.
        self._response_requested = False
        self._response_deferred = False
        self._tasks: list[asyncio.Task[None]] = []
        self._closer: asyncio.Task[None] | None = None
        self._ended = False
        self._closed = False

    # -- start ----------------------------------------------------------------------------

    async def start(self, setup: SessionSetup) -> None:
        if not self.config.api_key:
            raise ProviderError("no OpenAI API key (set OPENAI_API_KEY)", code=ErrorCode.AUTH, recoverable=False)
        if self.config.temperature is not None:
            log.info("temperature=%s ignored: GA realtime sessions have no temperature", self.config.temperature)
        try:
            async with asyncio.timeout(SETUP_TIMEOUT_S):
                self._ws = await self._connect()
                await self._expect("session.created")
                await self._send_now(wire.session_update(
                    setup, audio=self._audio, voice=self.config.voice,
                    transcription_model=self.config.transcription_model,
                    turn_detection=TurnDetection(self.config.threshold, self.config.prefix_padding_ms,
                                                 self.config.silence_duration_ms),
                    event_id=self._event_id()))
                await self._expect("session.updated")
        except TimeoutError:
            await self._abort()
            raise ProviderError("OpenAI Realtime did not set up the session in time",
                                code=ErrorCode.UNAVAILABLE) from None
        except ProviderError:
            await self._abort()
            raise
        # History, then the greeting, go out before the writer starts, so before any caller audio.
        for message in setup.history:
            await self._send_now(wire.history_item(message, self._event_id()))
        if setup.greeting:
            await self._send_now(wire.response_create(
                f"Greet the caller by saying exactly this, and nothing else: {setup.greeting}", self._event_id()))
            self._response_requested = True
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read_loop()), loop.create_task(self._write_loop())]

    async def _connect(self) -> ClientConnection:
        try:
            return await connect(
                self.config.endpoint(), additional_headers={"Authorization": f"Bearer {self.config.api_key}"},
                max_size=MAX_MESSAGE_BYTES, open_timeout=None, close_timeout=CLOSE_TIMEOUT_S,
                # permessage-deflate on base64 audio saves little and costs deflate on every
                # 60 ms batch and inflate on every reply chunk: most of this path's CPU.
                compression=None)
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise ProviderError(f"OpenAI Realtime refused the connection: HTTP {status}", code=_http_code(status),
                                recoverable=status not in (401, 403)) from exc
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            raise ProviderError(f"cannot reach OpenAI Realtime: {exc}", code=ErrorCode.UNAVAILABLE) from exc

    async def _expect(self, kind: str) -> None:
        """Read until ``kind``; an ``error`` first fails the start with its mapped code."""
        assert self._ws is not None
        while True:
            try:
                event = json.loads(await self._ws.recv())
            except ConnectionClosed as exc:
                raise ProviderError(f"OpenAI Realtime closed during setup: {exc}", code=ErrorCode.UNAVAILABLE) from exc
            except json.JSONDecodeError:
                log.warning("undecodable event from OpenAI Realtime during setup")
                continue
            if event.get("type") == kind:
                return
            if event.get("type") == "error":
                error = event.get("error") or {}
                code, recoverable = wire.map_error(error)
                raise ProviderError(wire.error_text(error), code=code, recoverable=recoverable)

    # -- caller side ----------------------------------------------------------------------

    def send_audio(self, pcm: np.ndarray) -> None:
        if self._audio_withdrawn:
            return
        if self._closed:
            if self._server_ended:  # ended by the server and closed before the session withdrew it
                self._keep_unaccepted(pcm)
            return
        self._pending_audio += self._audio.encode(pcm)
        self._pending_pcm.append(pcm)
        self._pending_samples += len(pcm)
        if len(self._pending_audio) >= self._batch_bytes:
            self._flush_audio()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(AUDIO_MAX_WAIT_S, self._flush_audio)

    def send_dtmf(self, digit: str) -> None:
        self._keys += digit
        if self._key_timer is not None:
            self._key_timer.cancel()
            self._key_timer = None
        if digit == DTMF_END:
            self._send_keys()
        else:
            self._key_timer = asyncio.get_running_loop().call_later(self.config.dtmf_pause_s, self._send_keys)

    def send_text(self, text: str) -> None:
        self._queue(wire.user_text(text, self._event_id()))
        self._request_response()

    def send_tool_result(self, call_id: str, result: str) -> None:
        self._queue(wire.function_output(call_id, result, self._event_id()))
        self._request_response()

    def interrupted(self, turn_id: str, heard_text: str, heard_ms: int) -> None:
        for event in self._interpreter.interrupt(turn_id, heard_ms):
            self._queue(event)

    # -- agent side -----------------------------------------------------------------------

    async def events(self) -> AsyncIterator[AgentEvent]:
        while True:
            event = await self._events.get()
            if event is None:
                self._events.put_nowait(None)  # a later events() call ends too
                return
            yield event

    def withdraw_unsent_audio(self) -> np.ndarray:
        """Caller audio the server did not take: written after it ended the session, still
        queued for the writer, or in the batch being gathered."""
        self._collect_unsent()
        self._audio_withdrawn = True
        parts, self._unaccepted = self._unaccepted, []
        return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)

    def _collect_unsent(self) -> None:
        """Move every piece of caller audio not yet written into ``_unaccepted``, in order."""
        others: list[tuple[str, np.ndarray | None] | None] = []
        while not self._outbox.empty():
            item = self._outbox.get_nowait()
            if item is not None and item[1] is not None:
                self._keep_unaccepted(item[1])
            else:
                others.append(item)  # control events and the writer's end mark keep their order
        for item in others:
            self._outbox.put_nowait(item)
        for pcm in self._pending_pcm:
            self._keep_unaccepted(pcm)
        self._pending_pcm = []
        self._pending_audio.clear()
        self._pending_samples = 0

    async def close(self) -> None:
        if self._closed:
            return
        if self._server_ended:
            self._collect_unsent()  # a closed session takes nothing more
        else:
            self._flush_audio()  # the caller's last few milliseconds belong to this session too
        self._closed = True
        for timer in (self._flush_timer, self._key_timer):
            if timer is not None:
                timer.cancel()
        self._outbox.put_nowait(None)
        writer = self._tasks[1] if len(self._tasks) > 1 else None
        if writer is not None:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await writer  # what the session queued still goes out first
            except (TimeoutError, asyncio.CancelledError):
                writer.cancel()
        for task in self._tasks:
            task.cancel()
        await self._abort()
        self._end()

    # -- internals ------------------------------------------------------------------------

    def _event_id(self) -> str:
        return f"cb_{next(self._event_ids)}"

    def _queue(self, event: dict[str, Any]) -> None:
        if self._closed:
            return
        self._flush_audio()  # keep audio and control events in the order they were given
        self._outbox.put_nowait((json.dumps(event), None))

    def _flush_audio(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self._pending_audio or self._closed:
            return
        pcm = self._pending_pcm[0] if len(self._pending_pcm) == 1 else np.concatenate(self._pending_pcm)
        self._outbox.put_nowait((json.dumps(wire.audio_append(bytes(self._pending_audio))), pcm))
        self._interpreter.note_audio_sent(self._pending_samples)
        self._pending_audio.clear()
        self._pending_pcm = []
        self._pending_samples = 0

    def _request_response(self) -> None:
        if self._interpreter.active_response is not None or self._response_requested:
            self._response_deferred = True  # asked for once the current response is done
            return
        self._response_requested = True
        self._queue(wire.response_create(event_id=self._event_id()))

    def _track_responses(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "response.created" or (kind == "error" and (event.get("error") or {}).get("code")
                                          == "conversation_already_has_active_response"):
            self._response_requested = False
        elif kind == "response.done" and self._response_deferred:
            self._response_deferred = False
            self._request_response()

    def _send_keys(self) -> None:
        self._key_timer = None
        keys, self._keys = self._keys, ""
        if keys:
            self.send_text(f"The caller pressed {' '.join(keys)}")

    async def _send_now(self, event: dict[str, Any]) -> None:
        assert self._ws is not None
        try:
            await self._ws.send(json.dumps(event))
        except ConnectionClosed as exc:
            raise ProviderError(f"OpenAI Realtime closed during setup: {exc}", code=ErrorCode.UNAVAILABLE) from exc

    async def _write_loop(self) -> None:
        assert self._ws is not None
        while (item := await self._outbox.get()) is not None:
            message, pcm = item
            if pcm is not None:
                await let_reader_catch_up()
            if self._server_ended:
                self._keep_unaccepted(pcm)
                continue
            try:
                await self._ws.send(message)
            except ConnectionClosed:  # the reader reports why
                self._server_ended = True
                self._keep_unaccepted(pcm)

    def _keep_unaccepted(self, pcm: np.ndarray | None) -> None:
        if pcm is not None and not self._audio_withdrawn:
            self._unaccepted.append(pcm)

    async def _read_loop(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                try:
                    event = json.loads(raw)
                except json.JSONDecodeError:
                    log.warning("undecodable event from OpenAI Realtime")
                    continue
                for agent_event in self._interpreter.receive(event):
                    self._events.put_nowait(agent_event)
                for client_event in self._interpreter.take_outgoing():
                    self._queue(client_event)
                self._track_responses(event)
                if self._interpreter.failed:
                    break
        except ConnectionClosed:
            pass
        self._server_ended = True  # nothing written from now on reaches the model
        if not self._interpreter.failed and not self._closed:
            self._events.put_nowait(self._lost_connection())
        self._end()
        if not self._closed:
            self._closer = asyncio.get_running_loop().create_task(self.close())

    def _lost_connection(self) -> BackendError:
        assert self._ws is not None
        code, reason = self._ws.close_code, self._ws.close_reason or ""
        if "maximum duration" in reason:  # the 60-minute limit, if its error event was lost
            return BackendError(f"OpenAI Realtime session expired: {reason}", True, ErrorCode.SESSION_EXPIRED)
        detail = f"{code} {reason}".strip() if code is not None else "no close frame"
        return BackendError(f"OpenAI Realtime connection closed: {detail}", True, ErrorCode.UNAVAILABLE)

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._events.put_nowait(None)

    async def _abort(self) -> None:
        if self._ws is not None:
            try:
                await self._ws.close()
            except Exception:  # already gone; nothing left to release
                log.debug("closing the OpenAI socket failed", exc_info=True)


def _http_code(status: int) -> ErrorCode:
    if status in (401, 403):
        return ErrorCode.AUTH
    if status == 429:
        return ErrorCode.THROTTLED
    if status >= 500:
        return ErrorCode.UNAVAILABLE
    return ErrorCode.INVALID
