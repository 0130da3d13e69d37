"""Which calls a history search keeps (:class:`CallFilter`), as SQL for the store and as a test for live calls.

The console's history page and ``GET /api/calls`` filter by number, status, end reason, direction, worker
and a creation-time range; the same filter must say the same thing about a call still in memory and one
read from the database, so both forms live here, side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .schema import calls


@dataclass(frozen=True, slots=True)
class CallFilter:
    number: str | None = None  # a substring of the caller or the called number/URI, any case
    status: str | None = None
    end_reason: str | None = None
    direction: str | None = None
    worker: str | None = None
    since: float | None = None  # created at or after (unix seconds)
    until: float | None = None  # created before (unix seconds)

    def conditions(self) -> list[sa.ColumnElement[bool]]:
        """SQL conditions on ``calls`` (ANDed); values are bound parameters, never spliced into SQL."""
        where: list[sa.ColumnElement[bool]] = []
        if self.number:
            # autoescape: a caller's "%" or "_" is a character, not a wildcard.
            needle = self.number.lower()
            where.append(sa.or_(sa.func.lower(calls.c.caller).contains(needle, autoescape=True),
                                sa.func.lower(calls.c.called).contains(needle, autoescape=True)))
        for column, value in ((calls.c.status, self.status), (calls.c.end_reason, self.end_reason),
                              (calls.c.direction, self.direction), (calls.c.worker, self.worker)):
            if value is not None:
                where.append(column == value)
        if self.since is not None:
            where.append(calls.c.created_at >= self.since)
        if self.until is not None:
            where.append(calls.c.created_at < self.until)
        return where

    def matches(self, record: dict[str, Any]) -> bool:
        """The same test on a record (``Call.to_record()``) held in memory."""
        if self.number:
            needle = self.number.lower()
            if not any(needle in str(record.get(key) or "").lower() for key in ("caller", "called")):
                return False
        for key in ("status", "end_reason", "direction", "worker"):
            wanted = getattr(self, key)
            if wanted is not None and record.get(key) != wanted:
                return False
        created = record.get("created_at") or 0.0
        if self.since is not None and created < self.since:
            return False
        return self.until is None or created < self.until


__all__ = ["CallFilter"]
