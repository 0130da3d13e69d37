"""One call's conversation with an agent back end, across as many provider sessions as it takes.

The session is the only place that knows both sides: it feeds the caller's
audio and keys to the back end, plays the agent's audio on the call, stops it
the moment the caller talks over it (barge-in) and tells the back end what
was really heard, runs the tools the back end asks for, and publishes every
turn, tool call, cut and latency to the call's transcript sink.

Provider sessions are disposable. Some end by design (Nova Sonic after 8
minutes), some fail (throttling, a dropped connection). The call must not
notice either. *When* to renew, hand over, retry or give up is decided by the
sans-IO :class:`~callbridge.agent.lifecycle.SessionLifecycle`; this module is
its asyncio driver and does what it says:

* **Renewal.** The next session is opened and primed with the conversation so
  far while the current one still serves; at a turn boundary the caller's
  audio switches to it, so every frame goes to exactly one session. A forced
  handover buffers the caller's audio and replays it to the new session.
* **Recovery.** The failed session's unsent audio and everything the caller
  says meanwhile are buffered and replayed; an unanswered caller turn is
  asked again; a short filler covers a slow reconnect.
* **Fallback.** When the provider stays down (or rejects our credentials),
  the caller hears an apology and :class:`SessionFailed` lets the desk's
  fallback (a transfer, the holding agent) take over. The call is never dropped.

(Slightly over 500 lines: one driver, with both of the call's audio directions,
the provider events and the transcript in it; the decisions are in lifecycle.py.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..media.resample import StreamResampler
from ..media.sources import PcmStream
from .callport import CallPort
from .history import conversation_turns, primed_setup, unanswered_user_turn
from .lifecycle import (
    Action,
    Discard,
    GiveUp,
    Handover,
    HoldCaller,
    Open,
    PlayFiller,
    Purpose,
    Renewal,
    SessionLifecycle,
    SessionPolicy,
)
from .realtime import (
    AgentAudio,
    AgentTranscript,
    BackendError,
    ErrorCode,
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
KEY_WAIT_S = 3600.0  # one read of the caller's keys; the loop reads again
CLOSE_TIMEOUT_S = 5.0

# speaks a line on the call and returns when it has played (the desk builds it on the offline TTS)
SayLine = Callable[[str], Awaitable[None]]
Clock = Callable[[], float]  # monotonic seconds; the back ends' TurnTiming uses time.monotonic


@dataclass(eq=False)
class _Link:
    """One provider session and its event pump."""

    backend: RealtimeBackend
    generation: int
    history_size: int  # conversation turns it was primed with
    pump: asyncio.Task | None = None


_ENDED = object()  # a link's event stream is over
_GIVE_UP = object()  # the lifecycle gave up: run() falls back


class SessionFailed(Exception):
    """The provider stayed down: the desk runs its fallback."""


class AgentSession:
    def __init__(self, call: CallPort, open_backend: Callable[[], RealtimeBackend], tools: ToolRegistry,
                 context: ToolContext, *, policy: SessionPolicy | None = None, say: SayLine | None = None,
                 clock: Clock = time.monotonic) -> None:
        self.call = call
        self.open_backend = open_backend
        self.tools = tools
        self.context = context
        self.transcript = call.transcript
        self.policy = policy or SessionPolicy()
        self.say = say
        self._clock = clock
        self._core = SessionLifecycle(self.policy)
        self._setup: SessionSetup | None = None
        self._link: _Link | None = None
        self._opened: dict[Purpose, _Link] = {}  # opened, not yet handed over
        self._generations = 0
        self._inbox: asyncio.Queue[tuple[_Link | None, Any]] = asyncio.Queue()
        self._to_backend: StreamResampler | None = None
        self._to_backend_rate = 0
        self._buffer: list[np.ndarray] | None = None  # caller audio held while no session can take it
        self._recovery_turns: list[dict[str, str]] | None = None  # the history a replacement is primed with
        self._unanswered: str | None = None  # the caller's words a failed session left unanswered
        self._failure: BaseException | None = None  # the last failed open, for the note
        self._filler: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None
        self._closed = False
        self._playing: PcmStream | None = None
        self._playing_turn: tuple[int, str] | None = None
        self.last_played: asyncio.Future | None = None  # resolves when the agent's latest audio has played
        self._agent_turns: dict[tuple[int, str], tuple[int, str]] = {}  # (session, turn id) -> (turn, text)
        self._timings: dict[tuple[int, str], TurnTiming] = {}
        self._tasks: set[asyncio.Future] = set()
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self.renewals: list[dict[str, Any]] = []
        self.samples_forwarded = 0  # caller audio handed to providers, at their rate

    # -- running ------------------------------------------------------------------------------

    async def run(self, setup: SessionSetup) -> None:
        """Converse until the call ends; raises :class:`SessionFailed` when the provider stays down."""
        self._setup = setup
        self.call.add_audio_listener(self._hear)
        keys = asyncio.get_running_loop().create_task(self._forward_keys())
        try:
            self._buffer = []  # the caller may speak while the first session opens
            self._apply(self._core.start(self._clock()))
            await self._dispatch_events()
        finally:
            self._closed = True
            keys.cancel()
            if self._timer is not None:
                self._timer.cancel()
            for task in list(self._tasks):
                task.cancel()
            self.call.remove_audio_listener(self._hear)
            for link in (self._link, *self._opened.values()):
                if link is not None:
                    await self._close_link(link)
            if self.usage["input_tokens"] or self.usage["output_tokens"]:
                self._note("usage", None, **self.usage)

    async def _dispatch_events(self) -> None:
        while True:
            link, event = await self._inbox.get()
            if event is _GIVE_UP:
                await self._fall_back()
            if link is None or link is not self._link:
                continue  # a retired session: whatever it still says is not part of the call
            if event is _ENDED:
                self._apply(self._core.failed(self._clock(), None))
            elif isinstance(event, BackendError) and event.code is not None:
                # a coded error ends the provider session: move to a fresh one
                self._note("error", event.message, code=event.code)
                self._apply(self._core.failed(self._clock(), event.code))
            else:
                self._handle(link, event)

    # -- doing what the lifecycle decided --------------------------------------------------------

    def _apply(self, actions: list[Action]) -> None:
        if self._closed:
            return
        for action in actions:
            if isinstance(action, Open):
                self._spawn(self._open_for(action.purpose))
            elif isinstance(action, HoldCaller):
                self._hold_caller(action)
            elif isinstance(action, Handover):
                self._hand_over(action)
            elif isinstance(action, Discard):
                primed = self._opened.pop(Purpose.NEXT, None)
                if primed is not None:
                    self._spawn(self._close_link(primed))
            elif isinstance(action, PlayFiller):
                if self.say is not None:
                    self._filler = self._spawn(self.say(self.policy.filler_text))
            elif isinstance(action, GiveUp):
                self._give_up(action)
        self._rearm()

    def _rearm(self) -> None:
        deadline = self._core.next_deadline()
        if deadline == self._armed_for and (deadline is None or self._timer is not None):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self._clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._armed_for = None
        self._apply(self._core.handle_timer(self._clock()))

    async def _open_for(self, purpose: Purpose) -> None:
        turns = self._recovery_turns if purpose is Purpose.REPLACEMENT else None
        try:
            link = await self._open(first=purpose is Purpose.FIRST, turns=turns)
        except ProviderError as exc:
            self._failure = exc
            log.warning("agent provider session failed to open (%s): %s", exc.code, exc)
            self._apply(self._core.open_failed(self._clock(), purpose, code=exc.code, recoverable=exc.recoverable))
            return
        except Exception as exc:  # noqa: BLE001 - a provider bug (timeout, socket, anything) is a failed open, never a dropped call
            self._failure = exc
            log.warning("agent provider session failed to open: %r", exc)
            self._apply(self._core.open_failed(self._clock(), purpose))
            return
        if self._closed:
            await self._close_link(link)
            return
        stale = self._opened.pop(purpose, None)
        if stale is not None:
            self._spawn(self._close_link(stale))
        self._opened[purpose] = link
        self._apply(self._core.opened(self._clock(), purpose, limit=link.backend.max_session_s,
                                      history_size=link.history_size))

    def _hold_caller(self, action: HoldCaller) -> None:
        link = self._link
        self._buffer = []
        if action.failed and link is not None:
            # What the failed session never took (its unsent tail, or audio written after the
            # provider ended it) comes first in the replay: the caller's words stay whole.
            unsent = link.backend.withdraw_unsent_audio()
            self.samples_forwarded -= len(unsent)
            if len(unsent):
                self._buffer.append(unsent)
        if link is not None:
            self._retire(link)
        if not action.failed:
            self._recovery_turns = self._unanswered = None
            return
        self._unanswered, cut = unanswered_user_turn(self.transcript.entries(), cut_short=action.cut_short)
        if cut is not None:
            self.transcript.update(cut, cut_by_error=True)
        turns = conversation_turns(self.transcript.entries())
        if self._unanswered is not None and turns and turns[-1]["role"] == "user":
            turns = turns[:-1]  # asked again after the handover, so the new session answers it
        self._recovery_turns = turns
        self._conversation_changed()

    def _hand_over(self, action: Handover) -> None:
        link = self._opened.pop(action.source, None)
        if link is None:
            return
        if self._link is not None:
            self._retire(self._link)
        if self._filler is not None:
            self._filler.cancel()
            self._filler = None
        replayed = self._adopt(link)
        if action.reason is not None:
            self._note_renewal(link, action.reason, action.started_at, prepare_ms=action.prepare_ms,
                               replayed=replayed)
        if action.reason in (Renewal.RECOVERED, Renewal.EXPIRED) and self._unanswered is not None:
            link.backend.send_text(self._unanswered)
        self._unanswered = self._recovery_turns = None

    def _give_up(self, action: GiveUp) -> None:
        if action.retries_exhausted:
            failure = self._failure
            self._note("error", f"provider unavailable: {failure}",
                       code=getattr(failure, "code", None) or ErrorCode.UNAVAILABLE)
        if self._filler is not None:
            self._filler.cancel()
            self._filler = None
        self._inbox.put_nowait((None, _GIVE_UP))

    # -- caller audio and keys -------------------------------------------------------------------

    def _hear(self, pcm: np.ndarray) -> None:
        if self._to_backend is not None:
            pcm = self._to_backend.process(pcm)
        if len(pcm) and int(pcm.max()) > VOICE_PEAK:  # the positive peak: cheap, and enough to tell a pause
            self._core.caller_voice(self._clock())
        if self._buffer is not None:
            self._buffer.append(pcm)
            return
        if self._link is not None:
            self.samples_forwarded += len(pcm)
            self._link.backend.send_audio(pcm)

    async def _forward_keys(self) -> None:
        while True:
            digit = await self.call.read_digit(KEY_WAIT_S)
            if digit is not None:
                self._note("dtmf", None, digit=digit)
                if self._link is not None:
                    self._link.backend.send_dtmf(digit)

    # -- provider sessions -------------------------------------------------------------------

    async def _open(self, *, first: bool = False, turns: list[dict[str, str]] | None = None) -> _Link:
        assert self._setup is not None
        if turns is None:
            turns = conversation_turns(self.transcript.entries())
        backend = self.open_backend()
        setup = self._setup if first else primed_setup(self._setup, turns, backend.history_limits)
        try:
            await asyncio.wait_for(backend.start(setup), self.policy.open_timeout_s)
        except BaseException:
            await _close_quietly(backend)
            raise
        self._generations += 1
        return _Link(backend, self._generations, len(conversation_turns(self.transcript.entries())))

    def _adopt(self, link: _Link) -> int:
        """Make ``link`` the session the caller talks to; returns the samples replayed to it."""
        backend = link.backend
        rate = self.call.sample_rate
        if rate != backend.input_rate:
            if self._to_backend is None or self._to_backend_rate != backend.input_rate:
                self._to_backend = StreamResampler(rate, backend.input_rate)
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
        return replayed

    async def _pump(self, link: _Link) -> None:
        try:
            async for event in link.backend.events():
                self._inbox.put_nowait((link, event))
        except Exception as exc:  # noqa: BLE001 - a broken stream is a failed session, not a dead call
            self._inbox.put_nowait((link, BackendError(f"event stream failed: {exc!r}", code=ErrorCode.UNAVAILABLE)))
        self._inbox.put_nowait((link, _ENDED))

    async def _close_link(self, link: _Link) -> None:
        await _close_quietly(link.backend)
        if link.pump is not None:
            link.pump.cancel()

    def _retire(self, link: _Link) -> None:
        self._link = None
        self._spawn(self._close_link(link))  # agent audio it already produced keeps playing

    def _note_renewal(self, link: _Link, reason: Renewal, started: float, *, prepare_ms: float,
                      replayed: int) -> None:
        handover_ms = (self._clock() - started) * 1000
        replayed_ms = replayed * 1000 / link.backend.input_rate
        record = {"role": "renewal", "session": link.generation, "reason": reason.value,
                  "prepare_ms": round(prepare_ms, 1), "handover_ms": round(handover_ms, 1),
                  "replayed_ms": round(replayed_ms, 1)}
        self.renewals.append(record)
        self.transcript.renewed(session=link.generation, reason=reason.value, prepare_ms=prepare_ms,
                                handover_ms=handover_ms, replayed_ms=replayed_ms)
        log.info("agent session renewed (%s): session %d, handover %.1f ms", reason.value, link.generation,
                 handover_ms)

    async def _fall_back(self) -> None:
        self._note("fallback", self.policy.apology_text)
        if self.say is not None:
            try:
                await self.say(self.policy.apology_text)
            except Exception:  # noqa: BLE001 - the fallback must still run
                log.exception("agent: the apology could not be played")
        raise SessionFailed("the provider stayed down")

    # -- events ---------------------------------------------------------------------------------

    def _spawn(self, work: Awaitable[Any]) -> asyncio.Future | None:
        if self._closed:
            if isinstance(work, Coroutine):
                work.close()  # never started: no "was never awaited" warning
            return None
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _handle(self, link: _Link, event: Any) -> None:
        gen = link.generation
        if isinstance(event, AgentAudio):
            self._core.agent_speaking(self._clock())
            self._play(link, event)
        elif isinstance(event, SpeechStarted):
            self._barge_in()
        elif isinstance(event, UserTranscript):
            if event.final:
                self._note("user", event.text, turn_id=event.turn_id)
        elif isinstance(event, AgentTranscript):
            self._core.agent_speaking(self._clock())
            if event.final:
                self._agent_text(gen, event)
        elif isinstance(event, ToolCall):
            self._spawn(self._run_tool(link, event))
        elif isinstance(event, TurnTiming):
            self._timings[(gen, event.turn_id)] = event
        elif isinstance(event, TurnEnded):
            if self._playing is not None and self._playing_turn == (gen, event.turn_id):
                self._playing.end()
            self._apply(self._core.turn_ended(self._clock()))
        elif isinstance(event, Usage):
            self.usage["input_tokens"] += event.input_tokens
            self.usage["output_tokens"] += event.output_tokens
        elif isinstance(event, BackendError):
            log.warning("agent back end error: %s", event.message)
            self._note("error", event.message)

    def _agent_text(self, gen: int, event: AgentTranscript) -> None:
        key = (gen, event.turn_id)
        known = self._agent_turns.get(key)
        if known is None:
            self._agent_turns[key] = (self._note("agent", event.text, turn_id=event.turn_id), event.text)
            return
        turn, text = known  # more final text of the same turn (providers send it per sentence)
        text = f"{text} {event.text}".strip()
        self._agent_turns[key] = (turn, text)
        self.transcript.update(turn, text=text)
        self._conversation_changed()

    def _note(self, role: str, text: str | None, **details: Any) -> int:
        turn = self.transcript.add(role, text, **details)
        if role in ("user", "agent"):
            self._conversation_changed()
        return turn

    def _conversation_changed(self) -> None:
        self._core.conversation(len(conversation_turns(self.transcript.entries())))

    def _play(self, link: _Link, event: AgentAudio) -> None:
        key = (link.generation, event.turn_id)
        if self._playing_turn != key or self._playing is None:
            if self._playing is not None:
                self._playing.end()
            self._playing = PcmStream(link.backend.output_rate, self.call.sample_rate,
                                      label=f"agent {event.turn_id}")
            self._playing_turn = key
            first_packet = self.call.mark()  # fires as the first sample of this turn goes out
            first_packet.add_done_callback(lambda _f: self._first_packet(key))
            self.last_played = self.call.play(self._playing)
        self._playing.write(event.pcm)

    def _first_packet(self, key: tuple[int, str]) -> None:
        timing = self._timings.pop(key, None)
        known = self._agent_turns.get(key)
        if timing is None or known is None:
            return  # the greeting: nobody spoke before it
        self.transcript.latency(known[0], vad=timing.vad_ms, stt=timing.stt_ms, brain=timing.brain_ms,
                                tts_first_audio=timing.tts_first_ms,
                                total=(self._clock() - timing.speech_ended_at) * 1000)

    def _barge_in(self) -> None:
        playing, key = self._playing, self._playing_turn
        if playing is None or key is None:
            return
        if self.last_played is not None and self.last_played.done():
            self._playing = self._playing_turn = None  # it had finished: nothing to cut
            return
        cut = self.call.flush()  # silence on the wire from the next packet
        self._playing = self._playing_turn = None
        played = cut.played_samples if cut is not None and cut.source is playing else 0
        written = max(playing.samples_written, 1)
        rate = self.call.sample_rate
        known = self._agent_turns.get(key)
        heard = ""
        if known is not None:
            turn, planned = known
            words = planned.split()
            heard = " ".join(words[:round(len(words) * min(played / written, 1.0))])
            self.transcript.barge_in(turn, planned=planned, heard=heard, heard_s=played / rate)
            self._agent_turns[key] = (turn, heard)  # what the turn says from now on
            self._conversation_changed()
        if self._link is not None and self._link.generation == key[0]:
            self._link.backend.interrupted(key[1], heard, round(played * 1000 / rate))

    async def _run_tool(self, link: _Link, call: ToolCall) -> None:
        # Published before it runs: a transfer or hang-up that works ends the call, and this task with it.
        turn = self.transcript.tool_called(call.name, call.arguments)
        self._core.tool_started(self._clock())
        try:
            result = await self.tools.invoke(call.name, call.arguments, self.context)
        finally:
            self._apply(self._core.tool_finished(self._clock()))
        self.transcript.tool_finished(turn, call.name, ok=result.ok, duration_ms=result.duration_ms,
                                      result=result.value, error=result.error)
        if link is self._link:
            link.backend.send_tool_result(call.call_id, result.to_model_text())


async def _close_quietly(backend: RealtimeBackend) -> None:
    try:
        await asyncio.wait_for(backend.close(), CLOSE_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - a session that will not close cleanly is abandoned, not fatal
        log.debug("agent: provider session did not close cleanly", exc_info=True)


__all__ = ["AgentSession", "SayLine", "SessionFailed", "SessionPolicy"]
