"""One call's conversation with an agent back end, across as many provider sessions as it takes.

The session is the only place that knows both sides: it feeds the caller's
audio and keys to the back end, plays the agent's audio on the call, stops it
the moment the caller talks over it (barge-in) and tells the back end what
was really heard, runs the tools the back end asks for, and writes every turn
with its latency into the call's transcript.

Provider sessions are disposable. Some end by design (Nova Sonic after 8
minutes), some fail (throttling, a dropped connection). The call must not
notice either:

* **Renewal.** From ``renew_fraction`` of the provider's limit, the next
  session is opened and primed with the conversation so far while the current
  one still serves. At the next turn boundary (agent silent, caller quiet, no
  tool running) the caller's audio switches to it: every frame goes to exactly
  one session. If no boundary comes before ``force_margin_s`` of the limit is
  left, the handover is forced: caller audio from that moment is buffered and
  replayed to the new session once it is ready.
* **Recovery.** When the current session fails, caller audio is buffered from
  that moment, a new session is opened with bounded backoff and primed with
  the history, the buffer is replayed, and an unanswered caller turn is asked
  again. A short filler covers the gap so there is never long dead air.
* **Fallback.** When the provider stays down (or rejects our credentials),
  the caller hears an apology and the desk's fallback (a transfer, an IVR
  node) takes over. The call is never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..media.resample import StreamResampler
from ..media.sources import PcmStream
from .history import conversation_turns, fit_history
from .realtime import (
    ERROR_AUTH,
    ERROR_SESSION_EXPIRED,
    AgentAudio,
    AgentTranscript,
    BackendError,
    ProviderError,
    RealtimeBackend,
    SessionSetup,
    SpeechStarted,
    ToolCall,
    TurnEnded,
    TurnTiming,
    Usage,
    UserTranscript,
)
from .tools import ToolContext, ToolRegistry

log = logging.getLogger("callbridge.agent")

VOICE_PEAK = 1000  # int16 peak (~-30 dBFS) above which a caller frame counts as speech, for turn boundaries
CALLER_QUIET_S = 0.3  # caller silence that makes a turn boundary
UNANSWERED_WAIT_S = 3.0  # a caller noise the provider never answered stops blocking a renewal after this


@dataclass(frozen=True)
class SessionPolicy:
    renew_fraction: float = 0.75  # Nova: renew from 6 of its 8 minutes
    force_margin_s: float = 30.0  # hand over regardless when this little is left (capped at 10% of the limit)
    retry_delays_s: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # reconnect backoff, bounded
    open_timeout_s: float = 5.0  # one attempt at opening a session
    filler_after_s: float = 1.0  # dead air before the filler plays while reconnecting
    filler_text: str = "One moment, please."
    apology_text: str = "I'm sorry, I'm having trouble right now. Let me get someone to help you."


# speaks a line on the call and returns when it has played (the desk builds it on the offline TTS)
SayLine = Callable[[str], Awaitable[None]]


@dataclass(eq=False)
class _Link:
    """One provider session and its event pump."""

    backend: RealtimeBackend
    generation: int
    opened_at: float
    history_size: int  # transcript turns it was primed with: stale once the conversation moves on
    pump: asyncio.Task | None = None


_ENDED = object()  # a link's event stream is over


class SessionFailed(Exception):
    """The provider stayed down: the desk runs its fallback."""


class AgentSession:
    def __init__(self, io: Any, open_backend: Callable[[], RealtimeBackend], tools: ToolRegistry,
                 context: ToolContext, transcript: list[dict[str, Any]], *, policy: SessionPolicy | None = None,
                 say: SayLine | None = None) -> None:
        self.io = io
        self.open_backend = open_backend
        self.tools = tools
        self.context = context
        self.transcript = transcript
        self.policy = policy or SessionPolicy()
        self.say = say
        self._stream = io.stream
        self._setup: SessionSetup | None = None
        self._link: _Link | None = None
        self._next: _Link | None = None  # primed and waiting for a turn boundary
        self._generations = 0
        self._inbox: asyncio.Queue[tuple[_Link, Any]] = asyncio.Queue()
        self._to_backend: StreamResampler | None = None
        self._to_backend_rate = 0
        self._next_prepare_ms = 0.0
        self._buffer: list[np.ndarray] | None = None  # caller audio held while no session can take it
        self._playing: PcmStream | None = None
        self._playing_turn: tuple[int, str] | None = None
        self.last_played: asyncio.Future | None = None  # resolves when the agent's latest audio has played
        self._agent_entries: dict[tuple[int, str], dict[str, Any]] = {}
        self._timings: dict[tuple[int, str], TurnTiming] = {}
        self._tasks: set[asyncio.Task] = set()
        self._agent_busy = False
        self._tools_running = 0
        self._caller_voice_at = 0.0
        self._turn_ended_at = 0.0
        self._recovering = False
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self.renewals: list[dict[str, Any]] = []
        self.samples_forwarded = 0  # caller audio handed to providers, at their rate

    # -- running ------------------------------------------------------------------------------

    async def run(self, setup: SessionSetup) -> None:
        """Converse until the call ends; raises :class:`SessionFailed` when the provider stays down."""
        self._setup = setup
        self._stream.audio_listeners.append(self._hear)
        loop = asyncio.get_running_loop()
        keys = loop.create_task(self._forward_keys())
        try:
            self._buffer = []  # the caller may speak while the first session opens
            try:
                link = await self._open_with_retries(first=True)
            except SessionFailed:
                await self._fall_back()
            self._adopt(link)
            renewals = loop.create_task(self._renew_when_due())
            try:
                await self._dispatch_events()
            finally:
                renewals.cancel()
        finally:
            keys.cancel()
            for task in list(self._tasks):
                task.cancel()
            if self._hear in self._stream.audio_listeners:
                self._stream.audio_listeners.remove(self._hear)
            for link in (self._link, self._next):
                if link is not None:
                    await self._close_link(link)
            if self.usage["input_tokens"] or self.usage["output_tokens"]:
                self._note({"role": "usage", **self.usage})

    async def _dispatch_events(self) -> None:
        while True:
            link, event = await self._inbox.get()
            if link is not self._link:
                continue  # a retired session: whatever it still says is not part of the call
            if event is _ENDED:
                await self._recover(BackendError("the provider closed the session", code=None))
            elif isinstance(event, BackendError) and event.code is not None:
                # a coded error ends the provider session: move to a fresh one
                self._note({"role": "error", "text": event.message, "code": event.code})
                await self._recover(event)
            else:
                self._handle(link, event)

    # -- caller audio and keys -------------------------------------------------------------------

    def _hear(self, pcm: np.ndarray) -> None:
        if self._to_backend is not None:
            pcm = self._to_backend.process(pcm)
        if len(pcm) and int(pcm.max()) > VOICE_PEAK:  # the positive peak: cheap, and enough to tell a pause
            self._caller_voice_at = time.monotonic()
        if self._buffer is not None:
            self._buffer.append(pcm)
            return
        if self._link is not None:
            self.samples_forwarded += len(pcm)
            self._link.backend.send_audio(pcm)

    async def _forward_keys(self) -> None:
        while True:
            digit = await self.io.read_digit(3600)
            if digit is not None:
                self._note({"role": "dtmf", "digit": digit})
                if self._link is not None:
                    self._link.backend.send_dtmf(digit)

    # -- provider sessions -------------------------------------------------------------------

    def _setup_for_now(self, setup: SessionSetup, backend: RealtimeBackend, *, first: bool,
                       turns: list[dict[str, str]]) -> SessionSetup:
        if first:
            return setup
        history = fit_history(turns, backend.history_limits)
        return SessionSetup(instructions=setup.instructions, language=setup.language, voice=setup.voice,
                            tools=setup.tools, history=history, greeting=None)

    async def _open(self, *, first: bool = False, turns: list[dict[str, str]] | None = None) -> _Link:
        assert self._setup is not None
        if turns is None:
            turns = conversation_turns(self.transcript)
        backend = self.open_backend()
        setup = self._setup_for_now(self._setup, backend, first=first, turns=turns)
        try:
            await asyncio.wait_for(backend.start(setup), self.policy.open_timeout_s)
        except BaseException:
            await _close_quietly(backend)
            raise
        self._generations += 1
        return _Link(backend, self._generations, time.monotonic(), len(conversation_turns(self.transcript)))

    async def _open_with_retries(self, *, first: bool = False, turns: list[dict[str, str]] | None = None) -> _Link:
        failure: Exception | None = None
        for delay in self.policy.retry_delays_s:
            if delay:
                await asyncio.sleep(delay)
            try:
                return await self._open(first=first, turns=turns)
            except ProviderError as exc:
                failure = exc
                log.warning("agent provider session failed to open (%s): %s", exc.code, exc)
                if not exc.recoverable or exc.code == ERROR_AUTH:
                    break  # retrying with the same credentials cannot help
            except Exception as exc:  # noqa: BLE001 - a provider bug (timeout, socket, anything) is a failed open, never a dropped call
                failure = exc
                log.warning("agent provider session failed to open: %r", exc)
        self._note({"role": "error", "text": f"provider unavailable: {failure}",
                    "code": getattr(failure, "code", "unavailable")})
        raise SessionFailed(str(failure))

    def _adopt(self, link: _Link) -> int:
        """Make ``link`` the session the caller talks to; returns the samples replayed to it."""
        backend = link.backend
        if self._stream.sample_rate != backend.input_rate:
            if self._to_backend is None or self._to_backend_rate != backend.input_rate:
                self._to_backend = StreamResampler(self._stream.sample_rate, backend.input_rate)
                self._to_backend_rate = backend.input_rate
        else:
            self._to_backend = None
        self._link = link
        link.pump = asyncio.get_running_loop().create_task(self._pump(link))
        replayed = 0
        buffered, self._buffer = self._buffer, None
        for pcm in buffered or ():
            replayed += len(pcm)
            self.samples_forwarded += len(pcm)
            backend.send_audio(pcm)
        self._agent_busy = False
        return replayed

    async def _pump(self, link: _Link) -> None:
        try:
            async for event in link.backend.events():
                self._inbox.put_nowait((link, event))
        except Exception as exc:  # noqa: BLE001 - a broken stream is a failed session, not a dead call
            self._inbox.put_nowait((link, BackendError(f"event stream failed: {exc!r}", code="unavailable")))
        self._inbox.put_nowait((link, _ENDED))

    async def _close_link(self, link: _Link) -> None:
        await _close_quietly(link.backend)
        if link.pump is not None:
            link.pump.cancel()

    # -- renewal -----------------------------------------------------------------------------

    def _at_turn_boundary(self) -> bool:
        now = time.monotonic()
        if self._agent_busy or self._tools_running or self._recovering:
            return False
        if now - self._caller_voice_at < CALLER_QUIET_S:
            return False
        unanswered = self._caller_voice_at > self._turn_ended_at
        return not unanswered or now - self._caller_voice_at > UNANSWERED_WAIT_S

    async def _renew_when_due(self) -> None:
        while True:
            link = self._link
            limit = link.backend.max_session_s if link is not None else None
            if link is None or not limit:
                await asyncio.sleep(1.0)
                continue
            renew_at = link.opened_at + limit * self.policy.renew_fraction
            force_at = link.opened_at + limit - min(self.policy.force_margin_s, limit * 0.1)
            await asyncio.sleep(max(0.0, renew_at - time.monotonic()))
            if link is not self._link:
                continue  # a recovery replaced it meanwhile
            await self._renew(link, force_at)

    async def _renew(self, link: _Link, force_at: float) -> None:
        """Hand ``link`` over to a fresh session at a turn boundary, or at ``force_at`` regardless."""
        while link is self._link and time.monotonic() < force_at:
            if not self._at_turn_boundary():
                await asyncio.sleep(0.05)
                continue
            if self._next is None or self._next.history_size != len(conversation_turns(self.transcript)):
                if self._next is not None:
                    await self._close_link(self._next)  # primed with a conversation that has moved on
                self._next = None
                try:
                    prepare_started = time.monotonic()
                    self._next = await self._open()
                    self._next_prepare_ms = (time.monotonic() - prepare_started) * 1000
                except Exception as exc:  # noqa: BLE001 - the current session still serves; try again shortly
                    log.warning("agent: preparing the next session failed: %r", exc)
                    await asyncio.sleep(0.5)
                continue  # check the boundary again: time passed while it opened
            prepared, self._next = self._next, None
            started = time.monotonic()
            self._retire(link)
            self._adopt(prepared)
            self._note_renewal(prepared, "scheduled", started, prepare_ms=self._next_prepare_ms, replayed=0)
            return
        if link is not self._link:
            return
        # No boundary in time: buffer the caller from now on, open, replay.
        started = time.monotonic()
        self._buffer = []
        self._retire(link)
        try:
            prepared = self._next or await self._open_with_retries()
        except SessionFailed:
            await self._fall_back()
            return
        self._next = None
        replayed = self._adopt(prepared)
        self._note_renewal(prepared, "forced", started, prepare_ms=(time.monotonic() - started) * 1000,
                           replayed=replayed)

    def _retire(self, link: _Link) -> None:
        self._link = None
        self._spawn(self._close_link(link))  # agent audio it already produced keeps playing

    def _note_renewal(self, link: _Link, reason: str, started: float, *, prepare_ms: float,
                      replayed: int) -> None:
        rate = link.backend.input_rate
        record = {"role": "renewal", "session": link.generation, "reason": reason,
                  "prepare_ms": round(prepare_ms, 1),
                  "handover_ms": round((time.monotonic() - started) * 1000, 1),
                  "replayed_ms": round(replayed * 1000 / rate, 1)}
        self.renewals.append(record)
        self._note(record)
        log.info("agent session renewed (%s): session %d, handover %.1f ms", reason, link.generation,
                 record["handover_ms"])

    # -- recovery and fallback ----------------------------------------------------------------

    async def _recover(self, error: BackendError) -> None:
        """The current session is gone: buffer the caller, reopen with the history, carry on."""
        failed = self._link
        if failed is None:
            return
        started = time.monotonic()
        self._recovering = True
        # What the failed session never took (its unsent tail, or audio written after the
        # provider ended it) comes first in the replay: the caller's words stay whole.
        unsent = failed.backend.withdraw_unsent_audio()
        self.samples_forwarded -= len(unsent)
        self._buffer = [unsent] if len(unsent) else []
        self._retire(failed)
        unanswered = self._unanswered_user_turn(cut_short=self._agent_busy)
        turns = conversation_turns(self.transcript)
        if unanswered is not None and turns and turns[-1]["role"] == "user":
            turns = turns[:-1]  # asked again below, so the new session answers it
        if self._next is not None:  # primed for a handover at a boundary that will not come now
            self._spawn(self._close_link(self._next))
            self._next = None
        filler = asyncio.get_running_loop().create_task(self._filler_after(self.policy.filler_after_s))
        try:
            if error.code == ERROR_AUTH:
                raise SessionFailed(error.message)
            link = await self._open_with_retries(turns=turns)
        except SessionFailed:
            filler.cancel()
            await self._fall_back()
            return
        finally:
            self._recovering = False
        filler.cancel()
        replayed = self._adopt(link)
        reason = "expired" if error.code == ERROR_SESSION_EXPIRED else "recovered"
        self._note_renewal(link, reason, started, prepare_ms=(time.monotonic() - started) * 1000,
                           replayed=replayed)
        if unanswered is not None:
            link.backend.send_text(unanswered)

    def _unanswered_user_turn(self, *, cut_short: bool) -> str | None:
        """The caller's last words if no complete answer followed them.

        ``cut_short``: the session failed mid-answer, so an agent entry after
        those words is only the start of an answer the caller never got."""
        for entry in reversed(self.transcript):
            role = entry.get("role")
            if role == "agent":
                if not cut_short:
                    return None
                entry["cut_by_error"] = True
                cut_short = False  # only the answer in progress was cut
            elif role == "user":
                return entry.get("text") or None
        return None

    async def _filler_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.say is not None:
            await self.say(self.policy.filler_text)

    async def _fall_back(self) -> None:
        self._note({"role": "fallback", "text": self.policy.apology_text})
        if self.say is not None:
            try:
                await self.say(self.policy.apology_text)
            except Exception:  # noqa: BLE001 - the fallback must still run
                log.exception("agent: the apology could not be played")
        raise SessionFailed("the provider stayed down")

    # -- events ---------------------------------------------------------------------------------

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _handle(self, link: _Link, event) -> None:
        gen = link.generation
        if isinstance(event, AgentAudio):
            self._agent_busy = True
            self._play(link, event)
        elif isinstance(event, SpeechStarted):
            self._barge_in()
        elif isinstance(event, UserTranscript):
            if event.final:
                self._note({"role": "user", "text": event.text, "turn_id": event.turn_id})
        elif isinstance(event, AgentTranscript):
            self._agent_busy = True
            if event.final:
                self._agent_text(gen, event)
        elif isinstance(event, ToolCall):
            self._spawn(self._run_tool(link, event))
        elif isinstance(event, TurnTiming):
            self._timings[(gen, event.turn_id)] = event
        elif isinstance(event, TurnEnded):
            self._agent_busy = False
            self._turn_ended_at = time.monotonic()
            if self._playing is not None and self._playing_turn == (gen, event.turn_id):
                self._playing.end()
        elif isinstance(event, Usage):
            self.usage["input_tokens"] += event.input_tokens
            self.usage["output_tokens"] += event.output_tokens
        elif isinstance(event, BackendError):
            log.warning("agent back end error: %s", event.message)
            self._note({"role": "error", "text": event.message})

    def _agent_text(self, gen: int, event: AgentTranscript) -> None:
        key = (gen, event.turn_id)
        entry = self._agent_entries.get(key)
        if entry is None:
            entry = {"role": "agent", "text": event.text, "turn_id": event.turn_id}
            self._agent_entries[key] = entry
            self._note(entry)
        else:  # more final text of the same turn (providers send it per sentence)
            entry["text"] = f"{entry['text']} {event.text}".strip()

    def _note(self, entry: dict[str, Any]) -> None:
        entry.setdefault("at", round(time.time(), 3))
        self.transcript.append(entry)

    def _play(self, link: _Link, event: AgentAudio) -> None:
        key = (link.generation, event.turn_id)
        if self._playing_turn != key or self._playing is None:
            if self._playing is not None:
                self._playing.end()
            self._playing = PcmStream(link.backend.output_rate, self._stream.sample_rate,
                                      label=f"agent {event.turn_id}")
            self._playing_turn = key
            first_packet = self._stream.mark()  # fires as the first sample of this turn goes out
            first_packet.add_done_callback(lambda _f: self._first_packet(key))
            self.last_played = self._stream.play(self._playing)
        self._playing.write(event.pcm)

    def _first_packet(self, key: tuple[int, str]) -> None:
        timing = self._timings.pop(key, None)
        entry = self._agent_entries.get(key)
        if timing is None or entry is None:
            return  # the greeting: nobody spoke before it
        total = (time.monotonic() - timing.speech_ended_at) * 1000
        entry["latency_ms"] = {"vad": round(timing.vad_ms), "stt": round(timing.stt_ms),
                               "brain": round(timing.brain_ms), "tts_first_audio": round(timing.tts_first_ms),
                               "total": round(total)}

    def _barge_in(self) -> None:
        playing, key = self._playing, self._playing_turn
        if playing is None or key is None:
            return
        if self.last_played is not None and self.last_played.done():
            self._playing = self._playing_turn = None  # it had finished: nothing to cut
            return
        cut = self._stream.flush()  # silence on the wire from the next packet
        self._playing = self._playing_turn = None
        played = cut.played_samples if cut is not None and cut.source is playing else 0
        written = max(playing.samples_written, 1)
        entry = self._agent_entries.get(key)
        heard = ""
        if entry is not None:
            words = entry["text"].split()
            heard = " ".join(words[:round(len(words) * min(played / written, 1.0))])
            entry.update(planned=entry["text"], text=heard, interrupted=True,
                         heard_s=round(played / self._stream.sample_rate, 2))
        if self._link is not None and self._link.generation == key[0]:
            self._link.backend.interrupted(key[1], heard, round(played * 1000 / self._stream.sample_rate))

    async def _run_tool(self, link: _Link, call: ToolCall) -> None:
        # Noted before it runs: a transfer or hang-up that works ends the call, and this task with it.
        entry: dict[str, Any] = {"role": "tool", "name": call.name, "arguments": call.arguments, "ok": None}
        self._note(entry)
        self._tools_running += 1
        try:
            result = await self.tools.invoke(call.name, call.arguments, self.context)
        finally:
            self._tools_running -= 1
        entry.update(ok=result.ok, duration_ms=round(result.duration_ms, 1))
        entry["result" if result.ok else "error"] = result.value if result.ok else result.error
        if link is self._link:
            link.backend.send_tool_result(call.call_id, result.to_model_text())


async def _close_quietly(backend: RealtimeBackend) -> None:
    try:
        await asyncio.wait_for(backend.close(), 5.0)
    except Exception:  # noqa: BLE001 - a session that will not close cleanly is abandoned, not fatal
        log.debug("agent: provider session did not close cleanly", exc_info=True)
