"""The agent session across provider sessions: renewal, recovery and fallback.

The provider here is a small scripted back end (the cloud stand-ins are
exercised the same way in tests/integration); the call side is the real
playback queue on a 20 ms clock. What must hold, whatever the provider:
every caller frame reaches exactly one provider session, the history crosses
over, and the caller is never dropped.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from callbridge.agent.history import fit_history
from callbridge.agent.realtime import (ERROR_AUTH, ERROR_INTERNAL, ERROR_SESSION_EXPIRED, ERROR_UNAVAILABLE,
                                       AgentAudio, AgentTranscript, BackendError, HistoryLimits, ProviderError,
                                       SessionSetup, TurnEnded, UserTranscript)
from callbridge.agent.session import AgentSession, SessionFailed, SessionPolicy
from callbridge.agent.tools import ToolContext, ToolRegistry
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

    async def start(self, setup: SessionSetup) -> None:
        failure = self.provider.failures.pop(0) if self.provider.failures else None
        if failure is not None:
            raise failure
        self.setup = setup
        if self.max_session_s:
            self._expiry = asyncio.get_running_loop().call_later(self.max_session_s, self._expire)

    def _expire(self) -> None:
        self._ended = True
        self._events.put_nowait(BackendError("session limit", code=ERROR_SESSION_EXPIRED))
        self._events.put_nowait(None)

    def send_audio(self, pcm: np.ndarray) -> None:
        if self._ended:
            self._unsent.append(pcm)
            return
        self.samples += len(pcm)
        if np.abs(pcm).max(initial=0) > 1000:
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
            self._events.put_nowait(BackendError("model failed", code=ERROR_INTERNAL))
            self._events.put_nowait(None)
            return
        self._events.put_nowait(AgentTranscript(f"You said {user_text}", turn))
        self._events.put_nowait(AgentAudio(tone(0.3, RATE, 500), turn))
        self._events.put_nowait(TurnEnded(turn))

    def send_dtmf(self, digit: str) -> None:
        pass

    def send_tool_result(self, call_id: str, result: str) -> None:
        pass

    def interrupted(self, turn_id: str, heard_text: str, heard_ms: int) -> None:
        pass

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
    session = AgentSession(call, provider.open, ToolRegistry(), ToolContext(call_id="c1"), call.transcript,
                           policy=policy, say=call.say_line)
    setup = SessionSetup(instructions="Be brief.", language="en", voice=None, tools=[], greeting=None)
    task = asyncio.get_running_loop().create_task(session.run(setup))
    await asyncio.sleep(0)  # listening before the caller's first frame
    return session, task


async def converse(call: CallSide, turns: int, *, speak_s: float = 0.4, pause_s: float = 0.9) -> int:
    sent = 0
    for _ in range(turns):
        sent += await talk(call.stream, tone(speak_s, RATE))
        sent += await talk(call.stream, np.zeros(int(pause_s * RATE), np.int16))
    return sent


async def test_three_renewals_keep_the_history_and_every_caller_frame(call):
    provider = Provider(max_session_s=2.0, user_lines=["My name is Ana.", "Where is my order?", "Thanks."])
    # renewing from half the limit leaves a window longer than one turn, so a boundary always falls in it
    policy = SessionPolicy(**{**FAST.__dict__, "renew_fraction": 0.5})
    session, task = await start_session(call, provider, policy)
    frames = await converse(call, 7)
    await asyncio.sleep(0.1)
    task.cancel()
    renewals = [e for e in call.transcript if e["role"] == "renewal"]
    assert len(renewals) >= 3, call.transcript
    assert all(r["reason"] == "scheduled" and r["replayed_ms"] == 0 for r in renewals), renewals
    assert provider.samples_received == frames * int(RATE * 0.02)  # exactly once, none lost
    third = provider.sessions[3]  # opened by the third renewal
    assert any("Ana" in turn["text"] for turn in third.setup.history)
    assert third.setup.history[0]["role"] == "user" and third.setup.greeting is None


async def test_a_forced_handover_buffers_and_replays_the_caller(call):
    provider = Provider(max_session_s=1.0)
    session, task = await start_session(call, provider)
    frames = await talk(call.stream, tone(1.6, RATE))  # talks straight through the renewal window
    frames += await talk(call.stream, np.zeros(int(0.5 * RATE), np.int16))
    task.cancel()
    [renewal, *_] = [e for e in call.transcript if e["role"] == "renewal"]
    assert renewal["reason"] == "forced"
    assert provider.samples_received == frames * int(RATE * 0.02)


async def test_a_failure_mid_turn_reconnects_and_the_turn_is_answered(call):
    provider = Provider(user_lines=["What are your hours?"], fail_mid_turn={1})
    session, task = await start_session(call, provider)
    frames = await converse(call, 1)
    await asyncio.sleep(0.3)
    task.cancel()
    assert len(provider.sessions) == 2
    assert provider.sessions[1].texts == ["What are your hours?"]  # asked again, so it gets its answer
    assert provider.sessions[1].setup.history == []  # the unanswered line is not also in the history
    agent = [e["text"] for e in call.transcript if e["role"] == "agent"]
    assert agent == ["You said What are your hours?"]
    assert [e["reason"] for e in call.transcript if e["role"] == "renewal"] == ["recovered"]
    assert provider.samples_received == frames * int(RATE * 0.02)


async def test_a_provider_that_stays_down_gets_an_apology_and_the_fallback(call):
    down = ProviderError("connection refused", code=ERROR_UNAVAILABLE)
    provider = Provider(failures=[None, down, down, down], fail_mid_turn={1})
    session, task = await start_session(call, provider)
    await converse(call, 1)
    with pytest.raises(SessionFailed):
        await asyncio.wait_for(task, 3)
    assert call.said == [FAST.apology_text]
    assert any(e["role"] == "fallback" for e in call.transcript)


async def test_bad_credentials_fall_back_at_once_without_retrying(call):
    provider = Provider(failures=[ProviderError("403 InvalidSignatureException", code=ERROR_AUTH,
                                                recoverable=False)])
    session, task = await start_session(call, provider)
    with pytest.raises(SessionFailed):
        await asyncio.wait_for(task, 2)
    assert len(provider.sessions) == 1
    assert call.said == [FAST.apology_text]


async def test_a_slow_reconnect_is_covered_by_a_filler(call):
    slow = SessionPolicy(retry_delays_s=(0.0, 0.5, 0.5), open_timeout_s=1.0, filler_after_s=0.3)
    down = ProviderError("busy", code=ERROR_UNAVAILABLE)
    provider = Provider(failures=[None, down, None], fail_mid_turn={1})
    session, task = await start_session(call, provider, slow)
    await converse(call, 1)
    await asyncio.sleep(0.5)
    task.cancel()
    assert call.said == [slow.filler_text]
    assert len(provider.sessions) == 3


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
