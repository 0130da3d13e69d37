"""What an agent needs from a call, and nothing more.

An agent (the desk, a session, its tools, the holding agent) sees a call only
through a :class:`CallPort`: the caller's audio in, its own audio out with
marks and a flush for barge-in, the caller's keys, transfer and hang-up, the
handoff context, and a :class:`TranscriptSink` for the conversation. It never
reaches the call's SIP leg or media stream, so the call side can change (a
bridge, a worker in another process) without the agent noticing.

The call side implements these structurally (``ivr/agentport.py`` over a real
call; ``tests/support/agent_call.py`` in process): nothing below ``agent/``
imports this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from ..ivr.handoff import HandoffContext
from ..media.playback import Interrupted
from ..media.sources import Source

# One frame of the caller's voice, 16-bit mono at the port's ``sample_rate``; called on the media
# clock, so it must not block.
AudioListener = Callable[[np.ndarray], None]


class TranscriptSink(Protocol):
    """The agent's side of the call transcript: each change is published, never edited in place.

    ``turn`` is the index :meth:`add` (or :meth:`tool_called`, :meth:`renewed`) returned; later
    changes to that entry name it. The signatures are ``call/transcript.py``'s ``CallTranscript``.
    """

    def add(self, role: str, text: str | None = None, **details: Any) -> int:
        """A user or agent turn, or a note (dtmf, error, usage, fallback); returns its turn."""
        ...

    def update(self, turn: int, **changes: Any) -> None:
        """More of a turn (the next final sentence), or a mark such as ``cut_by_error``."""
        ...

    def tool_called(self, name: str, arguments: Mapping[str, Any] | str) -> int: ...

    def tool_finished(self, turn: int, name: str, *, ok: bool, duration_ms: float, result: Any = None,
                      error: str | None = None) -> None: ...

    def barge_in(self, turn: int, *, planned: str, heard: str, heard_s: float) -> None: ...

    def latency(self, turn: int, *, vad: float, stt: float, brain: float, tts_first_audio: float,
                total: float) -> None: ...

    def renewed(self, *, session: int, reason: str, prepare_ms: float, handover_ms: float,
                replayed_ms: float) -> int: ...

    def entries(self) -> list[dict[str, Any]]:
        """The transcript so far, as copies."""
        ...


class CallPort(Protocol):
    """One call, as an agent sees it."""

    @property
    def call_id(self) -> str: ...

    @property
    def context(self) -> HandoffContext:
        """Who is calling and what they already told the IVR (or the dispatch request)."""
        ...

    @property
    def transcript(self) -> TranscriptSink: ...

    # -- caller audio in ------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        """The call's audio rate, both ways."""
        ...

    def add_audio_listener(self, listener: AudioListener) -> None: ...

    def remove_audio_listener(self, listener: AudioListener) -> None: ...

    # -- audio out --------------------------------------------------------------------------------

    def play(self, source: Source) -> asyncio.Future[bool]:
        """Queue ``source``; resolves True once played out, False if a flush cut it."""
        ...

    def mark(self) -> asyncio.Future[bool]:
        """Resolves when everything queued before it has gone out (e.g. a turn's first packet)."""
        ...

    def flush(self) -> Interrupted | None:
        """Barge-in: silence from the next packet; says how much of the cut source was heard."""
        ...

    async def say(self, text: str, *, language: str, voice: str | None = None) -> None:
        """Speak one line with the offline voice (a filler, an apology); returns once played."""
        ...

    # -- keys -------------------------------------------------------------------------------------

    async def read_digit(self, timeout: float) -> str | None:
        """The caller's next key press, ``None`` after ``timeout`` seconds."""
        ...

    def send_dtmf(self, digits: str) -> None:
        """Press keys on the far end (RFC 4733, or tones in the audio)."""
        ...

    # -- leaving ----------------------------------------------------------------------------------

    async def transfer(self, target: str) -> bool:
        """Blind transfer (REFER); True once the far end took it."""
        ...

    async def hangup(self, reason: str) -> None: ...

    async def ended(self, timeout: float | None = None) -> bool:
        """True once the call is over; False if ``timeout`` passed first."""
        ...

    def note(self, kind: str, **fields: Any) -> None:
        """An entry on the call's IVR path (``agent_fallback``, ``agent_notice``)."""
        ...


__all__ = ["AudioListener", "CallPort", "TranscriptSink"]
