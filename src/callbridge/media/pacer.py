"""One clock for every call's outgoing audio.

A timer per call would cost hundreds of wake-ups per 20 ms. One ticker
runs every SLOT_MS and serves the streams assigned to that slot, so sends
are spread over the 20 ms frame instead of bursting all at once (which
overruns receive buffers at the far end).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

log = logging.getLogger("callbridge.media")

FRAME_MS = 20
SLOT_MS = 5
SLOTS = FRAME_MS // SLOT_MS


class MediaPacer:
    def __init__(self) -> None:
        self._slots: list[dict[int, Callable[[], None]]] = [{} for _ in range(SLOTS)]
        self._ids = itertools.count()
        self._task: asyncio.Task | None = None

    def add(self, tick: Callable[[], None]) -> int:
        """Register a stream's per-frame callback; returns a handle for ``remove``."""
        handle = next(self._ids)
        # Least-loaded slot keeps the spread even as calls come and go.
        slot = min(range(SLOTS), key=lambda i: len(self._slots[i]))
        self._slots[slot][handle] = tick
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="media-pacer")
        return handle

    def remove(self, handle: int) -> None:
        for slot in self._slots:
            slot.pop(handle, None)

    @property
    def stream_count(self) -> int:
        return sum(len(slot) for slot in self._slots)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while True:
            # Sleep to an absolute schedule so jitter in one tick does not accumulate.
            tick += 1
            delay = start + tick * SLOT_MS / 1000 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -FRAME_MS / 1000:
                # We fell more than a frame behind (overload): skip ahead, don't burst.
                start, tick = loop.time(), 0
            for callback in list(self._slots[tick % SLOTS].values()):
                try:
                    callback()
                except Exception:  # noqa: BLE001
                    log.exception("media tick failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
