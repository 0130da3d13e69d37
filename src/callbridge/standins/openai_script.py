"""What the OpenAI Realtime stand-in says: a queue of scripted turns.

A turn is taken each time the server would answer: when its VAD commits a caller
utterance (the turn's ``transcript`` becomes the input transcription), and on each client
``response.create`` that is not the follow-up of a scripted function call (the greeting,
a text turn). The turn's ``answer`` is a spoken reply, a function call (whose follow-up
reply is spoken after the client's ``function_call_output`` and ``response.create``), or
an error. One script may serve several sessions in a row: turns are consumed in order
across them, as a renewed conversation continues.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

DEFAULT_SPEED = 20.0  # audio is generated this many times faster than real time, as the API does
DEFAULT_CHUNK_MS = 100
UNSCRIPTED_REPLY_MS = 200


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    audio_ms: int = 600
    speed: float = DEFAULT_SPEED  # 1.0 = real time; a slow reply stays "in progress" for barge-in tests
    chunk_ms: int = DEFAULT_CHUNK_MS


@dataclass(frozen=True, slots=True)
class FunctionCall:
    name: str
    arguments: str  # JSON text
    then: Reply  # spoken once the client returns the output and asks for a response


@dataclass(frozen=True, slots=True)
class ScriptedError:
    code: str | None
    message: str
    type: str = "server_error"
    partial_audio_ms: int = 0  # audio of a reply sent before the failure: an error mid-turn
    close: bool = False  # then drop the connection (1011), as a failed backend does


Answer = Reply | FunctionCall | ScriptedError


@dataclass(frozen=True, slots=True)
class Turn:
    transcript: str | None
    answer: Answer | None


class OpenAIRealtimeScript:
    """Built by a test: ``script.reply("Hello", audio_ms=800).function_call(...)``."""

    def __init__(self, *, session_limit_s: float | None = None) -> None:
        self.session_limit_s = session_limit_s  # stands in for the 60-minute limit
        self._turns: deque[Turn] = deque()
        self._lock = threading.Lock()  # the CLI may build scripts from another thread
        self.unscripted = 0  # turns asked for after the script ran out

    def add(self, turn: Turn) -> OpenAIRealtimeScript:
        with self._lock:
            self._turns.append(turn)
        return self

    def reply(self, text: str, *, audio_ms: int = 600, transcript: str | None = None,
              speed: float = DEFAULT_SPEED) -> OpenAIRealtimeScript:
        return self.add(Turn(transcript, Reply(text, audio_ms, speed)))

    def function_call(self, name: str, arguments: dict[str, Any] | str, then: Reply, *,
                      transcript: str | None = None) -> OpenAIRealtimeScript:
        args = arguments if isinstance(arguments, str) else json.dumps(arguments)
        return self.add(Turn(transcript, FunctionCall(name, args, then)))

    def error(self, code: str | None, message: str, *, type: str = "server_error", transcript: str | None = None,
              partial_audio_ms: int = 0, close: bool = False) -> OpenAIRealtimeScript:
        return self.add(Turn(transcript, ScriptedError(code, message, type, partial_audio_ms, close)))

    def listen(self, transcript: str) -> OpenAIRealtimeScript:
        """A caller turn the model does not answer (only its transcript is produced)."""
        return self.add(Turn(transcript, None))

    def next_turn(self) -> Turn:
        with self._lock:
            if self._turns:
                return self._turns.popleft()
            self.unscripted += 1
        return Turn(None, Reply("(unscripted)", UNSCRIPTED_REPLY_MS))

    @property
    def remaining(self) -> int:
        return len(self._turns)
