"""Amazon Nova Sonic (Bedrock ``InvokeModelWithBidirectionalStream``) as a realtime back end.

Uses the official ``aws-sdk-bedrock-runtime`` (pinned 0.12.0) with the CRT HTTP/2 transport:
the SDK's default aiohttp transport cannot do duplex streams. The event building and
parsing live in :mod:`nova_events`; this module only moves them: one writer task feeds
the signed input stream from a queue (so ``send_audio`` never blocks), one reader task
turns output into :data:`AgentEvent` values.

DTMF: Nova has no key input, so a key press is a short user text turn
("The caller pressed 4"). ``interrupted`` is a no-op: Nova's FINAL text already stops
where the barge-in cut the reply, and the stream has no way to truncate it further.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
from aws_sdk_bedrock_runtime.client import AsyncBedrockRuntimeClient
from aws_sdk_bedrock_runtime.config import AsyncBedrockRuntimeConfig
from aws_sdk_bedrock_runtime.models import (
    BidirectionalInputPayloadPart,
    InvokeModelWithBidirectionalStreamInputChunk,
    InvokeModelWithBidirectionalStreamOperationInput,
    InvokeModelWithBidirectionalStreamOutputChunk,
)
from smithy_aws_core.config.exceptions import ConfigValidationError
from smithy_http.aio.crt import AWSCRTHTTPClient

from callbridge.agent.providers.bedrock_clients import ClientLease, lease_client, return_client
from callbridge.agent.providers.chunking import CallerAudioChunker
from callbridge.agent.providers.nova_events import (
    AUDIO_CHUNK_SAMPLES,
    QUIET_AUDIO_CHUNK_SAMPLES,
    INPUT_RATE,
    OUTPUT_RATE,
    NovaInput,
    NovaOutput,
    PromptSettings,
    classify_error,
    decode_output_event,
    error_event,
)
from callbridge.agent.realtime import (AgentAudio, AgentEvent, HistoryLimits, ProviderError, SessionSetup,
                                       TurnEnded, let_reader_catch_up)

log = logging.getLogger(__name__)

NOVA_2 = "amazon.nova-2-sonic-v1:0"
NOVA_1 = "amazon.nova-sonic-v1:0"
DEFAULT_REGION = "us-east-1"
SESSION_LIMIT_S = 480.0  # Bedrock closes a bidirectional stream after 8 minutes
OPEN_TIMEOUT_S = 15.0  # until Bedrock answers the request (403 arrives here)
CLOSE_TIMEOUT_S = 3.0  # for the closing events to go out and the stream to end
ABORT_TIMEOUT_S = 0.5  # a stream that failed has nothing left to send: do not hold the caller for it
DTMF_TEXT = "The caller pressed {digit}"
GREETING_TEXT = 'Greet the caller now by saying exactly: "{greeting}"'
ROLES = {"user": "USER", "assistant": "ASSISTANT"}


@dataclass(frozen=True, slots=True)
class NovaSonicConfig:
    model_id: str = NOVA_2
    region: str | None = None  # None: AWS_REGION / profile, else us-east-1
    endpoint_uri: str | None = None  # e.g. the local stand-in
    voice: str = "matthew"
    endpointing_sensitivity: Literal["LOW", "MEDIUM", "HIGH"] | None = None  # Nova 2 only
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 1024
    max_session_s: float = SESSION_LIMIT_S
    max_attempts: int = 3
    aws_access_key_id: str | None = None  # None: the standard AWS credential chain
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None

    @property
    def is_nova_2(self) -> bool:
        return "nova-2-sonic" in self.model_id


def provider_error(what: str, exc: BaseException) -> ProviderError:
    code, recoverable, message = classify_error(exc)
    return ProviderError(f"{what}: {message}", code=code, recoverable=recoverable)


class NovaSonicBackend:
    input_rate = INPUT_RATE
    output_rate = OUTPUT_RATE

    def __init__(self, config: NovaSonicConfig | None = None) -> None:
        self.config = config or NovaSonicConfig()
        self.max_session_s: float | None = self.config.max_session_s
        self.history_limits = HistoryLimits(total_bytes=40_000, message_bytes=1024)
        self.audio_samples_sent = 0  # caller samples actually written to the stream
        self._input = NovaInput()
        self._output = NovaOutput()
        # (event, the caller PCM in it: b"" for other events); None ends the writer
        self._outgoing: asyncio.Queue[tuple[dict[str, Any], bytes] | None] = asyncio.Queue()
        self._events: asyncio.Queue[AgentEvent | None] = asyncio.Queue()
        self._held: list[tuple[dict[str, Any], bytes]] = []  # sent before start() opened the audio
        self._audio_open = False
        # Bedrock has ended the stream (an exception, or the end of its output): whatever is
        # written from then on is lost, so caller audio stays here for the next session.
        self._server_ended = False
        self._unaccepted: list[bytes] = []  # caller PCM the stream did not take, in order
        self._audio_withdrawn = False
        # Small audio events while the model listens for the end of a turn, large ones otherwise.
        self._chunker = CallerAudioChunker(INPUT_RATE, listening_samples=AUDIO_CHUNK_SAMPLES,
                                           quiet_samples=QUIET_AUDIO_CHUNK_SAMPLES)
        self._stream: Any = None
        self._lease: ClientLease | None = None  # the shared client this session's stream runs on
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------

    def _region(self) -> str | None:
        return self.config.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")

    def _endpoint_port(self) -> int:
        return urlsplit(self.config.endpoint_uri).port or 443 if self.config.endpoint_uri else 443

    def _client_key(self) -> tuple:
        """What makes two sessions' clients interchangeable."""
        cfg = self.config
        return (self._region(), cfg.endpoint_uri, cfg.aws_access_key_id, cfg.aws_secret_access_key,
                cfg.aws_session_token, cfg.max_attempts)

    async def _build_client(self, transport: AWSCRTHTTPClient) -> AsyncBedrockRuntimeClient:
        cfg = self.config
        overrides: dict[str, Any] = {"transport": transport, "max_attempts": cfg.max_attempts}
        region = self._region()
        if region:
            overrides["region"] = region
        if cfg.endpoint_uri:
            overrides["endpoint_uri"] = cfg.endpoint_uri
        if cfg.aws_access_key_id and cfg.aws_secret_access_key:
            overrides["aws_access_key_id"] = cfg.aws_access_key_id
            overrides["aws_secret_access_key"] = cfg.aws_secret_access_key
            if cfg.aws_session_token:
                overrides["aws_session_token"] = cfg.aws_session_token
        try:
            resolved = await AsyncBedrockRuntimeConfig.resolve(**overrides)
        except ConfigValidationError:
            if "region" in overrides:
                raise
            # no region in the environment or the profile: Nova Sonic's home region
            resolved = await AsyncBedrockRuntimeConfig.resolve(**overrides, region=DEFAULT_REGION)
        return AsyncBedrockRuntimeClient(config=resolved)

    async def _release_client(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            await return_client(lease)

    async def start(self, setup: SessionSetup) -> None:
        cfg = self.config
        settings = PromptSettings(
            voice=setup.voice or cfg.voice, tools=setup.tools, max_tokens=cfg.max_tokens, top_p=cfg.top_p,
            temperature=cfg.temperature,
            endpointing_sensitivity=cfg.endpointing_sensitivity if cfg.is_nova_2 else None)
        try:
            self._lease = await lease_client(self._client_key(), self._build_client, port=self._endpoint_port())
        except Exception as exc:
            raise provider_error("cannot open Nova Sonic stream", exc) from exc
        async with self._lease.opening():
            try:
                self._stream = await self._lease.client.invoke_model_with_bidirectional_stream(
                    InvokeModelWithBidirectionalStreamOperationInput(model_id=cfg.model_id))
            except Exception as exc:
                await self._release_client()
                raise provider_error("cannot open Nova Sonic stream", exc) from exc
            self._queue_setup(setup, settings)
            self._writer = asyncio.create_task(self._write_loop(), name="nova-sonic-writer")
            try:
                async with asyncio.timeout(OPEN_TIMEOUT_S):
                    _, receiver = await self._stream.await_output()
            except Exception as exc:
                await self._abort()
                raise provider_error("Nova Sonic refused the session", exc) from exc
        self._reader = asyncio.create_task(self._read_loop(receiver), name="nova-sonic-reader")

    def _queue_setup(self, setup: SessionSetup, settings: PromptSettings) -> None:
        # Order matters to Bedrock: session, prompt, SYSTEM text, history, then audio.
        cfg = self.config
        setup_events = self._input.session_start(settings) + self._input.prompt_start(settings)
        setup_events += self._input.text("SYSTEM", setup.instructions, interactive=False)
        for message in setup.history:
            setup_events += self._input.text(ROLES[message["role"]], message["text"], interactive=False)
        if setup.greeting:
            if cfg.is_nova_2:
                setup_events += self._input.text(
                    "USER", GREETING_TEXT.format(greeting=setup.greeting), interactive=True)
            else:
                log.warning("Nova Sonic v1 cannot speak first; the greeting is skipped")
        setup_events += self._input.audio_start()
        for event in setup_events:
            self._outgoing.put_nowait((event, b""))
        self._audio_open = True
        for item in self._held:
            self._outgoing.put_nowait(item)
        self._held.clear()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._stream is None:
            self._events.put_nowait(None)
            return
        if self._server_ended:
            self._collect_unsent()  # a dead stream takes nothing more, not even its closing events
        if self._writer is not None and not self._writer.done():
            if not self._server_ended:
                for tail in self._chunker.flush():  # the last partial chunk: every sample sent must arrive
                    self._outgoing.put_nowait((self._input.audio(tail), tail))
                for event in self._input.close():
                    self._outgoing.put_nowait((event, b""))
            self._outgoing.put_nowait(None)
            await self._settle(self._writer)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._stream.input_stream.close()  # the signed empty envelope ends the body
        except Exception as exc:  # noqa: BLE001 - the stream may already be gone; nothing left to tell anyone
            log.debug("closing Nova Sonic input stream: %s", exc)
        if self._reader is not None:
            await self._settle(self._reader)
        await self._close_output()
        await self._release_client()

    async def _abort(self) -> None:
        self._closed = True
        # Bounded: on a connection that never came up, the SDK's close can wait forever.
        try:
            async with asyncio.timeout(ABORT_TIMEOUT_S):
                if self._writer is not None:
                    self._writer.cancel()
                    await asyncio.gather(self._writer, return_exceptions=True)
                await self._stream.input_stream.close()
        except Exception as exc:  # noqa: BLE001 - aborting: nothing more to save
            log.debug("aborting Nova Sonic input stream: %r", exc)
        self._events.put_nowait(None)
        await self._release_client()

    async def _settle(self, task: asyncio.Task[None]) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _close_output(self) -> None:
        output = getattr(self._stream, "output_stream", None)
        if output is not None:
            try:
                await output.close()
            except Exception as exc:  # noqa: BLE001 - a stream already gone has nothing to close
                log.debug("closing Nova Sonic output stream: %s", exc)

    # -- the two tasks ----------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while (item := await self._outgoing.get()) is not None:
            event, audio = item
            if audio:
                await let_reader_catch_up()
            if self._server_ended:
                self._keep_unaccepted(audio)
                continue
            chunk = InvokeModelWithBidirectionalStreamInputChunk(
                value=BidirectionalInputPayloadPart(bytes_=json.dumps(event).encode("utf-8")))
            try:
                await self._stream.input_stream.send(chunk)
            except Exception as exc:  # noqa: BLE001 - the reader reports why the stream ended
                log.info("Nova Sonic input stream closed: %s", exc)
                self._server_ended = True
                self._keep_unaccepted(audio)
                continue  # the rest of the queue is kept the same way
            self.audio_samples_sent += len(audio) // 2

    def _keep_unaccepted(self, audio: bytes) -> None:
        if audio and not self._audio_withdrawn:
            self._unaccepted.append(audio)

    async def _read_loop(self, receiver: Any) -> None:
        try:
            while (item := await receiver.receive()) is not None:
                if not isinstance(item, InvokeModelWithBidirectionalStreamOutputChunk):
                    log.warning("unexpected Nova Sonic output %r", type(item).__name__)
                    continue
                event = decode_output_event(item.value.bytes_)
                if event is None:
                    log.warning("undecodable Nova Sonic event dropped")
                    continue
                for agent_event in self._output.feed(event):
                    if isinstance(agent_event, AgentAudio):
                        self._chunker.model_answered()
                    elif isinstance(agent_event, TurnEnded):
                        self._chunker.model_finished()
                    self._events.put_nowait(agent_event)
        except Exception as exc:  # noqa: BLE001 - any stream failure becomes the session's error event
            self._server_ended = True  # before the session hears of it: it withdraws what was not taken
            error = error_event(exc)
            log.warning("Nova Sonic stream ended: %s (%s)", error.message, error.code)
            self._events.put_nowait(error)
        finally:
            self._server_ended = True
            self._events.put_nowait(None)

    # -- input ------------------------------------------------------------------------------

    def _enqueue(self, event: dict[str, Any], audio: bytes = b"") -> None:
        if self._closed:
            return
        if self._audio_open:
            self._outgoing.put_nowait((event, audio))
        else:
            self._held.append((event, audio))

    def send_audio(self, pcm: np.ndarray) -> None:
        if self._audio_withdrawn:
            return
        if self._closed:
            if self._server_ended:  # ended by Bedrock and closed before the session withdrew it
                self._keep_unaccepted(np.asarray(pcm, dtype="<i2").tobytes())
            return
        for chunk in self._chunker.feed(pcm):
            self._enqueue(self._input.audio(chunk), chunk)

    def withdraw_unsent_audio(self) -> np.ndarray:
        """Caller audio Bedrock did not take: written after it ended the stream, still queued
        for the writer, held before the stream opened, or in the chunker's partial event."""
        self._collect_unsent()
        self._audio_withdrawn = True
        parts, self._unaccepted = self._unaccepted, []
        return np.frombuffer(b"".join(parts), dtype="<i2").copy()

    def _collect_unsent(self) -> None:
        """Move every piece of caller audio not yet written into ``_unaccepted``, in order."""
        others: list[tuple[dict[str, Any], bytes] | None] = []
        while not self._outgoing.empty():
            item = self._outgoing.get_nowait()
            if item is not None and item[1]:
                self._keep_unaccepted(item[1])
            else:
                others.append(item)  # control events and the writer's end mark keep their order
        for item in others:
            self._outgoing.put_nowait(item)
        for _, audio in self._held:
            self._keep_unaccepted(audio)
        self._held = [(event, audio) for event, audio in self._held if not audio]
        for tail in self._chunker.flush():
            self._keep_unaccepted(tail)

    def send_text(self, text: str) -> None:
        for event in self._input.text("USER", text, interactive=True):
            self._enqueue(event)

    def send_dtmf(self, digit: str) -> None:
        self.send_text(DTMF_TEXT.format(digit=digit))

    def send_tool_result(self, call_id: str, result: str) -> None:
        for event in self._input.tool_result(call_id, result):
            self._enqueue(event)

    def interrupted(self, turn_id: str, heard_text: str, heard_ms: int) -> None:
        """Nothing to send: Nova's FINAL text already ends where the barge-in cut the reply."""

    async def events(self) -> AsyncIterator[AgentEvent]:
        while (event := await self._events.get()) is not None:
            yield event
