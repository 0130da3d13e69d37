"""The in-process event bus behind ``GET /api/events``.

Publishing never waits: each subscriber has a bounded queue, and one that
falls behind is dropped (its stream ends) rather than slowing any call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("callbridge.events")

# About a minute of a busy call's events; a client further behind than that reconnects.
SUBSCRIBER_QUEUE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class BusEvent:
    call_id: str
    type: str  # "status", "dtmf", "transcript", "tool", ...
    data: dict[str, Any]
    at: float
    seq: int | None = None  # the store's event number, when persisted
    worker: str | None = None  # the cluster worker the call runs on (app/cluster/); None in one process

    def to_json(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "type": self.type, "at": self.at, "seq": self.seq, "worker": self.worker,
                "data": self.data}


@dataclass(eq=False)
class Subscription:
    call_id: str | None  # None: every call
    queue: asyncio.Queue[BusEvent | None] = field(default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE_SIZE))
    dropped: bool = False

    def wants(self, event: BusEvent) -> bool:
        return self.call_id is None or self.call_id == event.call_id

    async def next(self) -> BusEvent | None:
        """The next event; None once the bus dropped or closed this subscription."""
        return await self.queue.get()


class EventBus:
    def __init__(self, worker: str | None = None) -> None:
        self._subscribers: set[Subscription] = set()
        self.published = 0
        self.dropped_subscribers = 0
        self.worker = worker  # stamped on the events published here without a worker of their own
        # Told every event synchronously, never dropped for being slow: each must only queue (the cluster relay).
        self.taps: list[Callable[[BusEvent], None]] = []

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribe(self, call_id: str | None = None) -> Subscription:
        subscription = Subscription(call_id)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def publish(self, call_id: str, type: str, data: dict[str, Any], *, at: float | None = None,
                seq: int | None = None, worker: str | None = None) -> BusEvent:
        event = BusEvent(call_id, type, data, time.time() if at is None else at, seq, worker or self.worker)
        self.published += 1
        for tap in self.taps:
            try:
                tap(event)
            except Exception:  # noqa: BLE001 - a tap's bug must not cost the subscribers their event
                log.exception("event tap failed on %s", call_id)
        for subscription in list(self._subscribers):
            if not subscription.wants(event):
                continue
            try:
                subscription.queue.put_nowait(event)
            except asyncio.QueueFull:
                self._drop(subscription)
        return event

    def _drop(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        subscription.dropped = True
        self.dropped_subscribers += 1
        log.warning("event subscriber too slow; dropped", extra={"call_id": subscription.call_id})
        # Make room for the end-of-stream marker so the reader wakes and leaves.
        while not subscription.queue.empty():
            subscription.queue.get_nowait()
        subscription.queue.put_nowait(None)

    def close(self) -> None:
        for subscription in list(self._subscribers):
            self._subscribers.discard(subscription)
            try:
                subscription.queue.put_nowait(None)
            except asyncio.QueueFull:
                self._drop(subscription)


def sse_frame(event: BusEvent) -> bytes:
    """One Server-Sent Event (HTML Living Standard §9.2): ``id``, ``event`` and one ``data`` line."""
    lines = []
    if event.seq is not None:
        lines.append(f"id: {event.call_id}:{event.seq}")
    lines.append(f"event: {event.type}")
    lines.append("data: " + json.dumps(event.to_json(), separators=(",", ":"), default=str))
    return ("\n".join(lines) + "\n\n").encode()


# A comment line keeps proxies from closing an idle stream (§9.2.7: lines starting with ':').
SSE_KEEPALIVE = b": keep-alive\n\n"
