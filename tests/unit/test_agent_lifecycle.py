"""The agent session's renewal and recovery decisions, on a fake clock.

``SessionLifecycle`` is sans-IO: these tests play a provider's life (opens,
failures, turns, the caller's voice) into it with made-up timestamps and read
back what it decides. A 480 s Nova session, minutes of backoff, all of it in
microseconds of wall time.
"""

from __future__ import annotations

import time

import pytest

from callbridge.agent.history import conversation_turns, unanswered_user_turn
from callbridge.agent.lifecycle import (
    CALLER_QUIET_S,
    UNANSWERED_WAIT_S,
    Discard,
    GiveUp,
    Handover,
    HoldCaller,
    Open,
    Phase,
    PlayFiller,
    Purpose,
    Renewal,
    SessionLifecycle,
    SessionPolicy,
)
from callbridge.agent.realtime import ErrorCode

NOVA_S = 480.0
POLICY = SessionPolicy()  # the production policy: renew from 75 %, force 30 s before the end
T0 = 1000.0


class Clock:
    """Drives the lifecycle as its asyncio driver would: timers at its deadlines, inputs in between."""

    def __init__(self, life: SessionLifecycle) -> None:
        self.life = life
        self.now = T0
        self.log: list[tuple[float, object]] = []
        self.sessions = 0

    def record(self, actions) -> list:
        self.log += [(self.now, a) for a in actions]
        return actions

    def advance(self, to: float) -> list:
        """Fire every deadline up to ``to``, then stand at ``to``."""
        actions = []
        while (deadline := self.life.next_deadline()) is not None and deadline <= to:
            self.now = deadline
            actions += self.record(self.life.handle_timer(deadline))
        self.now = to
        return actions

    def open_ok(self, purpose: Purpose, after: float = 0.05, limit: float | None = NOVA_S, history: int = 0) -> list:
        actions = self.advance(self.now + after)
        self.sessions += 1
        return actions + self.record(self.life.opened(self.now, purpose, limit=limit, history_size=history))

    def open_fails(self, purpose: Purpose, code: ErrorCode | None = ErrorCode.UNAVAILABLE, after: float = 0.05,
                   recoverable: bool = True) -> list:
        self.advance(self.now + after)
        return self.record(self.life.open_failed(self.now, purpose, code=code, recoverable=recoverable))

    def turn(self, speak_s: float = 2.0, answer_after_s: float = 0.6, agent_s: float = 3.0) -> list:
        """The caller speaks, the agent answers and finishes; returns what was decided meanwhile."""
        actions = []
        for _ in range(int(speak_s / 0.02)):
            self.life.caller_voice(self.now)
            actions += self.advance(self.now + 0.02)
        actions += self.advance(self.now + answer_after_s)
        self.life.agent_speaking(self.now)
        actions += self.advance(self.now + agent_s)
        actions += self.record(self.life.turn_ended(self.now))
        return actions


def started(policy: SessionPolicy = POLICY, limit: float | None = NOVA_S) -> Clock:
    clock = Clock(SessionLifecycle(policy))
    assert clock.record(clock.life.start(clock.now)) == [Open(Purpose.FIRST, 0)]
    [handover] = clock.open_ok(Purpose.FIRST, limit=limit)
    assert handover == Handover(Purpose.FIRST, None, started_at=T0, prepare_ms=pytest.approx(50))
    return clock


def of(kind, actions) -> list:
    return [a for a in actions if isinstance(a, kind)]


def test_nothing_happens_before_the_renewal_point():
    clock = started()
    assert clock.life.next_deadline() == pytest.approx(T0 + 0.05 + NOVA_S * 0.75)  # 6 of Nova's 8 minutes
    assert clock.advance(T0 + 300) == []
    assert clock.life.phase is Phase.SERVING


def test_a_scheduled_renewal_waits_for_a_turn_boundary_then_hands_over():
    clock = started()
    clock.advance(T0 + 359.0)
    actions = clock.turn(speak_s=2.0, agent_s=3.0)  # the renewal point (360.05) falls mid-turn...
    # ...so nothing happened until the agent finished its answer to a caller now quiet: prepare then
    assert [(t, a) for t, a in clock.log if t > T0 + 1] == [(clock.now, Open(Purpose.NEXT, 0))]
    assert actions == [Open(Purpose.NEXT, 0)]
    prepare_started = clock.now
    [handover] = clock.open_ok(Purpose.NEXT, after=0.4)  # still a boundary: switch at once
    assert handover.reason is Renewal.SCHEDULED and handover.source is Purpose.NEXT
    assert handover.started_at == clock.now and handover.prepare_ms == pytest.approx(400)
    assert clock.now - prepare_started < 1.0
    # the new session's own clock: renew again 360 s after it opened
    assert clock.life.next_deadline() == pytest.approx(clock.now + 360)


