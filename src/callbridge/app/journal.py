"""Every call event, in order: persisted first, then published on the bus (SSE), then sent as webhooks.

The journal is a consumer of each call's event stream (``call/events.py``): it
is told synchronously and never waits on a disk; one writer task works through
the queue in order, so what a live client saw on ``/api/events`` is always
already in the store (it survives kill -9).

Events that queue up together are written in one transaction: a commit (a WAL
fsync) per event was most of what a caller sitting in an IVR menu cost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from ..call import events as ev
from ..call.call import Call
from .events import EventBus

log = logging.getLogger("callbridge.journal")

# Without a durable store, finished calls stay in memory: the newest this many.
MEMORY_ONLY_FINISHED_CALLS = 1000
# A batch of events waits this long for company: a few per transaction at a few hundred
# events a second, while SSE clients see each event at most this much later.
BATCH_LINGER_S = 0.02
MAX_BATCH = 256


class Store(Protocol):
    async def save_call(self, record: dict) -> None: ...
    async def append_events(self, events: list[tuple[str, str, dict, float]]) -> list[int]: ...


class Webhooks(Protocol):
    async def enqueue(self, url: str, event: str, payload: dict) -> object: ...  # the outbox returns a row id


def status_payload(call: Call, at: float) -> dict[str, Any]:
    return {"call_id": call.id, "sip_call_id": call.sip_call_id, "direction": call.direction.value,
            "status": call.status.value, "end_reason": call.end_reason, "at": at,
            "dispatch": call.dispatch, "trunk": call.trunk, "caller": call.caller, "called": call.called}


class CallJournal:
    def __init__(self, bus: EventBus, *, store: Store | None = None,
                 webhooks: Webhooks | None = None, webhook_url: str | None = None,
                 webhook_events: tuple[str, ...] = ("call.status", "call.ended"),
                 forget: Callable[[Call], None] | None = None) -> None:
        self.bus = bus
        self.store = store
        self.webhooks = webhooks if webhook_url else None
        self.webhook_url = webhook_url
        self.webhook_events = set(webhook_events)
        self.forget = forget
        self._queue: asyncio.Queue[tuple] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._finished_in_memory: deque[Call] = deque()
        self.failures = 0

    # -- the call's event stream (synchronous, never blocks) ------------------------------------

    def __call__(self, call: Call, published: ev.Published) -> None:
        event = published.event
        if isinstance(event, ev.StatusChanged):
            # The record first: after a crash the call exists with every event before it.
            self._queue.put_nowait(("save", call, call.to_record()))
        self._queue.put_nowait(("event", call, published, status_payload(call, published.at)))
        if isinstance(event, ev.CallEnded):
            self._queue.put_nowait(("final", call, call.to_record()))

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
        pending: tuple | None = None
        while True:
            item = pending if pending is not None else await self._queue.get()
            pending = None
            batch = [item]
            try:
                if item[0] == "event":
                    pending = await self._gather_events(batch)
                    await self._write_events(batch)
                else:
                    await self._handle(item)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad write must not stop the journal
                self.failures += 1
                log.exception("journal could not handle %s for call %s", item[0], item[1].id)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _gather_events(self, batch: list[tuple]) -> tuple | None:
        """Add the events queued behind the first (up to a linger and a size); returns the first
        item that is not an event, to be handled next, in order."""
        if self.store is not None and self._queue.empty():
            await asyncio.sleep(BATCH_LINGER_S)
        while len(batch) < MAX_BATCH and not self._queue.empty():
            item = self._queue.get_nowait()
            if item[0] != "event":
                return item
            batch.append(item)
        return None

    async def _write_events(self, batch: list[tuple]) -> None:
        rows = [(call.id, published.type, published.data(), published.at) for _, call, published, _ in batch]
        seqs: list[int | None] = [published.seq for _, _, published, _ in batch]
        if self.store is not None:
            seqs = list(await self.store.append_events(rows))
        for (_, call, published, status), (_, type, data, at), seq in zip(batch, rows, seqs, strict=True):
            self.bus.publish(call.id, type, data, at=at, seq=seq)
            if isinstance(published.event, ev.StatusChanged):
                await self._webhook("call.status", status)

    async def _handle(self, item: tuple) -> None:
        kind, call = item[0], item[1]
        if kind == "save":
            if self.store is not None:
                await self.store.save_call(item[2])
        elif kind == "final":
            await self._finalise(call, item[2])

    async def _finalise(self, call: Call, record: dict[str, Any]) -> None:
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
