"""The provider-agnostic speech-to-speech interface every agent back end implements.

The offline ``local`` engine, Nova Sonic and OpenAI Realtime all look the same
to an agent session: audio, keys and text go in; a stream of typed events
comes out. The session owns turn-taking, barge-in and tools; a back end only
listens, thinks and speaks.

Audio in both directions is 16-bit mono PCM at the rate the back end states
(``input_rate`` / ``output_rate``); the session resamples to the call.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np


# -- what a back end emits ----------------------------------------------------------------

class ErrorCode(enum.StrEnum):
    """Why a provider session failed; the values are the words the transcript's error notes carry."""

    SESSION_EXPIRED = "session_expired"  # the provider's session-length limit (Nova: modelTimeoutException)
    THROTTLED = "throttled"
    UNAVAILABLE = "unavailable"  # connection refused or reset, 5xx, serviceUnavailable
    AUTH = "auth"  # bad credentials or signature: retrying cannot help
    INVALID = "invalid_request"  # the provider rejected what we sent
    INTERNAL = "internal"  # the model failed mid-stream; a fresh session usually works


@dataclass(frozen=True, slots=True)
class AgentAudio:
    """A chunk of the agent's voice; ``turn_id`` ties it to its transcript."""

    pcm: np.ndarray
    turn_id: str


@dataclass(frozen=True, slots=True)
class UserTranscript:
    text: str
    final: bool  # partial results may be revised until a final one arrives
    turn_id: str


@dataclass(frozen=True, slots=True)
class AgentTranscript:
    text: str
    turn_id: str
    final: bool = True


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The back end wants a tool run; the session answers with ``send_tool_result``."""

    call_id: str
    name: str
    arguments: str  # JSON text, exactly as the model produced it


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started talking: the session stops agent audio at once (barge-in)."""


@dataclass(frozen=True, slots=True)
class TurnEnded:
    turn_id: str
    reason: Literal["completed", "interrupted", "tool_call", "error"] = "completed"


@dataclass(frozen=True, slots=True)
class BackendError:
    """Something failed; ``recoverable`` False means the session must fall back.

    ``code`` is an :class:`ErrorCode`, so the session can tell an
    expired session (renew now) from throttling (back off) from bad credentials
    (give up at once)."""

    message: str
    recoverable: bool = True
    code: ErrorCode | None = None




@dataclass(frozen=True, slots=True)
class TurnTiming:
    """Where a turn's latency went, in ms. ``vad_ms`` runs from the end of the caller's speech
    until the turn was confirmed over (recognition may overlap it); then ``brain_ms``
    to the reply text and ``tts_first_ms`` to its first synthesised audio."""

    turn_id: str
    vad_ms: float
    stt_ms: float
    brain_ms: float
    tts_first_ms: float
    speech_ended_at: float  # time.monotonic() when the caller stopped talking


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    audio_seconds_in: float = 0.0
    audio_seconds_out: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


AgentEvent = (AgentAudio | UserTranscript | AgentTranscript | ToolCall | SpeechStarted | TurnEnded
              | TurnTiming | BackendError | Usage)


# -- what a session gives a back end --------------------------------------------------------

class ProviderError(Exception):
    """Raised by ``start()`` when a session cannot be opened; ``code`` as in :class:`BackendError`."""

    def __init__(self, message: str, *, code: ErrorCode = ErrorCode.UNAVAILABLE, recoverable: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.recoverable = recoverable


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    """What a provider accepts as priming history (Nova: 40 KB in all, 1 KB a message)."""

    total_bytes: int = 40_000
    message_bytes: int = 1024


@dataclass(frozen=True, slots=True)
class SessionSetup:
    instructions: str  # the agent's instructions with the handoff briefing rendered in
    language: str
    voice: str | None
    tools: list[dict[str, Any]]  # chat-completions "tools" schemas
    # prior turns for a renewed session, already fitted to the provider's HistoryLimits:
    # [{"role": "user"|"assistant", "text": ...}], starting with a user turn
    history: list[dict[str, str]] = field(default_factory=list)
    greeting: str | None = None  # said first, before the caller speaks; None on a renewed session


class RealtimeBackend(Protocol):
    """One provider session. ``start`` opens and primes it (system prompt, then history) and
    returns once it accepts audio, or raises :class:`ProviderError`. ``events`` ends when the
    session is over; a failure mid-session arrives as a :class:`BackendError` event first."""

    input_rate: int
    output_rate: int
    max_session_s: float | None  # the provider's hard session length (Nova: 480); None = unlimited
    history_limits: HistoryLimits

    async def start(self, setup: SessionSetup) -> None: ...
    def send_audio(self, pcm: np.ndarray) -> None: ...  # caller audio, never blocks
    def send_dtmf(self, digit: str) -> None: ...
    def send_text(self, text: str) -> None: ...
    def send_tool_result(self, call_id: str, result: str) -> None: ...
    # what the caller really heard of a turn cut short: its text, and how much audio played
    def interrupted(self, turn_id: str, heard_text: str, heard_ms: int) -> None: ...
    def events(self) -> AsyncIterator[AgentEvent]: ...
    # Stop taking caller audio and return (at ``input_rate``) every sample given to
    # ``send_audio`` that the provider has not accepted: still held or queued here, or
    # written after the provider ended the stream. The session replays it to the next
    # provider session, so a failed or server-ended session loses no caller audio.
    def withdraw_unsent_audio(self) -> np.ndarray: ...
    async def close(self) -> None: ...


# Loop turns a writer yields before each audio write: enough for bytes already on our socket (or a
# CRT callback already queued) to reach the reader, which marks a session the server has ended.
READER_CATCH_UP_TURNS = 3


async def let_reader_catch_up() -> None:
    """Give the reader the loop before writing caller audio.

    Neither provider acknowledges input audio, so audio written after the server ended a session
    is lost. Under load a writer could send several queued chunks in one loop turn while the
    end already sat unread on the socket; yielding first narrows that window to the network's
    own transit time, whatever the load."""
    for _ in range(READER_CATCH_UP_TURNS):
        await asyncio.sleep(0)