def test_a_boundary_is_a_quiet_caller_after_the_agent_finished():
    clock = started()
    clock.advance(T0 + 359.0)
    for _ in range(150):  # the caller talks through the renewal point (360.05)
        clock.life.caller_voice(clock.now)
        assert clock.advance(clock.now + 0.02) == []
    spoke_at = clock.now - 0.02
    clock.life.agent_speaking(clock.now)
    assert clock.advance(clock.now + 1.0) == []  # the agent answers: not a boundary
    assert clock.record(clock.life.turn_ended(clock.now)) == [Open(Purpose.NEXT, 0)]
    assert clock.now - spoke_at >= CALLER_QUIET_S


def test_a_primed_session_the_conversation_outgrew_is_primed_again():
    clock = started()
    clock.life.conversation(2)
    assert clock.advance(T0 + 361) == [Open(Purpose.NEXT, 0)]  # a boundary at the renewal point
    clock.life.caller_voice(clock.now)  # the caller starts a new turn while it opens
    assert clock.open_ok(Purpose.NEXT, history=2) == []  # not a boundary: keep it primed
    clock.life.conversation(3)  # the caller's words are in the transcript: the primed session lacks them
    actions = clock.turn(speak_s=1.0)
    assert actions == [Discard(), Open(Purpose.NEXT, 0)]  # at the turn's end: prime a fresh one
    [handover] = clock.open_ok(Purpose.NEXT, history=3)
    assert handover.reason is Renewal.SCHEDULED


def test_no_boundary_before_the_margin_forces_the_handover():
    clock = started()
    renew_at = T0 + 0.05 + 360
    force_at = T0 + 0.05 + 480 - 30
    talk_until = force_at + 5
    actions = []
    clock.advance(renew_at - 1)
    while clock.now < talk_until:  # a caller who never pauses
        clock.life.caller_voice(clock.now)
        actions += clock.advance(clock.now + 0.1)
    assert actions[0] == HoldCaller(failed=False)
    at = next(t for t, a in clock.log if isinstance(a, HoldCaller))
    assert at == pytest.approx(force_at)
    assert actions[1] == Open(Purpose.REPLACEMENT, 0)
    [handover] = clock.open_ok(Purpose.REPLACEMENT, after=0.3)
    assert handover.reason is Renewal.FORCED and handover.started_at == pytest.approx(force_at)
    assert handover.source is Purpose.REPLACEMENT


def test_a_forced_handover_uses_the_session_already_primed():
    clock = started(limit=100.0)  # renew at 75, force at 90 (10 % of the limit caps the 30 s margin)
    clock.advance(T0 + 80)  # a boundary: prepare
    assert [a for _, a in clock.log][-1] == Open(Purpose.NEXT, 0)
    clock.life.caller_voice(clock.now)
    clock.open_ok(Purpose.NEXT, history=0)
    clock.life.agent_speaking(clock.now)  # one long answer that runs past the margin
    actions = clock.advance(T0 + 95)
    assert actions[0] == HoldCaller(failed=False)
    assert actions[1].source is Purpose.NEXT and actions[1].reason is Renewal.FORCED
    assert clock.now - T0 > 90


def test_an_expiry_mid_turn_recovers_and_the_unanswered_turn_is_asked_again():
    clock = started()
    clock.life.caller_voice(clock.now)
    clock.life.agent_speaking(clock.now + 0.5)  # the agent was answering when the session expired
    actions = clock.record(clock.life.failed(clock.now + 0.6, ErrorCode.SESSION_EXPIRED))
    assert actions[0] == HoldCaller(failed=True, cut_short=True)
    assert actions[1] == Open(Purpose.REPLACEMENT, 0)  # the first retry is immediate
    [handover] = clock.open_ok(Purpose.REPLACEMENT, after=0.2)
    assert handover.reason is Renewal.EXPIRED
    # what the driver does with cut_short: the half answer is marked, the question asked again
    transcript = [{"role": "agent", "text": "Hello."}, {"role": "user", "text": "What are your hours?"},
                  {"role": "agent", "text": "We are"}]
    question, cut = unanswered_user_turn(transcript, cut_short=True)
    assert (question, cut) == ("What are your hours?", 2)
    transcript[2]["cut_by_error"] = True
    assert conversation_turns(transcript)[-1] == {"role": "user", "text": "What are your hours?"}


def test_an_answered_turn_is_not_asked_again():
    transcript = [{"role": "user", "text": "Hi."}, {"role": "agent", "text": "Hello, how can I help?"}]
    assert unanswered_user_turn(transcript, cut_short=False) == (None, None)
    assert unanswered_user_turn([{"role": "user", "text": "Hi."}], cut_short=False) == ("Hi.", None)


