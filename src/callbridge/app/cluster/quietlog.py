"""Warnings a failing Redis or a hostile message could repeat thousands of times a second, said once per
key per interval with a count of the rest (the SIP layer's LogThrottle, on the monotonic clock)."""

from __future__ import annotations

import logging
import time
from typing import Any

from ...sip.ratelimit import LogThrottle

QUIET_INTERVAL_S = 10.0


class QuietLog:
    def __init__(self, logger: logging.Logger, interval: float = QUIET_INTERVAL_S) -> None:
        self._log = logger
        self._throttle = LogThrottle(interval)

    def warning(self, key: object, message: str, *args: object, **extra: Any) -> None:
        suppressed = self._throttle.check(key, time.monotonic())
        if suppressed is not None:
            self._log.warning(message, *args, extra={**extra, "suppressed": suppressed})
