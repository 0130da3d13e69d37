"""The worker registry: who is in the cluster, where to reach them, how busy they are, who is alive.

Each worker writes its own entry every ``cluster.heartbeat_s`` (keys.py has the layout). Liveness is a
key that Redis expires after ``cluster.worker_timeout_s``, so a worker is dead by Redis's clock, whatever
the workers' clocks say; the ``heartbeat`` field (unix time) is what operators read and what a dead
worker's calls end at.

Whatever comes back out of Redis is checked (:meth:`WorkerInfo.from_hash`): a bad entry is skipped and
logged, never trusted with a URL the API token would be sent to.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio import Redis

from . import keys
from .quietlog import QuietLog

log = logging.getLogger("callbridge.cluster")

UP, STOPPED, LOST = "up", "stopped", "lost"
STATES = frozenset({UP, STOPPED, LOST})
MAX_URL_LENGTH = 512
# How long past its expiry a stale liveness key may take to go (Redis expires lazily within ms).
CLAIM_MARGIN_S = 0.25


class WorkerIdInUse(OSError):
    """Another running worker holds this cluster.worker_id."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: str
    pid: int
    instance: str  # random per process life: tells a restarted worker from its previous life
    api_url: str
    sip_uri: str
    active_calls: int
    capacity: int
    draining: bool
    heartbeat: float  # unix time of the last heartbeat
    started_at: float
    state: str = UP
    reaped_at: float | None = None

    @property
    def spare(self) -> int:
        return max(self.capacity - self.active_calls, 0)

    def to_hash(self) -> dict[Any, str]:  # Any: redis-py's mapping type is invariant in its keys
        return {"id": self.id, "pid": str(self.pid), "instance": self.instance, "api_url": self.api_url,
                "sip_uri": self.sip_uri, "active_calls": str(self.active_calls), "capacity": str(self.capacity),
                "draining": "1" if self.draining else "0", "heartbeat": repr(self.heartbeat),
                "started_at": repr(self.started_at), "state": self.state}

    @classmethod
    def from_hash(cls, raw: dict[Any, Any]) -> "WorkerInfo":
        """Raises ValueError naming the first field that is missing or wrong."""
        fields = {keys.text(k): keys.text(v) for k, v in raw.items()}

        def field(name: str) -> str:
            value = fields.get(name)
            if value is None:
                raise ValueError(f"{name} missing")
            return value

        worker_id = field("id")
        if not keys.WORKER_ID.match(worker_id):
            raise ValueError("id")
        api_url, sip_uri = field("api_url"), field("sip_uri")
        if not api_url.startswith(("http://", "https://")) or len(api_url) > MAX_URL_LENGTH:
            raise ValueError("api_url")
        if not sip_uri.startswith(("sip:", "sips:")) or len(sip_uri) > MAX_URL_LENGTH:
            raise ValueError("sip_uri")
        state = fields.get("state") or UP
        if state not in STATES:
            raise ValueError("state")
        reaped = fields.get("reaped_at")
        return cls(id=worker_id, pid=_count(field("pid"), "pid"), instance=field("instance")[:64],
                   api_url=api_url, sip_uri=sip_uri, active_calls=_count(field("active_calls"), "active_calls"),
                   capacity=_count(field("capacity"), "capacity"), draining=field("draining") == "1",
                   heartbeat=_time(field("heartbeat"), "heartbeat"),
                   started_at=_time(field("started_at"), "started_at"), state=state,
                   reaped_at=None if reaped is None else _time(reaped, "reaped_at"))

    def to_json(self, *, alive: bool) -> dict[str, Any]:
        """What GET /api/cluster/workers shows: ``state`` is up, draining, lost (dead, its calls ended or
        about to be) or stopped (left cleanly)."""
        if alive:
            state = "draining" if self.draining else UP
        else:
            state = STOPPED if self.state == STOPPED else LOST
        return {"id": self.id, "state": state, "alive": alive, "pid": self.pid, "api_url": self.api_url,
                "sip_uri": self.sip_uri, "active_calls": self.active_calls, "capacity": self.capacity,
                "draining": self.draining, "last_heartbeat": self.heartbeat, "started_at": self.started_at,
                "reaped_at": self.reaped_at}


def _count(text: str, name: str) -> int:
    if not text.isdigit() or len(text) > 12:
        raise ValueError(name)
    return int(text)