def test_recovery_backs_off_within_bounds_then_gives_up():
    policy = SessionPolicy(retry_delays_s=(0.0, 0.25, 0.5, 1.0, 2.0, 4.0), filler_after_s=1.0)
    clock = started(policy)
    clock.life.agent_speaking(clock.now)
    failed_at = clock.now
    actions = clock.record(clock.life.failed(failed_at, ErrorCode.INTERNAL))
    assert actions == [HoldCaller(failed=True, cut_short=True), Open(Purpose.REPLACEMENT, 0)]
    opens = [(clock.now, 0)]
    for attempt in range(1, 6):
        clock.open_fails(Purpose.REPLACEMENT, after=0.1)
        failed_open = clock.now
        actions = clock.advance(failed_open + 10)
        [opened] = of(Open, actions)
        assert opened == Open(Purpose.REPLACEMENT, attempt)
        at = next(t for t, a in reversed(clock.log) if a == opened)
        assert at - failed_open == pytest.approx(policy.retry_delays_s[attempt])  # the bounded backoff
        opens.append((at, attempt))
        clock.now = at
    fillers = [t for t, a in clock.log if isinstance(a, PlayFiller)]
    assert fillers == [pytest.approx(failed_at + 1.0)]  # one filler, after a second of dead air
    assert clock.open_fails(Purpose.REPLACEMENT) == [GiveUp(retries_exhausted=True)]
    assert clock.life.phase is Phase.FAILED and clock.life.next_deadline() is None
    assert len(opens) == len(policy.retry_delays_s)


def test_a_recovery_that_succeeds_quickly_plays_no_filler():
    clock = started()
    clock.record(clock.life.failed(clock.now, None))  # the provider just closed the stream
    [handover] = clock.open_ok(Purpose.REPLACEMENT, after=0.3)
    assert handover.reason is Renewal.RECOVERED and handover.prepare_ms == pytest.approx(300)
    assert of(PlayFiller, clock.advance(clock.now + 60)) == []


@pytest.mark.parametrize("code,recoverable", [(ErrorCode.AUTH, True), (ErrorCode.INVALID, False)])
def test_an_open_that_cannot_work_is_not_retried(code, recoverable):
    clock = Clock(SessionLifecycle(POLICY))
    clock.record(clock.life.start(clock.now))
    assert clock.open_fails(Purpose.FIRST, code=code, recoverable=recoverable) == [GiveUp(retries_exhausted=True)]


def test_bad_credentials_mid_call_give_up_at_once():
    clock = started()
    actions = clock.record(clock.life.failed(clock.now, ErrorCode.AUTH))
    assert actions == [HoldCaller(failed=True, cut_short=False), GiveUp(retries_exhausted=False)]


def test_a_failure_while_a_session_is_primed_discards_it():
    clock = started(limit=100.0)
    clock.advance(T0 + 80)
    clock.life.caller_voice(clock.now)
    clock.open_ok(Purpose.NEXT)
    actions = clock.record(clock.life.failed(clock.now, ErrorCode.THROTTLED))
    assert actions == [HoldCaller(failed=True, cut_short=False), Discard(), Open(Purpose.REPLACEMENT, 0)]


def test_a_session_still_opening_when_recovery_starts_is_discarded_when_it_opens():
    clock = started(limit=100.0)
    clock.advance(T0 + 80)
    assert [a for _, a in clock.log][-1] == Open(Purpose.NEXT, 0)
    clock.record(clock.life.failed(clock.now, ErrorCode.INTERNAL))
    assert clock.open_ok(Purpose.NEXT) == [Discard()]
    [handover] = clock.open_ok(Purpose.REPLACEMENT)
    assert handover.source is Purpose.REPLACEMENT and handover.reason is Renewal.RECOVERED


def test_a_failed_prepare_is_retried_while_the_current_session_serves():
    clock = started(limit=100.0)
    clock.advance(T0 + 80)
    assert clock.open_fails(Purpose.NEXT) == []
    retry = clock.advance(clock.now + 1.0)
    assert retry == [Open(Purpose.NEXT, 0)]
    assert clock.life.phase is Phase.SERVING


def test_a_running_tool_or_an_unanswered_noise_holds_the_boundary():
    clock = started(limit=100.0)
    clock.advance(T0 + 70)
    clock.life.tool_started(clock.now)
    assert clock.advance(T0 + 80) == []  # due since 75, but a tool is running
    assert clock.record(clock.life.tool_finished(clock.now)) == [Open(Purpose.NEXT, 0)]

    clock = started(limit=100.0)
    clock.advance(T0 + 74)
    clock.life.caller_voice(clock.now)  # a cough the provider never answers
    assert clock.advance(T0 + 74 + UNANSWERED_WAIT_S - 0.01) == []
    assert clock.advance(T0 + 74 + UNANSWERED_WAIT_S) == [Open(Purpose.NEXT, 0)]


def test_no_limit_means_no_renewal():
    clock = started(limit=None)
    assert clock.life.next_deadline() is None
    assert clock.turn() == []


def test_a_whole_nova_call_of_three_renewals_costs_microseconds():
    started_wall = time.perf_counter()
    clock = started()
    renewals = 0
    history = 0
    while clock.now < T0 + 3 * 480:
        actions = clock.turn(speak_s=2.0, agent_s=4.0)
        history += 2
        clock.life.conversation(history)
        actions += clock.advance(clock.now + 5.0)  # a pause
        for action in actions:
            if action == Open(Purpose.NEXT, 0):
                [handover] = clock.open_ok(Purpose.NEXT, history=history)
                assert handover.reason is Renewal.SCHEDULED
                renewals += 1
    assert renewals == 3
    assert not of(HoldCaller, [a for _, a in clock.log])  # never forced: boundaries came in time
    assert time.perf_counter() - started_wall < 0.5
