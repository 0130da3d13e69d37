"""The agent session's driver across provider sessions: renewal, recovery and fallback, for real.

*When* to renew, retry or give up is decided by the sans-IO lifecycle and
tested on a fake clock (test_agent_lifecycle.py). These tests check what only
the asyncio driver can get wrong, with sessions cut to fractions of a second:
every caller frame reaches exactly one provider session, the history crosses
over, the unanswered question is asked again, and the caller is never dropped.
The provider is a small scripted back end (the cloud stand-ins are exercised
the same way in tests/integration); the call side is the real playback queue
on a 20 ms clock, and the transcript the call's own fold of the session's events.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from callbridge.agent.history import fit_history
from callbridge.agent.realtime import (AgentAudio, AgentTranscript, BackendError, ErrorCode, HistoryLimits,
                                       ProviderError, SessionSetup, SpeechStarted, ToolCall, TurnEnded,
                                       UserTranscript)
from callbridge.agent.session import AgentSession, SessionFailed, SessionPolicy
from callbridge.agent.tools import ToolContext, ToolRegistry, tool
from callbridge.call import events as ev
from tests.support.agent_call import CallSide, PacedStream, talk, tone

RATE = 8000
FAST = SessionPolicy(retry_delays_s=(0.0, 0.05, 0.1), open_timeout_s=1.0, filler_after_s=0.3)


@dataclass
class Provider:
    """Every session the scripted provider opened, and the caller audio each one received."""

    max_session_s: float | None = None
    user_lines: list[str] = field(default_factory=list)
    failures: list[Exception | None] = field(default_factory=list)  # per start(): raise this, or open
    fail_mid_turn: set[int] = field(default_factory=set)  # session numbers that fail while answering
    answer_s: float = 0.3  # how long each spoken answer runs
    open_s: float = 0.0  # how long start() takes
    tool_lines: set[str] = field(default_factory=set)  # user lines answered by calling "lookup" first
    sessions: list["ScriptedBackend"] = field(default_factory=list)
    turns: itertools.count = field(default_factory=lambda: itertools.count(1))

    def open(self) -> "ScriptedBackend":
        backend = ScriptedBackend(self, len(self.sessions) + 1)
        self.sessions.append(backend)
        return backend

    @property
    def samples_received(self) -> int:
        return sum(s.samples for s in self.sessions)


class ScriptedBackend:
    input_rate = RATE
    output_rate = RATE
    history_limits = HistoryLimits()

    def __init__(self, provider: Provider, number: int) -> None:
        self.provider = provider
        self.number = number
        self.max_session_s = provider.max_session_s
        self.setup: SessionSetup | None = None
        self.samples = 0
        self.texts: list[str] = []
        self._events: asyncio.Queue = asyncio.Queue()
        self._voiced = 0
        self._quiet = 0
        self._expiry: asyncio.TimerHandle | None = None
        self._ended = False  # like a real provider, an ended session takes no more audio
        self._unsent: list[np.ndarray] = []
        self.interruptions: list[tuple[str, str, int]] = []
        self.keys: list[str] = []
        self.tool_results: list[str] = []
        self._waiting_tool: tuple[str, str] | None = None  # (user line, turn) answered once the result comes

    async def start(self, setup: SessionSetup) -> None:
        failure = self.provider.failures.pop(0) if self.provider.failures else None
        if self.provider.open_s:
            await asyncio.sleep(self.provider.open_s)
        if failure is not None:
            raise failure
        self.setup = setup
        if self.max_session_s:
            self._expiry = asyncio.get_running_loop().call_later(self.max_session_s, self._expire)

    def _expire(self) -> None:
        self._ended = True
        self._events.put_nowait(BackendError("session limit", code=ErrorCode.SESSION_EXPIRED))
        self._events.put_nowait(None)

    def send_audio(self, pcm: np.ndarray) -> None:
        if self._ended:
            self._unsent.append(pcm)
            return
        self.samples += len(pcm)
        if np.abs(pcm).max(initial=0) > 1000:
            if self._voiced == 0:
                self._events.put_nowait(SpeechStarted())  # its VAD hears the caller start (barge-in)
            self._voiced += len(pcm)
            self._quiet = 0
            return
        self._quiet += len(pcm)
        if self._voiced >= RATE * 0.2 and self._quiet >= RATE * 0.3:  # an utterance, then a pause
            self._voiced = 0
            self._answer(self.provider.user_lines.pop(0) if self.provider.user_lines else "hello")

    def send_text(self, text: str) -> None:
        self.texts.append(text)
        self._answer(text, heard=False)

    def _answer(self, user_text: str, heard: bool = True) -> None:
        turn = f"s{self.number}t{next(self.provider.turns)}"
        if heard:
            self._events.put_nowait(UserTranscript(user_text, True, turn))
        if self.number in self.provider.fail_mid_turn:
            self.provider.fail_mid_turn.discard(self.number)
            self._ended = True
            self._events.put_nowait(BackendError("model failed", code=ErrorCode.INTERNAL))
            self._events.put_nowait(None)
            return
        if user_text in self.provider.tool_lines and self._waiting_tool is None:
            self._waiting_tool = (user_text, turn)
            self._events.put_nowait(ToolCall("call-1", "lookup", '{"order": "4572"}'))
            return
        self._events.put_nowait(AgentTranscript(f"You said {user_text}", turn))
        self._events.put_nowait(AgentAudio(tone(self.provider.answer_s, RATE, 500), turn))
        self._events.put_nowait(TurnEnded(turn))

    def send_dtmf(self, digit: str) -> None:
        self.keys.append(digit)

    def send_tool_result(self, call_id: str, result: str) -> None:
        self.tool_results.append(result)
        if self._waiting_tool is not None:
            user_text, _turn = self._waiting_tool
            self._answer(f"{user_text}: {result}", heard=False)
            self._waiting_tool = None

    def interrupted(self, turn_id: str, heard_text: str, heard_ms: int) -> None:
        self.interruptions.append((turn_id, heard_text, heard_ms))

    def withdraw_unsent_audio(self) -> np.ndarray:
        unsent, self._unsent = self._unsent, []
        return np.concatenate(unsent) if unsent else np.zeros(0, np.int16)

    async def events(self) -> AsyncIterator:
        while (event := await self._events.get()) is not None:
            yield event

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self._events.put_nowait(None)


@pytest.fixture
async def call():
    stream = PacedStream(RATE)
    stream.start()
    side = CallSide(stream)
    yield side
    await stream.stop()


async def start_session(call: CallSide, provider: Provider,
                        policy: SessionPolicy = FAST) -> tuple[AgentSession, asyncio.Task]:
    session = AgentSession(call, provider.open, ToolRegistry(), ToolContext(call_id="c1"), policy=policy,
                           say=call.say_line)
    setup = SessionSetup(instructions="Be brief.", language="en", voice=None, tools=[], greeting=None)
    task = asyncio.get_running_loop().create_task(session.run(setup))
    await asyncio.sleep(0)  # listening before the caller's first frame
    return session, task


async def converse(call: CallSide, turns: int, *, speak_s: float = 0.25, pause_s: float = 0.5) -> int:
    sent = 0
    for _ in range(turns):
        sent += await talk(call.stream, tone(speak_s, RATE))
        sent += await talk(call.stream, np.zeros(int(pause_s * RATE), np.int16))
    return sent


async def test_renewals_keep_the_history_and_every_caller_frame(call):
    provider = Provider(max_session_s=1.0, user_lines=["My name is Ana.", "Where is my order?", "Thanks."])
    # renewing from 30 % of the limit leaves a window (0.3-0.9 s) longer than a turn's gap between
    # boundaries (speech plus the 0.3 s quiet), so a boundary always falls in it
    policy = SessionPolicy(**{**FAST.__dict__, "renew_fraction": 0.3})
    session, task = await start_session(call, provider, policy)
    frames = await converse(call, 2)
    await asyncio.sleep(0.05)
    task.cancel()
    renewals = [e for e in call.entries() if e["role"] == "renewal"]
    assert len(renewals) >= 2, call.entries()
    assert all(r["reason"] == "scheduled" and r["replayed_ms"] == 0 for r in renewals), renewals
    assert all(r["handover_ms"] < 50 for r in renewals), renewals
    assert provider.samples_received == frames * int(RATE * 0.02)  # exactly once, none lost
    second = provider.sessions[2]  # opened by the second renewal: it knows what the first session heard
    assert any("Ana" in turn["text"] for turn in second.setup.history), second.setup.history
    assert second.setup.history[0]["role"] == "user" and second.setup.greeting is None
    assert len(call.call.events_of(ev.SessionRenewed)) == len(renewals)


async def test_a_forced_handover_buffers_and_replays_the_caller(call):
    provider = Provider(max_session_s=0.5, open_s=0.1)
    session, task = await start_session(call, provider)
    frames = await talk(call.stream, tone(0.7, RATE))  # talks straight through the renewal window
    frames += await talk(call.stream, np.zeros(int(0.2 * RATE), np.int16))
    task.cancel()
    [renewal, *_] = [e for e in call.entries() if e["role"] == "renewal"]
    # held while the replacement opened (0.1 s), then replayed to it
    assert renewal["reason"] == "forced" and 60 <= renewal["replayed_ms"] <= 200, renewal
    assert provider.samples_received == frames * int(RATE * 0.02)


async def test_a_failure_mid_turn_reconnects_and_the_turn_is_answered(call):
    provider = Provider(user_lines=["What are your hours?"], fail_mid_turn={1})
    session, task = await start_session(call, provider)
    frames = await converse(call, 1)
    await asyncio.sleep(0.1)
    task.cancel()
    assert len(provider.sessions) == 2
    assert provider.sessions[1].texts == ["What are your hours?"]  # asked again, so it gets its answer
    assert provider.sessions[1].setup.history == []  # the unanswered line is not also in the history
    agent = [e["text"] for e in call.entries() if e["role"] == "agent"]
    assert agent == ["You said What are your hours?"]
    assert [e["reason"] for e in call.entries() if e["role"] == "renewal"] == ["recovered"]
    assert [e["code"] for e in call.entries() if e["role"] == "error"] == ["internal"]
    assert provider.samples_received == frames * int(RATE * 0.02)


async def test_a_provider_that_stays_down_gets_an_apology_and_the_fallback(call):
    down = ProviderError("connection refused", code=ErrorCode.UNAVAILABLE)
    provider = Provider(failures=[None, down, down, down], fail_mid_turn={1})
    session, task = await start_session(call, provider)
    await converse(call, 1)
    with pytest.raises(SessionFailed):
        await asyncio.wait_for(task, 3)
    assert call.said == [FAST.apology_text]
    assert any(e["role"] == "fallback" for e in call.entries())
    assert len(provider.sessions) == 1 + len(FAST.retry_delays_s)  # bounded: one try per delay


async def test_bad_credentials_fall_back_at_once_without_retrying(call):
    provider = Provider(failures=[ProviderError("403 InvalidSignatureException", code=ErrorCode.AUTH,
                                                recoverable=False)])
    session, task = await start_session(call, provider)
    with pytest.raises(SessionFailed):
        await asyncio.wait_for(task, 2)
    assert len(provider.sessions) == 1
    assert call.said == [FAST.apology_text]
    [error] = [e for e in call.entries() if e["role"] == "error"]
    assert error["code"] == "auth" and error["text"].startswith("provider unavailable"), error


async def test_a_slow_reconnect_is_covered_by_a_filler(call):
    slow = SessionPolicy(retry_delays_s=(0.0, 0.3, 0.3), open_timeout_s=1.0, filler_after_s=0.1)
    down = ProviderError("busy", code=ErrorCode.UNAVAILABLE)
    provider = Provider(failures=[None, down, None], fail_mid_turn={1})
    session, task = await start_session(call, provider, slow)
    await converse(call, 1)
    await asyncio.sleep(0.3)
    task.cancel()
    assert call.said == [slow.filler_text]
    assert len(provider.sessions) == 3


async def test_talking_over_the_agent_cuts_its_turn_to_what_was_heard(call):
    provider = Provider(user_lines=["Tell me everything about your opening hours please"], answer_s=3.0)
    session, task = await start_session(call, provider)
    await converse(call, 1, pause_s=0.3)  # the answer (3 s of audio) starts as the pause ends
    await asyncio.sleep(0.5)  # half a second of it is heard...
    await talk(call.stream, tone(0.1, RATE))  # ...then the caller talks over it
    await asyncio.sleep(0.05)
    task.cancel()
    [agent] = [e for e in call.entries() if e["role"] == "agent"]
    assert agent["interrupted"] and agent["planned"] == "You said Tell me everything about your opening hours please"
    assert 0 < len(agent["text"].split()) < len(agent["planned"].split()) / 2, agent
    assert 0.3 < agent["heard_s"] < 1.2, agent
    [cut] = call.call.events_of(ev.BargeIn)
    assert (cut.turn, cut.heard, cut.heard_s) == (agent["turn"], agent["text"], agent["heard_s"])
    [(turn_id, heard, heard_ms)] = provider.sessions[0].interruptions  # the provider is told, too
    assert heard == agent["text"] and abs(heard_ms - agent["heard_s"] * 1000) < 20
    # silence on the wire within a frame or two of the caller's voice
    assert call.stream.agent_audio_s() < 1.3


async def test_a_tool_call_and_its_result_are_published_as_events(call):
    @tool(timeout=1)
    async def lookup(order: str) -> dict:
        """Find an order.

        Args:
            order: its number
        """
        return {"order": order, "status": "shipped"}

    provider = Provider(user_lines=["where is my order"], tool_lines={"where is my order"})
    session = AgentSession(call, provider.open, ToolRegistry([lookup]), ToolContext(call_id="c1"), policy=FAST)
    setup = SessionSetup(instructions="Be brief.", language="en", voice=None, tools=[], greeting=None)
    task = asyncio.get_running_loop().create_task(session.run(setup))
    await asyncio.sleep(0)
    await converse(call, 1)
    task.cancel()
    [entry] = [e for e in call.entries() if e["role"] == "tool"]
    assert entry["name"] == "lookup" and entry["arguments"] == '{"order": "4572"}'  # the model's own text
    assert entry["ok"] is True and entry["result"] == {"order": "4572", "status": "shipped"}
    assert entry["duration_ms"] < 1000
    [called] = call.call.events_of(ev.ToolCalled)
    [result] = call.call.events_of(ev.ToolResult)
    assert called.turn == result.turn == entry["turn"] and result.ok
    assert provider.sessions[0].tool_results and "shipped" in provider.sessions[0].tool_results[0]
    answer = [e["text"] for e in call.entries() if e["role"] == "agent"]
    assert answer and "shipped" in answer[0]


async def test_keys_reach_the_provider_and_the_transcript(call):
    provider = Provider()
    session, task = await start_session(call, provider)
    await asyncio.sleep(0.05)
    call.digits.put_nowait("7")
    await asyncio.sleep(0.05)
    task.cancel()
    assert [e["digit"] for e in call.entries() if e["role"] == "dtmf"] == ["7"]
    assert provider.sessions[0].keys == ["7"]


def test_history_is_fitted_to_the_provider_limits():
    turns = [{"role": "assistant", "text": "Hello, how can I help?"},
             {"role": "user", "text": "Hi."}, {"role": "user", "text": "I am Ana."},
             {"role": "assistant", "text": "word " * 400},
             {"role": "user", "text": "ok"}]
    fitted = fit_history(turns, HistoryLimits(total_bytes=1500, message_bytes=1024))
    assert fitted[0]["role"] == "user"  # a leading agent turn is dropped
    assert all(len(t["text"].encode()) <= 1024 for t in fitted)
    assert sum(len(t["text"].encode()) for t in fitted) <= 1500
    assert fitted[-1] == {"role": "user", "text": "ok"}  # the newest survive, the oldest go first
    merged = fit_history(turns, HistoryLimits())
    assert merged[0] == {"role": "user", "text": "Hi. I am Ana."}  # same-role turns merged
    assert [t["role"] for t in merged] == ["user", "assistant", "assistant", "user"]  # 2 KB split in two
