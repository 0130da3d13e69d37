"""Which worker places a new outbound call (POST /api/dispatch, POST /api/calls): sans-IO.

The one with the most spare capacity (server.max_calls minus its live calls) that is alive and not
draining; on a tie the worker asked keeps it (no hop), then the lowest id (the same answer on every
worker). None when no worker has room: the API answers 503 with Retry-After.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Candidate:
    id: str
    active_calls: int
    capacity: int
    draining: bool
    alive: bool

    @property
    def spare(self) -> int:
        return self.capacity - self.active_calls


def choose(candidates: Iterable[Candidate], self_id: str) -> Candidate | None:
    ranked = rank(candidates, self_id)
    return ranked[0] if ranked else None


def rank(candidates: Iterable[Candidate], self_id: str) -> list[Candidate]:
    """Every worker with room, best first: where to try, and where next if the first cannot be reached."""
    eligible = [c for c in candidates if c.alive and not c.draining and c.spare > 0]
    return sorted(eligible, key=lambda c: (-c.spare, c.id != self_id, c.id))
