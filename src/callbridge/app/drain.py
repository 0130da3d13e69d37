"""A worker's graceful exit: no new calls, the live ones end as they will, then the process exits.

SIGTERM or SIGINT (what the cluster launcher sends on Ctrl-C), or ``POST /api/drain``, begin
it. From then on new INVITEs and out-of-dialog OPTIONS get 503 with Retry-After
(app/availability.py): a proxy's dispatcher marks the worker down by its own probes and keeps
it down, whatever state the proxy was told, and ``/healthz`` says "draining". Requests inside
the live calls' dialogs are answered as before.

The drain is over when the last call ends. At ``server.drain_deadline_s`` the calls still up
are ended with BYE (end reason ``drain_deadline``); a second signal ends them at once
(``shutdown``). Either way each call is finished through the call manager, so its record
is complete (status, end reason, end time) before the server stops and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from ..call import events as ev
from ..call.call import Call, EndReason
from .availability import WorkerAvailability

log = logging.getLogger("callbridge.drain")


class DrainableCalls(Protocol):
    """The calls a drain waits for, and ends when it must (the CallManager)."""

    @property
    def active_calls(self) -> Sequence[Call]: ...

    def hangup(self, call: Call, reason: str = ...) -> None: ...


class Drain:
    """Begun once; :meth:`wait` returns when no call is left. Also a call-event consumer."""

    def __init__(self, availability: WorkerAvailability, calls: DrainableCalls, deadline_s: float) -> None:
        self._availability = availability
        self._calls = calls
        self.deadline_s = deadline_s
        self._drained = asyncio.Event()
        self._deadline: asyncio.TimerHandle | None = None

    @property
    def draining(self) -> bool:
        return self._availability.draining

    def begin(self, why: str) -> None:
        """Refuse new calls from now on; idempotent (a second request changes nothing)."""
        if self.draining:
            return
        self._availability.draining = True
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.deadline_s, self.end_calls, EndReason.DRAIN_DEADLINE)
        log.info("draining: new calls get 503; exiting when the last call ends",
                 extra={"why": why, "active_calls": len(self._calls.active_calls), "deadline_s": self.deadline_s})
        self._check()

    def on_signal(self) -> None:
        """SIGTERM/SIGINT: the first begins the drain, any later one ends the calls still up."""
        if not self.draining:
            self.begin("signal")
        else:
            self.end_calls(EndReason.SHUTDOWN)

    def end_calls(self, reason: EndReason) -> None:
        """BYE (or CANCEL / 480 while ringing) on every call still up; each is finished first."""
        calls = list(self._calls.active_calls)
        if calls:
            log.warning("draining: ending the calls still up", extra={"calls": len(calls), "reason": reason.value})
        for call in calls:
            self._calls.hangup(call, reason)
        self._check()

    async def wait(self) -> None:
        """Until the drain has begun and no call is left."""
        await self._drained.wait()

    def __call__(self, call: Call, published: ev.Published) -> None:
        # An EventConsumer (call/call.py): each call's end may be the last one.
        if isinstance(published.event, ev.CallEnded) and self.draining:
            self._check()

    def _check(self) -> None:
        if not self.draining or self._drained.is_set() or self._calls.active_calls:
            return
        if self._deadline is not None:
            self._deadline.cancel()
        log.info("drained: no call left")
        self._drained.set()
