"""Hands work from code that must never wait (a call's event consumers) to one task that talks to Redis.

Bounded: when Redis is slow or gone the queue fills and further items are dropped, counted and
logged (throttled), never waited for; a call's media and signalling never feel Redis. Items go out
in order, in batches of what has piled up (one round trip for many).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from redis.exceptions import RedisError

from .quietlog import QuietLog

T = TypeVar("T")

MAX_BATCH = 256
# On shutdown, what is still queued gets this long to reach Redis (the calls' last events).
CLOSE_FLUSH_TIMEOUT_S = 2.0

log = logging.getLogger("callbridge.cluster")


class SendQueue(Generic[T]):
    def __init__(self, name: str, send: Callable[[list[T]], Awaitable[None]], *, maxsize: int,
                 on_failure: Callable[[], None] | None = None) -> None:
        self.name = name
        self._send = send
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize)
        self._task: asyncio.Task[None] | None = None
        self._quiet = QuietLog(log)
        self._on_failure = on_failure
        self.dropped = 0  # never queued: the queue was full
        self.failed = 0  # queued, but Redis refused or was unreachable

    def put(self, item: T) -> bool:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            self._quiet.warning(("full", self.name), "cluster %s queue full; dropping (Redis slow or down)",
                                self.name, dropped=self.dropped)
            if self._on_failure is not None:
                self._on_failure()
            return False
        return True

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"cluster-{self.name}")

    async def close(self) -> None:
        try:
            async with asyncio.timeout(CLOSE_FLUSH_TIMEOUT_S):
                await self._queue.join()
        except TimeoutError:
            log.warning("cluster %s: %d items not sent at shutdown", self.name, self._queue.qsize())
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._send(batch)
            except (RedisError, OSError) as exc:
                self.failed += len(batch)
                self._quiet.warning(("failed", self.name), "cluster %s: Redis write failed: %s", self.name, exc,
                                    failed=self.failed)
                if self._on_failure is not None:
                    self._on_failure()
            except Exception:  # noqa: BLE001 - one bad batch must not stop the queue
                self.failed += len(batch)
                log.exception("cluster %s: sending a batch failed", self.name)
            finally:
                for _ in batch:
                    self._queue.task_done()
