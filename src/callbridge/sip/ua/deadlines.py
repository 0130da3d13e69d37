"""Every session's next deadlines on one heap, so a flush never scans the sessions.

With thousands of calls up, the driver asks for the next deadline after every
message. A heap answers in O(1) and fires a deadline in O(log n), like the
transaction layer's timers. Re-arming or cancelling does not search the heap:
each (session, kind) remembers the generation of its live entry, and an entry
whose generation is no longer current is skipped when it reaches the top
(lazy deletion). The heap is rebuilt when skipped entries outnumber live ones,
so ended calls are not held in memory until their old deadlines come round.
"""

from __future__ import annotations

import enum
import heapq
import itertools

from ..session import InviteSession

# Rebuild the heap once dead entries are this many times the live ones (and at least
# COMPACT_MIN_DEAD): amortised O(1) per arm, and memory stays proportional to live calls.
COMPACT_RATIO = 2
COMPACT_MIN_DEAD = 1024


class Due(enum.Enum):
    """What a session's deadline is for."""

    PRACK = "prack"  # retransmit a reliable provisional, or give up on it (RFC 3262 §3)
    EXPIRE = "expire"  # the peer did not refresh: end the session (RFC 4028 §10)
    REFRESH = "refresh"  # we are the refresher: re-INVITE (RFC 4028 §7.4)


_Key = tuple[InviteSession, Due]


class SessionDeadlines:
    """Absolute deadlines per (session, kind); at most one live deadline each."""

    def __init__(self) -> None:
        # (deadline, generation, session, kind); the unique generation keeps sessions uncompared.
        self._heap: list[tuple[float, int, InviteSession, Due]] = []
        self._live: dict[_Key, int] = {}  # (session, kind) -> generation of its live entry
        self._generation = itertools.count()

    def __len__(self) -> int:
        """Live deadlines (not heap entries)."""
        return len(self._live)

    def arm(self, session: InviteSession, kind: Due, at: float) -> None:
        """Set (or move) ``session``'s ``kind`` deadline to ``at``."""
        generation = next(self._generation)
        self._live[(session, kind)] = generation
        heapq.heappush(self._heap, (at, generation, session, kind))
        dead = len(self._heap) - len(self._live)
        if dead > COMPACT_MIN_DEAD and dead > COMPACT_RATIO * len(self._live):
            self._compact()

    def cancel(self, session: InviteSession, kind: Due) -> None:
        self._live.pop((session, kind), None)

    def clear(self, session: InviteSession) -> None:
        """Forget every deadline of a session that ended."""
        for kind in Due:
            self._live.pop((session, kind), None)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and not self._is_live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> tuple[InviteSession, Due] | None:
        """The earliest live deadline at or before ``now``, removed; None when nothing is due."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._is_live(entry):
                _, _, session, kind = entry
                del self._live[(session, kind)]
                return session, kind
        return None

    def _is_live(self, entry: tuple[float, int, InviteSession, Due]) -> bool:
        _, generation, session, kind = entry
        return self._live.get((session, kind)) == generation

    def _compact(self) -> None:
        self._heap = [entry for entry in self._heap if self._is_live(entry)]
        heapq.heapify(self._heap)
