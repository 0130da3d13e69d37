"""RTP/RTCP port pair allocation (bookkeeping only, no sockets).

RFC 3550 §11: RTP uses an even port and RTCP the next odd one. Pairs are
handed out at random from the whole range (the OS's CSPRNG by default), so a
stranger cannot guess the next call's port from the last one's (latch.py
guards the port itself). A freed pair waits in a cool-down queue behind a
quarter of the range before it can be drawn again, so stray packets of the
previous call do not land on the next one. Both operations are O(1).
"""

from __future__ import annotations

import random
from collections import deque

__all__ = ["PortAllocator", "PortsExhaustedError"]

DEFAULT_PORT_MIN = 10000
DEFAULT_PORT_MAX = 20000
MAX_PORT = 65535
# This share of the pairs (the most recently freed) cools down before reuse.
COOLDOWN_DIVISOR = 4


class PortsExhaustedError(RuntimeError):
    """No free RTP port pair in the configured range."""


class PortAllocator:
    """Hands out even RTP ports from ``[port_min, port_max]``; RTCP is port + 1.

    The socket layer calls :meth:`allocate`, tries to bind, and on failure
    calls :meth:`mark_bad` and allocates again. Bad ports are kept out of the
    pool until :meth:`reset_bad`. ``rng`` makes the order reproducible in tests.
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
        self._rng = rng if rng is not None else random.SystemRandom()
        self._free: list[int] = list(range(first, port_max, 2))  # p + 1 <= port_max; drawn at random
        self._cooling: deque[int] = deque()  # freed, oldest first
        self._cooldown = len(self._free) // COOLDOWN_DIVISOR
        self._in_use: set[int] = set()
        self._bad: set[int] = set()

    @property
    def capacity(self) -> int:
        return len(self._free) + len(self._cooling) + len(self._in_use) + len(self._bad)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def available(self) -> int:
        return len(self._free) + len(self._cooling)

    def is_allocated(self, port: int) -> bool:
        return port in self._in_use

    def allocate(self) -> int:
        """Reserve a pair; returns the even RTP port (RTCP is ``port + 1``)."""
        free = self._free
        if free:
            # Swap the drawn port with the last and pop: O(1), order does not matter.
            index = self._rng.randrange(len(free))
            port = free[index]
            free[index] = free[-1]
            free.pop()
        elif self._cooling:
            port = self._cooling.popleft()  # everything else is taken: the longest-cooled one
        else:
            raise PortsExhaustedError(
                f"all {self.capacity} RTP port pairs in {self.port_min}-{self.port_max} are taken"
            )
        self._in_use.add(port)
        return port

    def release(self, port: int) -> None:
        """Return a pair to the pool, through the cool-down queue."""
        self._take(port)
        cooling = self._cooling
        cooling.append(port)
        if len(cooling) > self._cooldown:
            self._free.append(cooling.popleft())

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
