"""One clock for every call's outgoing audio.

A timer per call would cost hundreds of wake-ups per 20 ms. One ticker
runs every SLOT_MS and serves the streams assigned to that slot, so sends
are spread over the 20 ms frame instead of bursting all at once (which
overruns receive buffers at the far end).

How late each slot runs is kept in a histogram, so send spacing is
measurable from inside the process (``/api/media``); ``bench/rtp_echo.py``
measures it from outside, on the wire.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("callbridge.media")

FRAME_MS = 20
SLOT_MS = 5
SLOTS = FRAME_MS // SLOT_MS
FRAME_S = FRAME_MS / 1000
SLOT_S = SLOT_MS / 1000
# Up to this far behind, overdue slots run back to back: each stream's next
# packet is late once and RTP time stays in step with the wall clock. Further
# behind (a stall), whole frames are dropped instead: every slot keeps its
# phase, so no stream is ticked twice in a row or skipped out of turn.
MAX_CATCH_UP_MS = 3 * FRAME_MS
LATENESS_BUCKET_MS = 0.5
LATENESS_BUCKETS = 400  # 0..200 ms; later than that lands in the last bucket

Tick = Callable[[float], None]


@dataclass(frozen=True, slots=True)
class PacerStats:
    streams: int
    slot_runs: int
    late_p50_ms: float
    late_p99_ms: float
    late_max_ms: float
    resyncs: int  # times the pacer fell over MAX_CATCH_UP_MS behind and dropped frames
    frames_skipped: int


def frames_to_skip(behind_s: float) -> int:
    """Whole frames to drop when the pacer runs ``behind_s`` late (0: catch up instead)."""
    if behind_s <= MAX_CATCH_UP_MS / 1000:
        return 0
    return int(behind_s // FRAME_S)


class LatenessHistogram:
    """Fixed buckets: O(1) per sample, no allocation on the hot path."""

    def __init__(self) -> None:
        self.counts = [0] * LATENESS_BUCKETS
        self.total = 0
        self.max_ms = 0.0

    def add(self, late_ms: float) -> None:
        index = int(late_ms / LATENESS_BUCKET_MS)
        self.counts[index if index < LATENESS_BUCKETS else LATENESS_BUCKETS - 1] += 1
        self.total += 1
        if late_ms > self.max_ms:
            self.max_ms = late_ms

    def quantile(self, q: float) -> float:
        if not self.total:
            return 0.0
        wanted = q * self.total
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= wanted:
                return (index + 1) * LATENESS_BUCKET_MS  # upper edge: never flatters
        return LATENESS_BUCKETS * LATENESS_BUCKET_MS


class MediaPacer:
    def __init__(self) -> None:
        self._slots: list[dict[int, Tick]] = [{} for _ in range(SLOTS)]
        self._ids = itertools.count()
        self._task: asyncio.Task | None = None
        self.lateness = LatenessHistogram()
        self.resyncs = 0
        self.frames_skipped = 0

    def add(self, tick: Tick) -> int:
        """Register a stream's per-frame callback ``tick(now)``; returns a handle for ``remove``."""
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

    def stats(self) -> PacerStats:
        h = self.lateness
        return PacerStats(self.stream_count, h.total, h.quantile(0.5), h.quantile(0.99), h.max_ms, self.resyncs,
                          self.frames_skipped)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        slots = self._slots
        while True:
            # Sleep to an absolute schedule so jitter in one tick does not accumulate.
            tick += 1
            due = start + tick * SLOT_S
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                # Behind schedule: still let the loop run once per slot, or SIP
                # and RTCP sockets starve (and overflow) for as long as we lag.
                await asyncio.sleep(0)
                skipped = frames_to_skip(loop.time() - due)
                if skipped:
                    self.resyncs += 1
                    self.frames_skipped += skipped
                    start += skipped * FRAME_S
                    due += skipped * FRAME_S
            now = loop.time()
            callbacks = slots[tick % SLOTS]
            if not callbacks:
                continue
            self.lateness.add((now - due) * 1000)
            for callback in list(callbacks.values()):
                try:
                    callback(now)
                except Exception:  # noqa: BLE001 - one broken call must not silence the others
                    log.exception("media tick failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
