"""What the Bedrock stand-in's "model" does (a script the test writes) and what it saw (a record).

A script is a list of steps, one per detected caller turn (or interactive text turn):

- :class:`Say`: transcribe the caller (``user_text``), then answer with SPECULATIVE text,
  ``audio_ms`` of 24 kHz tone sent as fast as possible, and the FINAL text once that much
  audio would have played. Caller speech during that window is a barge-in.
- :class:`CallTool`: transcribe, ask for a tool, wait for its result, then play ``then``.
- :class:`Fail`: optionally start answering, then raise a Bedrock stream exception and close.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_ACCESS_KEY = "AKIDSTANDIN0000000000"
DEFAULT_SECRET_KEY = "standin/secret/key/for/tests/only0000000"


@dataclass(frozen=True, slots=True)
class Say:
    text: str
    audio_ms: int = 300
    user_text: str | None = None
    speculative: str | None = None  # defaults to ``text``
    tone_hz: float = 440.0


@dataclass(frozen=True, slots=True)
class CallTool:
    name: str
    arguments: dict[str, Any]
    then: Say
    user_text: str | None = None


@dataclass(frozen=True, slots=True)
class Fail:
    exception: str = "internalServerException"  # one of the stream's exception members
    message: str = "the model failed"
    user_text: str | None = None
    speculative: str | None = None  # text sent before failing: an error mid-turn


Step = Say | CallTool | Fail


@dataclass(slots=True)
class BedrockScript:
    turns: list[Step] = field(default_factory=list)
    greeting: Say | None = None  # played for the first interactive USER text before any audio
    fallback: Step | None = None  # played once ``turns`` are used up (None: stay silent)
    speech_rms: float = 300.0  # int16 RMS above which a 10 ms block counts as speech
    end_of_turn_ms: int = 300  # quiet after speech that ends a caller turn (Nova: 1.5-2 s)
    session_limit_s: float | None = None  # Bedrock's 8 minutes, shortened for tests
    # what ends a session at its limit: Bedrock sends modelTimeoutException; any stream
    # exception can be named to end sessions "after an error" on the same clock
    session_limit_exception: str = "modelTimeoutException"
    credentials: dict[str, str] = field(default_factory=lambda: {DEFAULT_ACCESS_KEY: DEFAULT_SECRET_KEY})
    # True: one conversation across sessions, as a renewed session continues it;
    # False: every session starts the script from its first turn
    shared_turns: bool = False


@dataclass(slots=True)
class SessionRecord:
    """Everything one stream sent, in order, for tests to inspect."""

    model_id: str = ""
    region: str = ""  # from the request's credential scope
    events: list[str] = field(default_factory=list)  # input event names in arrival order
    session_start: dict[str, Any] = field(default_factory=dict)
    prompt_start: dict[str, Any] = field(default_factory=dict)
    system_prompt: str | None = None
    history: list[tuple[str, str]] = field(default_factory=list)  # (role, text) before audio
    interactive_texts: list[tuple[str, str]] = field(default_factory=list)  # (role, text)
    audio: bytearray = field(default_factory=bytearray)  # caller PCM exactly as received
    audio_frames: int = 0  # audioInput events
    tool_results: list[tuple[str, str]] = field(default_factory=list)  # (toolUseId, content)
    rejected: list[str] = field(default_factory=list)  # why the stand-in closed with an error
    sent_exceptions: list[str] = field(default_factory=list)
    ended_cleanly: bool = False  # sessionEnd arrived
