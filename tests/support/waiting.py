"""Wait for a condition the far side will make true, bounded in time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1,
               detail: Callable[[], str] | None = None) -> Any:
    """The predicate's first truthy value; AssertionError naming ``what`` (and ``detail()``) at the timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}"
                         + (f"\n{detail()}" if detail is not None else ""))
