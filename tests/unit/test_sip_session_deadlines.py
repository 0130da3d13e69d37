"""Session deadlines (RFC 4028 timers, 100rel retransmits) sit on a heap: a flush does not scan every call.

The work is counted, not timed: ``sys.setprofile`` counts the Python and C
function calls made inside ``next_deadline()`` and ``handle_timer()``. With
5,000 calls up it must be no more than with 50, where a scan of the sessions
makes at least one call per session.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable

from callbridge.sip.address import Address
from callbridge.sip.events import IncomingCall
from callbridge.sip.message import Request
from callbridge.sip.parser import parse_message
from callbridge.sip.session import InviteSession, SessionState
from callbridge.sip.ua.deadlines import COMPACT_MIN_DEAD, COMPACT_RATIO, Due, SessionDeadlines
from callbridge.sip.useragent import UserAgent, UserAgentConfig

from .sipfixtures import invite

PEER = Address("127.0.0.1", 5070, "udp")
# Work that does not depend on the number of calls: the one call that is due, plus bookkeeping.
WORK_SLACK = 60
ACK = (
    "ACK sip:demo@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-ack-{n};rport\r\n"
    "From: <sip:alice@127.0.0.1:5070>;tag=alice-tag\r\nTo: <sip:demo@127.0.0.1:5060>;tag={tag}\r\n"
    "Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def calls_made(action: Callable[[], object]) -> int:
    """How many functions (Python or C) ``action`` called: a measure of work that ignores the clock."""
    count = 0

    def profile(frame: object, event: str, arg: object) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
    return count


def confirmed_calls(count: int, *, interval: Callable[[int], int] = lambda n: 1800,
                    refresher: Callable[[int], str] = lambda n: "uac") -> tuple[UserAgent, float]:
    """``count`` answered, ACKed calls with session timers, one answered each millisecond.

    Returns the UA and a time after every transaction ended (Timer L, 64·T1), when only
    the calls' session timers are left.
    """
    ua = UserAgent(UserAgentConfig(host="127.0.0.1", ports={"udp": 5060}, new_requests_per_source=None))
    now = 0.0
    for n in range(count):
        # "Supported: timer" lets the caller refresh (RFC 4028 §9); without it we do.
        supported = "Supported: timer\r\n" if refresher(n) == "uac" else ""
        ua.receive(invite(branch=f"z9hG4bK-inv-{n}", call_id=f"call-{n}@peer",
                          extra=f"Session-Expires: {interval(n)}\r\n{supported}"), PEER, now)
        incoming = ua.next_event()
        assert isinstance(incoming, IncomingCall)
        session = incoming.session
        ua.answer(session, b"v=0\r\n", now)
        assert session.dialog is not None
        ua.receive(ACK.format(n=n, tag=session.dialog.local_tag, call_id=session.call_id).encode(), PEER, now)
        ua.datagrams_to_send()
        while ua.next_event() is not None:
            pass
        now += 0.001
    settled = now + 64 * 0.5 + 1
    ua.handle_timer(settled)
    ua.datagrams_to_send()
    assert ua.transactions.counts == (0, 0)
    assert all(s.state is SessionState.CONFIRMED for s in ua.sessions.values())
    return ua, settled


def test_next_deadline_and_handle_timer_do_not_touch_every_call():
    work = {}
    for count in (50, 5000):
        ua, now = confirmed_calls(count)
        # RFC 4028 §10: the first caller's timer gives up at 1800 − 32 s after its answer.
        first = 1800 - 32
        assert ua.next_deadline() == first
        asked = calls_made(ua.next_deadline)
        idle = calls_made(lambda: ua.handle_timer(now))  # nothing due yet
        fired = calls_made(lambda: ua.handle_timer(first))  # exactly one call is due
        sent = [parse_message(wire) for wire, _ in ua.datagrams_to_send()]
        assert [(m.method, m.call_id) for m in sent if isinstance(m, Request)] == [("BYE", "call-0@peer")]
        assert len(ua.sessions) == count - 1
        work[count] = (asked, idle, fired)
    for small, large in zip(work[50], work[5000], strict=True):
        assert large <= small + WORK_SLACK, work
        assert large < 5000, work  # a scan makes at least one call per session


def test_deadlines_fire_in_order_on_a_fake_clock():
    rng = random.Random(16)
    intervals = [rng.randrange(90, 3600) for _ in range(40)]
    refreshers = [rng.choice(["uac", "uas"]) for _ in range(40)]
    ua, now = confirmed_calls(40, interval=intervals.__getitem__, refresher=refreshers.__getitem__)
    expected = []
    for n, (interval, refresher) in enumerate(zip(intervals, refreshers, strict=True)):
        answered = n * 0.001
        if refresher == "uas":  # we refresh at half the interval (RFC 4028 §10)
            expected.append((answered + interval / 2, "INVITE", f"call-{n}@peer"))
        else:  # the peer should refresh; we give up at interval − min(32, interval/3)
            expected.append((answered + interval - min(32, interval / 3), "BYE", f"call-{n}@peer"))
    seen = []
    end = max(at for at, _, _ in expected) + 1
    while (deadline := ua.next_deadline()) is not None and deadline <= end:
        assert deadline >= now  # never in the past, never out of order
        now = deadline
        ua.handle_timer(now)
        for wire, _ in ua.datagrams_to_send():
            message = parse_message(wire)
            if isinstance(message, Request) and message.method in ("BYE", "INVITE"):
                seen.append((now, message.method, message.call_id))
    first_of_each = {}
    for at, method, call_id in seen:
        first_of_each.setdefault(call_id, (at, method, call_id))
    got = sorted(first_of_each.values())
    want = sorted(expected)
    assert [(m, c) for _, m, c in got] == [(m, c) for _, m, c in want]
    for (got_at, _, _), (want_at, _, _) in zip(got, want, strict=True):
        assert abs(got_at - want_at) < 1e-6


def _session(n: int) -> InviteSession:
    request = parse_message(invite(call_id=f"heap-{n}@peer"))
    assert isinstance(request, Request)
    return InviteSession(direction="inbound", invite=request, state=SessionState.CONFIRMED)


def test_heap_moves_and_cancels_deadlines_without_searching():
    deadlines = SessionDeadlines()
    a, b, c = _session(1), _session(2), _session(3)
    deadlines.arm(a, Due.EXPIRE, 30.0)
    deadlines.arm(b, Due.EXPIRE, 10.0)
    deadlines.arm(c, Due.REFRESH, 20.0)
    deadlines.arm(b, Due.EXPIRE, 40.0)  # moved later: the 10 s entry is dead
    deadlines.cancel(c, Due.REFRESH)
    deadlines.arm(a, Due.PRACK, 5.0)
    assert deadlines.next_deadline() == 5.0 and len(deadlines) == 3
    assert deadlines.pop_due(4.9) is None
    assert deadlines.pop_due(50.0) == (a, Due.PRACK)
    assert deadlines.pop_due(50.0) == (a, Due.EXPIRE)
    assert deadlines.pop_due(50.0) == (b, Due.EXPIRE)
    assert deadlines.pop_due(50.0) is None and deadlines.next_deadline() is None
    deadlines.arm(c, Due.EXPIRE, 60.0)
    deadlines.clear(c)
    assert deadlines.next_deadline() is None and len(deadlines) == 0


def test_heap_is_compacted_so_ended_calls_are_not_kept():
    deadlines = SessionDeadlines()
    live = _session(0)
    deadlines.arm(live, Due.EXPIRE, 1.0)
    for n in range(20_000):  # every re-arm leaves a dead entry behind, far in the future
        deadlines.arm(live, Due.REFRESH, 10_000.0 - n * 0.01)
    bound = COMPACT_MIN_DEAD + COMPACT_RATIO * len(deadlines) + 1
    assert len(deadlines._heap) <= bound  # what the heap holds, dead entries included
    assert deadlines.pop_due(1.0) == (live, Due.EXPIRE)
    assert deadlines.next_deadline() == 10_000.0 - 19_999 * 0.01
