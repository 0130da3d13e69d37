"""A real call as an agent sees it: ``agent/callport.py``'s ``CallPort`` over a :class:`CallFlowIO`.

Made at the handoff, it keeps the call's media stream to itself: the agent gets
the caller's audio, a playback queue with marks and a flush, keys, transfer
and hang-up, the handoff context and a transcript sink that publishes every
change as an event on the call's stream. (The protocol is structural: nothing
here imports ``agent/``.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..call import events as ev
from ..call.transcript import CallTranscript
from ..media.playback import Interrupted
from ..media.sources import Source
from .handoff import HandoffContext

if TYPE_CHECKING:
    from .callio import CallFlowIO


class CallAgentPort:
    def __init__(self, io: "CallFlowIO", context: HandoffContext) -> None:
        self._io = io
        self._call = io.call
        self._stream = io.stream  # raises CallHungUp: a caller who left gets no agent
        self._context = context
        self._transcript = CallTranscript(io.call)

    @property
    def call_id(self) -> str:
        return self._call.id

    @property
    def context(self) -> HandoffContext:
        return self._context

    @property
    def transcript(self) -> CallTranscript:
        return self._transcript

    # -- caller audio in --------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self._stream.sample_rate

    def add_audio_listener(self, listener: Callable[[np.ndarray], None]) -> None:
        self._stream.audio_listeners.append(listener)

    def remove_audio_listener(self, listener: Callable[[np.ndarray], None]) -> None:
        if listener in self._stream.audio_listeners:
            self._stream.audio_listeners.remove(listener)

    # -- audio out --------------------------------------------------------------------------------

    def play(self, source: Source) -> asyncio.Future[bool]:
        return self._stream.play(source)

    def mark(self) -> asyncio.Future[bool]:
        return self._stream.mark()

    def flush(self) -> Interrupted | None:
        return self._stream.flush()

    async def say(self, text: str, *, language: str, voice: str | None = None) -> None:
        await self._io.say(text, language=language, voice=voice)

    # -- keys -------------------------------------------------------------------------------------

    async def read_digit(self, timeout: float) -> str | None:
        return await self._io.read_digit(timeout)

    def send_dtmf(self, digits: str) -> None:
        self._stream.send_dtmf(digits)
        method = "rfc4733" if self._stream.telephone_event_pt is not None else "inband"
        self._call.publish(ev.DtmfSent(digits=digits, method=method))

    # -- leaving ----------------------------------------------------------------------------------

    async def transfer(self, target: str) -> bool:
        return await self._io.transfer(target, method="refer", trunk=None)

    async def hangup(self, reason: str) -> None:
        await self._io.hangup(reason)

    async def ended(self, timeout: float | None = None) -> bool:
        return await self._call.ended(timeout)

    def note(self, kind: str, **fields: Any) -> None:
        self._io.record(kind, **fields)
