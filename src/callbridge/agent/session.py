"""One call's conversation with an agent back end.

The session is the only place that knows both sides: it feeds the caller's
audio and keys to the back end, plays the agent's audio on the call, stops it
the moment the caller talks over it (barge-in) and tells the back end what
was really heard, runs the tools the back end asks for, and writes every turn
with its latency into the call's transcript.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from ..media.resample import StreamResampler
from ..media.sources import PcmStream
from .realtime import (
    AgentAudio,
    AgentTranscript,
    BackendError,
    RealtimeBackend,
    SessionSetup,
    SpeechStarted,
    ToolCall,
    TurnEnded,
    TurnTiming,
    UserTranscript,
)
from .tools import ToolContext, ToolRegistry

log = logging.getLogger("callbridge.agent")


class AgentSession:
    def __init__(self, io: Any, backend: RealtimeBackend, tools: ToolRegistry, context: ToolContext,
                 transcript: list[dict[str, Any]]) -> None:
        self.io = io
        self.backend = backend
        self.tools = tools
        self.context = context
        self.transcript = transcript
        self._stream = io.stream
        self._to_backend = (StreamResampler(self._stream.sample_rate, backend.input_rate)
                            if self._stream.sample_rate != backend.input_rate else None)
        self._playing: PcmStream | None = None
        self._playing_turn: str | None = None
        self.last_played: asyncio.Future | None = None  # resolves when the agent's latest audio has played
        self._agent_entries: dict[str, dict[str, Any]] = {}
        self._timings: dict[str, TurnTiming] = {}
        self._tasks: set[asyncio.Task] = set()

    # -- running ------------------------------------------------------------------------------

    async def run(self, setup: SessionSetup) -> None:
        self._stream.audio_listeners.append(self._hear)
        keys = asyncio.get_running_loop().create_task(self._forward_keys())
        try:
            await self.backend.start(setup)
            async for event in self.backend.events():
                self._handle(event)
        finally:
            keys.cancel()
            for task in list(self._tasks):
                task.cancel()
            if self._hear in self._stream.audio_listeners:
                self._stream.audio_listeners.remove(self._hear)
            await self.backend.close()

    def _hear(self, pcm: np.ndarray) -> None:
        if self._to_backend is not None:
            pcm = self._to_backend.process(pcm)
        self.backend.send_audio(pcm)

    async def _forward_keys(self) -> None:
        while True:
            digit = await self.io.read_digit(3600)
            if digit is not None:
                self._note({"role": "dtmf", "digit": digit})
                self.backend.send_dtmf(digit)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- events ---------------------------------------------------------------------------------

    def _handle(self, event) -> None:
        if isinstance(event, AgentAudio):
            self._play(event)
        elif isinstance(event, SpeechStarted):
            self._barge_in()
        elif isinstance(event, UserTranscript):
            if event.final:
                self._note({"role": "user", "text": event.text, "turn_id": event.turn_id})
        elif isinstance(event, AgentTranscript):
            entry = {"role": "agent", "text": event.text, "turn_id": event.turn_id}
            self._agent_entries[event.turn_id] = entry
            self._note(entry)
        elif isinstance(event, ToolCall):
            self._spawn(self._run_tool(event))
        elif isinstance(event, TurnTiming):
            self._timings[event.turn_id] = event
        elif isinstance(event, TurnEnded):
            if self._playing is not None and self._playing_turn == event.turn_id:
                self._playing.end()
        elif isinstance(event, BackendError):
            log.warning("agent back end error: %s", event.message)
            self._note({"role": "error", "text": event.message})

    def _note(self, entry: dict[str, Any]) -> None:
        entry.setdefault("at", round(time.time(), 3))
        self.transcript.append(entry)

    def _play(self, event: AgentAudio) -> None:
        if self._playing_turn != event.turn_id or self._playing is None:
            if self._playing is not None:
                self._playing.end()
            self._playing = PcmStream(self.backend.output_rate, self._stream.sample_rate, label=f"agent {event.turn_id}")
            self._playing_turn = event.turn_id
            first_packet = self._stream.mark()  # fires as the first sample of this turn goes out
            first_packet.add_done_callback(lambda _f, turn=event.turn_id: self._first_packet(turn))
            self.last_played = self._stream.play(self._playing)
        self._playing.write(event.pcm)

    def _first_packet(self, turn_id: str) -> None:
        timing = self._timings.pop(turn_id, None)
        entry = self._agent_entries.get(turn_id)
        if timing is None or entry is None:
            return  # the greeting: nobody spoke before it
        total = (time.monotonic() - timing.speech_ended_at) * 1000
        entry["latency_ms"] = {"vad": round(timing.vad_ms), "stt": round(timing.stt_ms),
                               "brain": round(timing.brain_ms), "tts_first_audio": round(timing.tts_first_ms),
                               "total": round(total)}

    def _barge_in(self) -> None:
        playing, turn = self._playing, self._playing_turn
        if playing is None or turn is None:
            return
        if self.last_played is not None and self.last_played.done():
            self._playing = self._playing_turn = None  # it had finished: nothing to cut
            return
        cut = self._stream.flush()  # silence on the wire from the next packet
        self._playing = self._playing_turn = None
        played = cut.played_samples if cut is not None and cut.source is playing else 0
        written = max(playing.samples_written, 1)
        entry = self._agent_entries.get(turn)
        heard = ""
        if entry is not None:
            words = entry["text"].split()
            heard = " ".join(words[:round(len(words) * min(played / written, 1.0))])
            entry.update(planned=entry["text"], text=heard, interrupted=True,
                         heard_s=round(played / self._stream.sample_rate, 2))
        self.backend.interrupted(turn, heard, round(played * 1000 / self._stream.sample_rate))

    async def _run_tool(self, call: ToolCall) -> None:
        # Noted before it runs: a transfer or hang-up that works ends the call, and this task with it.
        entry: dict[str, Any] = {"role": "tool", "name": call.name, "arguments": call.arguments, "ok": None}
        self._note(entry)
        result = await self.tools.invoke(call.name, call.arguments, self.context)
        entry.update(ok=result.ok, duration_ms=round(result.duration_ms, 1))
        entry["result" if result.ok else "error"] = result.value if result.ok else result.error
        self.backend.send_tool_result(call.call_id, result.to_model_text())


