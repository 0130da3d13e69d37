"""Which worker runs which call, in Redis: where another worker's API forwards a call's actions, and
what a survivor ends if this worker dies.

A consumer of every call's event stream (call/events.py): the first event of a call claims it, its
CallEnded releases it. The consumer only queues (sendqueue.py); a lost write (Redis down, queue full)
marks the ownership stale and the next heartbeat writes the whole set again (:meth:`resync`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from redis.asyncio import Redis

from ...call import events as ev
from ...call.call import Call
from . import keys
from .sendqueue import SendQueue

log = logging.getLogger("callbridge.cluster")

OWNERSHIP_QUEUE_SIZE = 10_000
OWN, RELEASE = "own", "release"


class Ownership:
    def __init__(self, redis: Redis, worker_id: str, *, maxsize: int = OWNERSHIP_QUEUE_SIZE) -> None:
        self.redis = redis
        self.worker_id = worker_id
        self._live: set[str] = set()
        self.stale = False  # a write was lost: resync at the next heartbeat
        self.queue: SendQueue[tuple[str, str]] = SendQueue("ownership", self._send, maxsize=maxsize,
                                                           on_failure=self._mark_stale)

    # -- the call's event stream (synchronous, never blocks) --------------------------------------

    def __call__(self, call: Call, published: ev.Published) -> None:
        if isinstance(published.event, ev.CallEnded):
            if call.id in self._live:
                self._live.discard(call.id)
                self.queue.put((RELEASE, call.id))
        elif call.id not in self._live and call.status is not ev.CallStatus.HANGUP:
            self._live.add(call.id)
            self.queue.put((OWN, call.id))

    @property
    def live(self) -> frozenset[str]:
        return frozenset(self._live)

    def _mark_stale(self) -> None:
        self.stale = True

    async def _send(self, batch: list[tuple[str, str]]) -> None:
        owned = keys.owned(self.worker_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            for action, call_id in batch:
                if action == OWN:
                    pipe.set(keys.call(call_id), self.worker_id)
                    pipe.sadd(owned, call_id)
                else:
                    pipe.set(keys.call(call_id), self.worker_id, ex=keys.ENDED_OWNER_TTL_S)
                    pipe.srem(owned, call_id)
            await pipe.execute()

    # -- the whole set, after Redis lost it or us --------------------------------------------------

    async def resync(self, live: Iterable[str] | None = None) -> None:
        """Make Redis say exactly what runs here: our live calls, no others."""
        call_ids = sorted(self._live if live is None else live)
        self.stale = False
        owned = keys.owned(self.worker_id)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(owned)
                if call_ids:
                    pipe.sadd(owned, *call_ids)
                for call_id in call_ids:
                    pipe.set(keys.call(call_id), self.worker_id)
                await pipe.execute()
        except BaseException:
            self.stale = True
            raise
        if call_ids:
            log.info("cluster: call ownership written again", extra={"calls": len(call_ids)})

    # -- reads --------------------------------------------------------------------------------------

    async def owner_of(self, call_id: str) -> tuple[str | None, bool]:
        """(the worker that runs or ran ``call_id``, whether the call has ended); (None, False) if unknown."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(keys.call(call_id))
            pipe.pttl(keys.call(call_id))
            raw, ttl_ms = await pipe.execute()
        owner = keys.text(raw)
        if owner is None or not keys.WORKER_ID.match(owner):
            return None, False
        return owner, ttl_ms > 0  # a live call's key never expires; an ended one's does
