"""Admission (app/availability.py) as the UA core answers it, and the drain (app/drain.py) on fake calls."""

from __future__ import annotations

import asyncio

import pytest

from callbridge.app.availability import NotAdmitting, WorkerAvailability
from callbridge.app.drain import Drain
from callbridge.call import events as cev
from callbridge.call.call import EndReason
from callbridge.sip import events as ev
from callbridge.sip.useragent import UserAgent, UserAgentConfig

from .sipfixtures import Harness, invite


def ua_with(availability: WorkerAvailability) -> Harness:
    return Harness(ua=UserAgent(UserAgentConfig(host="127.0.0.1", ports={"udp": 5060}, availability=availability)))


def options(branch: str, to_tag: str | None = None) -> bytes:
    if to_tag:  # inside the call's dialog: its Call-ID, a later CSeq
        return invite(method="OPTIONS", branch=branch, cseq=2, body="", to_tag=to_tag)
    return invite(method="OPTIONS", branch=branch, call_id=f"{branch}@peer", body="")


@pytest.mark.parametrize("setup, reason, retry_after", [
    (lambda a: None, "starting", 5),  # SIP listens before prompts and models are ready
    (lambda a: setattr(a, "draining", True), "draining", 60),
    (lambda a: setattr(a, "max_calls", 0), "full", 10),
])
def test_invite_and_options_get_the_same_503(setup, reason, retry_after):
    availability = WorkerAvailability(max_calls=5, active_calls=lambda: 0)
    availability.ready = reason != "starting"
    setup(availability)
    assert availability.reason() == NotAdmitting(reason)
    h = ua_with(availability)
    h.feed(options("z9hG4bK-o1"))
    h.feed(invite())
    responses = h.take()
    assert [r.status for r in responses] == [503, 503]
    assert all(r.headers.get("Retry-After") == str(retry_after) and r.to_addr.tag for r in responses)
    assert not [e for e in h.events if isinstance(e, ev.IncomingCall)]  # no session, no 100 Trying


def test_ready_worker_admits_and_in_dialog_options_pass_while_draining():
    availability = WorkerAvailability(max_calls=1, active_calls=lambda: 0)
    availability.ready = True
    h = ua_with(availability)
    h.feed(options("z9hG4bK-o1"))
    assert h.statuses() == [200]
    h.feed(invite())
    session = next(e for e in h.events if isinstance(e, ev.IncomingCall)).session
    h.ua.answer(session, b"v=0\r\n", h.now)
    h.pump()
    tag = h.take()[-1].to_addr.tag
    availability.draining = True
    h.feed(options("z9hG4bK-o2", to_tag=tag))  # a keep-alive inside the live call
    assert h.statuses() == [200]
    h.feed(options("z9hG4bK-o3"))
    assert h.statuses() == [503]


def test_full_counts_at_each_ask():
    active = [0]
    availability = WorkerAvailability(max_calls=2, active_calls=lambda: active[0])
    availability.ready = True
    assert availability() is None
    active[0] = 2
    unavailable = availability()
    assert unavailable is not None and (unavailable.reason, unavailable.retry_after) == ("full", 10)
    availability.ready = False
    availability.draining = True
    assert availability.reason() is NotAdmitting.DRAINING  # final: wins over starting and full


class FakeCall:
    def __init__(self) -> None:
        self.ended: str | None = None


class FakeCalls:
    """What the drain needs of the CallManager; hangup ends a call and publishes CallEnded."""

    def __init__(self, n: int) -> None:
        self.calls = [FakeCall() for _ in range(n)]
        self.drain: Drain | None = None

    @property
    def active_calls(self):
        return [c for c in self.calls if c.ended is None]

    def hangup(self, call, reason=EndReason.AGENT_HANGUP) -> None:
        call.ended = reason
        assert self.drain is not None
        self.drain(call, cev.Published("c", 1, 0.0, cev.CallEnded(reason=reason, duration_s=1.0, talk_s=1.0)))


def drain_of(n: int, deadline_s: float) -> tuple[Drain, FakeCalls, WorkerAvailability]:
    calls = FakeCalls(n)
    availability = WorkerAvailability(max_calls=None, active_calls=lambda: len(calls.active_calls))
    availability.ready = True
    drain = Drain(availability, calls, deadline_s)  # type: ignore[arg-type]
    calls.drain = drain
    return drain, calls, availability


async def drained_within(drain: Drain, seconds: float) -> bool:
    try:
        await asyncio.wait_for(drain.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def test_drain_waits_for_the_last_call_then_ends():
    drain, calls, availability = drain_of(2, deadline_s=60)
    drain.begin("test")
    assert availability.reason() is NotAdmitting.DRAINING
    assert not await drained_within(drain, 0.05)
    calls.hangup(calls.calls[0], EndReason.CALLER_HANGUP)
    assert not await drained_within(drain, 0.05)
    calls.hangup(calls.calls[1], EndReason.CALLER_HANGUP)
    assert await drained_within(drain, 1)
    assert [c.ended for c in calls.calls] == ["caller_hangup", "caller_hangup"]


async def test_drain_deadline_ends_the_rest():
    drain, calls, _ = drain_of(2, deadline_s=0.1)
    drain.begin("test")
    assert await drained_within(drain, 2)
    assert [c.ended for c in calls.calls] == [EndReason.DRAIN_DEADLINE] * 2


async def test_second_signal_ends_the_calls_at_once_and_no_call_drains_at_once():
    drain, calls, _ = drain_of(1, deadline_s=60)
    drain.on_signal()
    assert drain.draining and not await drained_within(drain, 0.05)
    drain.on_signal()
    assert await drained_within(drain, 0.1)
    assert calls.calls[0].ended == EndReason.SHUTDOWN
    idle, _, _ = drain_of(0, deadline_s=60)
    idle.begin("test")
    assert await drained_within(idle, 0.1)


async def test_call_ending_without_a_drain_changes_nothing():
    drain, calls, availability = drain_of(1, deadline_s=60)
    calls.hangup(calls.calls[0], EndReason.CALLER_HANGUP)
    assert not drain.draining and availability() is None
    assert not await drained_within(drain, 0.05)
