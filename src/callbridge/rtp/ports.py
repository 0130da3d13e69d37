"""RTP/RTCP port pair allocation (bookkeeping only, no sockets).

RFC 3550 §11: RTP uses an even port and RTCP the next odd one. Freed pairs go
to the back of the queue so a port is not reused while stray packets from
the previous call may still arrive.
"""

from __future__ import annotations

import random
from collections import deque

__all__ = ["PortAllocator", "PortsExhaustedError"]

DEFAULT_PORT_MIN = 10000
DEFAULT_PORT_MAX = 20000
MAX_PORT = 65535


class PortsExhaustedError(RuntimeError):
    """No free RTP port pair in the configured range."""


class PortAllocator:
    """Hands out even RTP ports from ``[port_min, port_max]``; RTCP is port + 1.

    The socket layer calls :meth:`allocate`, tries to bind, and on failure
    calls :meth:`mark_bad` and allocates again. Bad ports are kept out of the
    pool until :meth:`reset_bad`.
    """

    def __init__(
        self,
        port_min: int = DEFAULT_PORT_MIN,
        port_max: int = DEFAULT_PORT_MAX,
        *,
        rng: random.Random | None = None,
    ) -> None:
        first = port_min + (port_min & 1)  # round up to even
        if not 0 < first < MAX_PORT or not port_min <= port_max <= MAX_PORT or first + 1 > port_max:
            raise ValueError(f"no even/odd port pair in range {port_min}-{port_max}")
        self.port_min = port_min
        self.port_max = port_max
        ports = list(range(first, port_max, 2))  # p + 1 <= port_max
        if rng is not None:
            rng.shuffle(ports)  # less predictable ports, if wanted
        self._free: deque[int] = deque(ports)
        self._in_use: set[int] = set()
        self._bad: set[int] = set()
        self._first = first

    @property
    def capacity(self) -> int:
        return len(self._free) + len(self._in_use) + len(self._bad)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def available(self) -> int:
        return len(self._free)

    def is_allocated(self, port: int) -> bool:
        return port in self._in_use

    def allocate(self) -> int:
        """Reserve a pair; returns the even RTP port (RTCP is ``port + 1``)."""
        if not self._free:
            raise PortsExhaustedError(
                f"all {self.capacity} RTP port pairs in {self.port_min}-{self.port_max} are taken"
            )
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def release(self, port: int) -> None:
        """Return a pair to the pool (least recently used is handed out first)."""
        self._take(port)
        self._free.append(port)

    def mark_bad(self, port: int) -> None:
        """The pair could not be bound: keep it out of the pool."""
        self._take(port)
        self._bad.add(port)

    def reset_bad(self) -> int:
        """Give bad ports another chance; returns how many were restored."""
        count = len(self._bad)
        self._free.extend(sorted(self._bad))
        self._bad.clear()
        return count

    def _take(self, port: int) -> None:
        try:
            self._in_use.remove(port)
        except KeyError:
            raise ValueError(f"port {port} is not allocated") from None
