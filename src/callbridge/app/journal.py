"""Every call event, in order: persisted first, then published, then sent as webhooks.

The call layer tells the journal synchronously (it never waits on a disk);
one writer task works through the queue in order, so what a live client saw
on ``/api/events`` is always already in the store (it survives kill -9).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from ..call.call import Call, CallStatus
from .events import EventBus
from .metrics import CallMetrics

log = logging.getLogger("callbridge.journal")

# Without a durable store, finished calls stay in memory: the newest this many.
MEMORY_ONLY_FINISHED_CALLS = 1000


class Store(Protocol):
    async def save_call(self, record: dict) -> None: ...
    async def append_event(self, call_id: str, type: str, data: dict, at: float) -> int: ...
    async def append_transcript(self, call_id: str, entry: dict) -> None: ...


class Webhooks(Protocol):
    async def enqueue(self, url: str, event: str, payload: dict) -> None: ...


def transcript_event_type(entry: dict[str, Any]) -> str:
    return "tool_call" if entry.get("role") == "tool" else "transcript"


def status_payload(call: Call, at: float) -> dict[str, Any]:
    return {"call_id": call.id, "sip_call_id": call.sip_call_id, "direction": call.direction,
            "status": call.status.value, "end_reason": call.end_reason, "at": at,
            "dispatch": call.dispatch, "trunk": call.trunk, "caller": call.caller, "called": call.called}


class CallJournal:
    def __init__(self, bus: EventBus, metrics: CallMetrics, *, store: Store | None = None,
                 webhooks: Webhooks | None = None, webhook_url: str | None = None,
                 webhook_events: tuple[str, ...] = ("call.status", "call.ended"),
                 forget: Callable[[Call], None] | None = None) -> None:
        self.bus = bus
        self.metrics = metrics
        self.store = store
        self.webhooks = webhooks if webhook_url else None
        self.webhook_url = webhook_url
        self.webhook_events = set(webhook_events)
        self.forget = forget
        self._queue: asyncio.Queue[tuple] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._finished_in_memory: deque[Call] = deque()
        self.failures = 0

    # -- what the call layer calls (synchronous, never blocks) ----------------------------------

    def observe(self, call: Call, kind: str, data: dict[str, Any]) -> None:
        if kind == "transcript":
            # Logged as an event now (what clients see survives a crash); the transcript
            # rows come with each record save, complete with timings and tool results.
            self.metrics.on_transcript(data)
            entry = dict(data)
            self._queue.put_nowait(("event", call, transcript_event_type(entry), entry, entry.get("at", time.time())))
            return
        at = data.get("at", time.time())
        fields = {k: v for k, v in data.items() if k not in ("at", "type")}
        if kind == "status":
            self.metrics.on_status(call.direction, call.status.value)
            # The record first: after a crash the call exists with every event before it.
            self._queue.put_nowait(("save", call, call.to_record()))
        self._queue.put_nowait(("event", call, kind, fields, at))
        if kind == "status" and call.status is CallStatus.HANGUP:
            self._queue.put_nowait(("final", call, None))

    # -- the writer ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="journal")

    async def close(self) -> None:
        """Write out what is queued, then stop."""
        await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._handle(item)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad write must not stop the journal
                self.failures += 1
                log.exception("journal could not handle %s for call %s", item[0], item[1].id)
            finally:
                self._queue.task_done()

    async def _handle(self, item: tuple) -> None:
        kind, call = item[0], item[1]
        if kind == "save":
            if self.store is not None:
                await self.store.save_call(item[2])
        elif kind == "event":
            _, _, type_, fields, at = item
            seq = await self.store.append_event(call.id, type_, fields, at) if self.store is not None else None
            self.bus.publish(call.id, type_, fields, at=at, seq=seq)
            if type_ == "status":
                await self._webhook("call.status", {**status_payload(call, at), "status": fields.get("status"),
                                                    "end_reason": fields.get("end_reason")})
        elif kind == "final":
            await self._finalise(call)

    async def _finalise(self, call: Call) -> None:
        record = call.to_record()
        self.metrics.on_call_ended(record)
        if self.store is not None:
            await self.store.save_call(record)  # the transcript rows too, complete with timings
        await self._webhook("call.ended", record)
        if self.store is not None:
            if self.forget is not None:
                self.forget(call)
            return
        # Memory only: keep a bounded tail of finished calls for the API.
        self._finished_in_memory.append(call)
        while len(self._finished_in_memory) > MEMORY_ONLY_FINISHED_CALLS:
            old = self._finished_in_memory.popleft()
            if self.forget is not None:
                self.forget(old)

    async def _webhook(self, event: str, payload: dict[str, Any]) -> None:
        if self.webhooks is None or event not in self.webhook_events or self.webhook_url is None:
            return
        await self.webhooks.enqueue(self.webhook_url, event, payload)
