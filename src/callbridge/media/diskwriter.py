"""One background thread for recordings' disk I/O, so a slow disk never stalls the media clock.

Page-cache writeback can block ``write()`` for tens of milliseconds; done on
the event loop, that delayed every call's next packet at once (50-60 ms
stalls every ~0.5 s at 500 recorded calls in bench/rtp_echo.py). Jobs run in
submission order, which keeps each file's "data first, then header" rule.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("callbridge.media")

_STOP = object()


class BackgroundFileWriter:
    def __init__(self, name: str = "recording-io") -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._pending = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.failures = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._idle:
            self._pending += 1
        self._jobs.put(job)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job has run; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        self.drain(timeout)
        self._jobs.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            try:
                job()
            except Exception:  # noqa: BLE001 - one file's error must not stop the others' writes
                self.failures += 1
                log.exception("recording write failed")
            finally:
                with self._idle:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()