def _time(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(name) from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(name)
    return value


class Registry:
    """This worker's entry, and everyone's."""

    def __init__(self, redis: Redis, worker_id: str, instance: str, timeout_s: float) -> None:
        self.redis = redis
        self.worker_id = worker_id
        self.instance = instance
        self._timeout_ms = max(int(timeout_s * 1000), 1)
        self._quiet = QuietLog(log)

    async def wait_for_id(self) -> None:
        """Return once no live process holds our worker id; a holder that keeps it alive is an error.

        A worker restarted right after a crash finds its previous life's liveness key still there: that
        one expires within worker_timeout_s, so wait it out once.
        """
        key = keys.alive(self.worker_id)
        holder = keys.text(await self.redis.get(key))
        if holder is None or holder == self.instance:
            return
        ttl_ms = await self.redis.pttl(key)
        if ttl_ms > 0:
            log.info("worker id %s was alive moments ago; waiting %.1f s for it to expire", self.worker_id,
                     ttl_ms / 1000)
            await asyncio.sleep(ttl_ms / 1000 + CLAIM_MARGIN_S)
        if keys.text(await self.redis.get(key)) not in (None, self.instance):
            raise WorkerIdInUse(f"cluster.worker_id {self.worker_id!r} is in use by a running worker; "
                                f"give each worker its own id")

    async def claim(self) -> None:
        """Take the liveness key; :class:`WorkerIdInUse` if another process took it first."""
        taken = await self.redis.set(keys.alive(self.worker_id), self.instance, nx=True, px=self._timeout_ms)
        if not taken:
            raise WorkerIdInUse(f"cluster.worker_id {self.worker_id!r} was just taken by another worker")

    async def previous_life(self) -> WorkerInfo | None:
        """Our entry as the last process with this id left it (None: first start, or unreadable)."""
        raw = await self.redis.hgetall(keys.worker(self.worker_id))
        if not raw:
            return None
        try:
            return WorkerInfo.from_hash(raw)
        except ValueError as exc:
            log.warning("ignoring unreadable registry entry of %s: %s", self.worker_id, exc)
            return None

    async def beat(self, info: WorkerInfo) -> bool:
        """Refresh our entry and liveness. True when liveness had lapsed (Redis restarted or flushed, or we
        were stalled past worker_timeout_s): the caller writes its call ownership again."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.alive(self.worker_id), self.instance, px=self._timeout_ms, get=True)
            pipe.hset(keys.worker(self.worker_id), mapping=info.to_hash())
            pipe.hdel(keys.worker(self.worker_id), "reaped_at")
            pipe.persist(keys.worker(self.worker_id))
            pipe.zadd(keys.WORKERS, {self.worker_id: info.heartbeat})
            previous, *_ = await pipe.execute()
        holder = keys.text(previous)
        if holder is not None and holder != self.instance:
            self._quiet.warning("id-conflict", "another process uses cluster.worker_id %s; give each worker its "
                                "own id", self.worker_id, holder=holder)
        return holder != self.instance

    async def leave(self, info: WorkerInfo) -> None:
        """A clean stop: listed as stopped for a while, no longer alive."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.worker(self.worker_id), mapping=replace(info, state=STOPPED).to_hash())
            pipe.expire(keys.worker(self.worker_id), int(keys.GONE_WORKER_RETENTION_S))
            pipe.delete(keys.alive(self.worker_id))
            await pipe.execute()

    async def alive(self, worker_ids: list[str]) -> dict[str, bool]:
        if not worker_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in worker_ids:
                pipe.exists(keys.alive(worker_id))
            found = await pipe.execute()
        return {worker_id: bool(flag) for worker_id, flag in zip(worker_ids, found, strict=True)}

    async def members(self) -> dict[str, float]:
        """Every worker id in the index, with its last heartbeat."""
        pairs = await self.redis.zrange(keys.WORKERS, 0, -1, withscores=True)
        members: dict[str, float] = {}
        for pair in pairs:
            member, score = pair[0], pair[1]
            worker_id = keys.text(member)
            if worker_id is not None and keys.WORKER_ID.match(worker_id):
                members[worker_id] = float(score)
        return members

    async def workers(self) -> list[tuple[WorkerInfo, bool]]:
        """Every listed worker and whether it is alive, by id."""
        ids = sorted(await self.members())
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.hgetall(keys.worker(worker_id))
                pipe.exists(keys.alive(worker_id))
            replies = await pipe.execute()
        listed = []
        for index, worker_id in enumerate(ids):
            raw, alive = replies[2 * index], bool(replies[2 * index + 1])
            if not raw:
                continue  # expired after it stopped; the index entry goes at the next sweep
            try:
                info = WorkerInfo.from_hash(raw)
            except ValueError as exc:
                self._quiet.warning(("bad-entry", worker_id), "unreadable registry entry of %s skipped: %s",
                                    worker_id, exc)
                continue
            if info.id != worker_id:
                self._quiet.warning(("bad-entry", worker_id), "registry entry of %s names %s; skipped",
                                    worker_id, info.id)
                continue
            listed.append((info, alive))
        return listed

    async def worker(self, worker_id: str) -> tuple[WorkerInfo | None, bool]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.worker(worker_id))
            pipe.exists(keys.alive(worker_id))
            raw, alive = await pipe.execute()
        if not raw:
            return None, bool(alive)
        try:
            info = WorkerInfo.from_hash(raw)
        except ValueError as exc:
            self._quiet.warning(("bad-entry", worker_id), "unreadable registry entry of %s: %s", worker_id, exc)
            return None, bool(alive)
        return (info if info.id == worker_id else None), bool(alive)
