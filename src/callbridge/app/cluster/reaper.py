"""A dead worker's calls end as ``worker_lost``: nothing stays "active" forever.

Every survivor sweeps on each tick: a worker whose liveness key expired (registry.py) and that still
ran calls is reaped by exactly one survivor, the one that takes its lock. The reaper ends each call in
the shared store the way the owner's journal would have: the record keeps every event up to the crash,
then gets a ``status`` (hangup, worker_lost) and an ``ended`` event at the worker's last sign of life
(its last heartbeat, or the call's last event if that came later); both go on the merged event stream
and, when configured, to the webhooks. Ownership goes.

The calls to end come from Redis (the worker's owned set) and from the store (its calls with no end),
so a call whose ownership never reached Redis, or a Redis that lost everything, leaves nothing behind;
a worker restarting under the same id reaps its previous life's calls the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from redis.asyncio import Redis

from ...call import events as ev
from ...call.events import CallStatus, EndReason
from ..events import EventBus
from . import keys
from .registry import LOST, STOPPED, UP, Registry
from .relay import Relay

log = logging.getLogger("callbridge.cluster")

# Time one survivor has to reap a worker before another may try (a store write is milliseconds).
REAP_LOCK_S = 60.0
# Compare-and-delete: release the lock only if we still hold it.
RELEASE_SCRIPT = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
FINISHED = CallStatus.HANGUP.value


class Records(Protocol):
    """What the reaper needs of the shared store (AsyncCallStore)."""

    async def get_call(self, call_id: str) -> dict[str, Any] | None: ...
    async def save_call(self, record: dict[str, Any]) -> None: ...
    async def append_event(self, call_id: str, type: str, data: dict[str, Any], at: float) -> int: ...
    async def unfinished_calls(self, worker: str, *, limit: int = ...) -> list[str]: ...
    async def unfinished_workers(self) -> list[str]: ...


Notify = Callable[[str, dict[str, Any]], Awaitable[None]]  # (webhook event, payload)


def end_as_lost(record: dict[str, Any], last_seen: float | None) -> tuple[dict[str, Any], list[tuple[str, dict]]]:
    """The stored ``record`` of a call whose worker died, ended: (the new record, its closing events as
    (type, data)). Sans-IO: the end time is the worker's last sign of life, never before the call's own
    last event."""
    times = [t for t in (_number(record.get("created_at")), _number(record.get("answered_at")), last_seen)
             if t is not None]
    times += [t for e in record.get("events") or () if isinstance(e, dict) and (t := _number(e.get("at"))) is not None]
    ended_at = max(times) if times else time.time()
    created, answered = _number(record.get("created_at")), _number(record.get("answered_at"))
    duration = None if created is None else round(ended_at - created, 3)
    talk = None if answered is None else round(ended_at - answered, 3)
    closing = [ev.StatusChanged(status=CallStatus.HANGUP, end_reason=EndReason.WORKER_LOST),
               ev.CallEnded(reason=EndReason.WORKER_LOST, duration_s=duration, talk_s=talk)]
    events = [(event.TYPE, event.data()) for event in closing]
    ended = {**record, "status": FINISHED, "end_reason": EndReason.WORKER_LOST.value, "ended_at": ended_at,
             "duration_s": duration, "talk_s": talk,
             "events": [*(record.get("events") or []), *({"at": ended_at, "type": t, **d} for t, d in events)]}
    return ended, events


def status_payload(record: dict[str, Any]) -> dict[str, Any]:
    """The call.status webhook's payload (journal.status_payload) from a record."""
    return {"call_id": record.get("id"), "sip_call_id": record.get("sip_call_id"), "direction": record.get("direction"),
            "status": record.get("status"), "end_reason": record.get("end_reason"), "at": record.get("ended_at"),
            "dispatch": record.get("dispatch"), "trunk": record.get("trunk"), "caller": record.get("caller"),
            "called": record.get("called")}


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class Reaper:
    def __init__(self, redis: Redis, registry: Registry, store: Records, *, bus: EventBus, relay: Relay,
                 notify: Notify | None = None, lock_s: float = REAP_LOCK_S) -> None:
        self.redis = redis
        self.registry = registry
        self.store = store
        self.bus = bus
        self.relay = relay
        self.notify = notify
        self.worker_id = registry.worker_id
        self._lock_ms = int(lock_s * 1000)
        self._release = redis.register_script(RELEASE_SCRIPT)
        self.calls_ended = 0
        # Workers only the store names, seen dead at the last store check: reaped if still dead at the next
        # (a Redis that just lost everything has live workers back within a heartbeat, not lost).
        self.store_suspects: frozenset[str] = frozenset()

    async def sweep(self, *, check_store: bool = False) -> int:
        """Reap every dead worker that left calls; forget long-gone ones. Returns the calls ended.

        ``check_store`` also asks the store which workers have unfinished calls: the workers Redis no
        longer knows (it restarted empty, or they never reached it).
        """
        members = await self.registry.members()
        unfinished = set(await self.store.unfinished_workers()) if check_store else set()
        candidates = sorted((set(members) | unfinished) - {self.worker_id})
        alive = await self.registry.alive(candidates)
        dead = [worker_id for worker_id in candidates if not alive[worker_id]]
        if check_store:
            suspects = frozenset(w for w in dead if w not in members)
            confirmed, self.store_suspects = suspects & self.store_suspects, suspects
            unfinished = (unfinished & set(members)) | confirmed
        if not dead:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in dead:
                pipe.hget(keys.worker(worker_id), "state")
                pipe.scard(keys.owned(worker_id))
            replies = await pipe.execute()
        ended = 0
        now = time.time()
        for index, worker_id in enumerate(dead):
            state, owned = keys.text(replies[2 * index]), int(replies[2 * index + 1] or 0)
            if state == UP or owned > 0 or worker_id in unfinished:
                ended += await self.reap(worker_id)
            elif state in (None, STOPPED, LOST) and members.get(worker_id, now) < now - keys.GONE_WORKER_RETENTION_S:
                await self.redis.zrem(keys.WORKERS, worker_id)  # gone long enough: off the list
                await self.redis.delete(keys.worker(worker_id))
        return ended

    async def reap(self, worker_id: str) -> int:
        """End ``worker_id``'s calls if it is dead and no other survivor is on it. Returns the calls ended."""
        lock = keys.reaping(worker_id)
        if not await self.redis.set(lock, self.registry.instance, nx=True, px=self._lock_ms):
            return 0  # another survivor is reaping it
        try:
            if await self.redis.exists(keys.alive(worker_id)):
                return 0  # it came back
            info, _ = await self.registry.worker(worker_id)
            last_seen = info.heartbeat if info is not None else None
            owned = {keys.text(m) for m in await self.redis.smembers(keys.owned(worker_id))}
            call_ids = {c for c in owned if c is not None and keys.CALL_ID.match(c)}
            call_ids |= set(await self.store.unfinished_calls(worker_id))
            ended = 0
            for call_id in sorted(call_ids):
                if await self._end_call(call_id, worker_id, last_seen):
                    ended += 1
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(keys.owned(worker_id))
                for call_id in call_ids:
                    pipe.delete(keys.call(call_id))
                if info is not None and info.state == UP:
                    pipe.hset(keys.worker(worker_id), mapping={"state": LOST, "reaped_at": repr(time.time())})
                    pipe.expire(keys.worker(worker_id), int(keys.GONE_WORKER_RETENTION_S))
                await pipe.execute()
            if ended or (info is not None and info.state == UP):
                log.warning("cluster: worker %s lost; its calls ended as worker_lost", worker_id,
                            extra={"worker": worker_id, "calls": ended, "last_heartbeat": last_seen})
            self.calls_ended += ended
            return ended
        finally:
            await self._release(keys=[lock], args=[self.registry.instance])

    async def _end_call(self, call_id: str, worker_id: str, last_seen: float | None) -> bool:
        record = await self.store.get_call(call_id)
        if record is None or record.get("status") == FINISHED:
            return False  # never stored, or it ended before the worker died
        if record.get("worker") not in (None, worker_id):
            return False  # another worker's call: not ours to end
        ended, closing = end_as_lost(record, last_seen)
        at = ended["ended_at"]
        # The record first, as the journal does: whatever happens next, the call is no longer "active".
        await self.store.save_call(ended)
        for kind, data in closing:
            seq = await self.store.append_event(call_id, kind, data, at)
            event = self.bus.publish(call_id, kind, data, at=at, seq=seq, worker=worker_id)
            if worker_id != self.worker_id:  # our own previous life's: the bus's tap relays those already
                self.relay.send(event)
        if self.notify is not None:
            await self.notify("call.status", status_payload(ended))
            await self.notify("call.ended", ended)
        return True


__all__ = ["Reaper", "end_as_lost", "status_payload"]
