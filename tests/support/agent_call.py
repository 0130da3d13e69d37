"""A call's audio side, in process, for driving an AgentSession without SIP.

``CallSide`` is the session's ``CallPort``; its ``PacedStream`` has what a
real ``AudioStream`` gives the port: the real
playback queue (so marks, flushes and barge-in cuts behave exactly as on a
call), audio listeners for the caller's side, and a 20 ms clock that plays
the agent's audio out and keeps it for the test to inspect.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from callbridge.call.call import Call, Leg
from callbridge.call.transcript import CallTranscript
from callbridge.ivr.handoff import HandoffContext
from callbridge.media.playback import Interrupted, PlaybackQueue
from callbridge.media.sources import Source

FRAME_S = 0.02


class PacedStream:
    def __init__(self, sample_rate: int = 8000) -> None:
        self.sample_rate = sample_rate
        self.audio_listeners: list = []
        self.playback = PlaybackQueue(sample_rate, self._on_mark)
        self.sent: list[np.ndarray] = []  # what the caller heard, one frame a tick (silence as zeros)
        self._marks: dict[str, asyncio.Future] = {}
        self._ids = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _tick(self) -> None:
        samples = int(self.sample_rate * FRAME_S)
        while True:
            pcm = self.playback.read(samples)
            self.sent.append(np.zeros(samples, np.int16) if pcm is None else pcm)
            await asyncio.sleep(FRAME_S)

    def play(self, source: Source) -> asyncio.Future:
        self.playback.enqueue(source)
        return self.mark()

    def mark(self, name: str | None = None) -> asyncio.Future:
        self._ids += 1
        name = name or f"m{self._ids}"
        future = asyncio.get_running_loop().create_future()
        self._marks[name] = future
        self.playback.mark(name)
        return future

    def flush(self) -> Interrupted | None:
        return self.playback.flush()

    def _on_mark(self, name: str, played: bool) -> None:
        future = self._marks.pop(name, None)
        if future is not None and not future.done():
            future.set_result(played)

    def hear(self, pcm: np.ndarray) -> None:
        """One frame of the caller's voice, as the receive path delivers it."""
        for listener in list(self.audio_listeners):
            listener(pcm)

    def agent_audio_s(self) -> float:
        """Seconds of non-silent agent audio played so far."""
        return sum(1 for frame in self.sent if np.abs(frame).max(initial=0) > 200) * FRAME_S


def _test_call() -> Call:
    return Call(direction="inbound", leg=Leg(session=SimpleNamespace(call_id="agent-test")))


def _context() -> HandoffContext:
    return HandoffContext(agent="test", caller_number="+15555550100", caller_name=None, called_number=None,
                          language="en", reason="")


@dataclass
class CallSide:
    """The ``CallPort`` an AgentSession talks to: the stream, key presses, and a record of what happened.

    The transcript sink is the real one over a real (SIP-less) Call, so what a test reads back
    (``entries()``) is the call's own fold of the published events."""

    stream: PacedStream
    digits: asyncio.Queue = field(default_factory=asyncio.Queue)
    said: list[str] = field(default_factory=list)
    notes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    dtmf_sent: list[str] = field(default_factory=list)
    transfers: list[str] = field(default_factory=list)
    hung_up: str | None = None
    call: Call = field(default_factory=_test_call)
    context: HandoffContext = field(default_factory=_context)
    _ended: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.transcript = CallTranscript(self.call)

    @property
    def call_id(self) -> str:
        return self.call.id

    def entries(self) -> list[dict[str, Any]]:
        return self.transcript.entries()

    @property
    def sample_rate(self) -> int:
        return self.stream.sample_rate

    def add_audio_listener(self, listener) -> None:
        self.stream.audio_listeners.append(listener)

    def remove_audio_listener(self, listener) -> None:
        if listener in self.stream.audio_listeners:
            self.stream.audio_listeners.remove(listener)

    def play(self, source: Source) -> asyncio.Future:
        return self.stream.play(source)

    def mark(self) -> asyncio.Future:
        return self.stream.mark()

    def flush(self) -> Interrupted | None:
        return self.stream.flush()

    async def say(self, text: str, *, language: str, voice: str | None = None) -> None:
        self.said.append(text)

    async def say_line(self, text: str) -> None:
        self.said.append(text)

    async def read_digit(self, timeout: float) -> str | None:
        try:
            return await asyncio.wait_for(self.digits.get(), timeout)
        except TimeoutError:
            return None

    def send_dtmf(self, digits: str) -> None:
        self.dtmf_sent.append(digits)

    async def transfer(self, target: str) -> bool:
        self.transfers.append(target)
        return True

    async def hangup(self, reason: str) -> None:
        self.hung_up = reason
        self._ended.set()

    async def ended(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._ended.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def note(self, kind: str, **fields: Any) -> None:
        self.notes.append((kind, fields))


def tone(seconds: float, rate: int, freq: float = 300.0, level: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.int16)


async def talk(stream: PacedStream, pcm: np.ndarray, *, frame_s: float = FRAME_S) -> int:
    """Feed caller audio at real time, frame by frame; returns the frames sent."""
    size = int(stream.sample_rate * frame_s)
    frames = 0
    for start in range(0, len(pcm) - size + 1, size):
        stream.hear(pcm[start:start + size])
        frames += 1
        await asyncio.sleep(frame_s)
    return frames
