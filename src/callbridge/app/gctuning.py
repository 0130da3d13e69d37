"""Garbage-collector settings and pause accounting for a process that keeps a 20 ms clock."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger("callbridge.server")

# Young-generation collections this far apart cost the same in total but run
# a tenth as often; each one is a pause every call's audio shares.
GC_YOUNG_THRESHOLD = 10_000
# Full collections walk every call's objects: 30-50 ms at 500 calls on a busy
# core, long enough to be heard. They never start on their own; the server
# runs one on a timer instead (FULL_COLLECTION_INTERVAL_S), so dead reference
# cycles wait at most that long and a busy line stalls at most that often.
GC_FULL_NEVER = 1_000_000
FULL_COLLECTION_INTERVAL_S = 600.0


# A collection longer than this is logged: it delays every call's next packet.
GC_PAUSE_WARN_MS = 20.0


class GcPauseMonitor:
    """Times every garbage collection, so pauses are visible in /api/media and the log."""

    def __init__(self) -> None:
        self.max_pause_ms = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._started = 0.0

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause_ms = (time.perf_counter() - self._started) * 1000
        generation = info["generation"]
        self.collections[generation] += 1
        if pause_ms > self.max_pause_ms[generation]:
            self.max_pause_ms[generation] = pause_ms
        if pause_ms >= GC_PAUSE_WARN_MS:
            log.warning("long garbage collection pause", extra={"generation": generation,
                                                                 "pause_ms": round(pause_ms, 1)})


GC_MONITOR = GcPauseMonitor()


def tune_gc_for_media() -> None:
    """Keep garbage-collector pauses out of the 20 ms media clock.

    Everything alive once the server is up (modules, config, the HTTP app)
    lives for the whole process: freezing it keeps full collections from
    walking it again and again, which showed up as 50-100 ms stalls across
    all calls at once in bench/rtp_echo.py.
    """
    GC_MONITOR.install()
    gc.collect()
    gc.freeze()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, GC_FULL_NEVER)


async def collect_periodically(interval_s: float = FULL_COLLECTION_INTERVAL_S) -> None:
    """The full collections automatic GC no longer starts."""
    while True:
        await asyncio.sleep(interval_s)
        gc.collect()
