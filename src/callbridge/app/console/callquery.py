"""``GET /api/calls`` query parameters, validated: every bad value is a :class:`QueryError` naming its field.

    limit, offset        paging (limit is capped at MAX_PAGE, as before; negative or non-integer: 422)
    number (alias q)     part of the caller or called number/URI, any case (at most MAX_TEXT characters)
    status, end_reason,  one of the words call/events.py defines
    direction
    since, until         creation time range: unix seconds or ISO 8601 (a time without zone is UTC)
    worker, sip_call_id  exact match (bounded lengths)

Query strings are attacker-controlled: each value is bounded in length before it is parsed, so a
megabyte of digits is refused before int() or a regex sees it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from ...call.events import CallStatus, Direction, EndReason
from ..store.search import CallFilter

DEFAULT_PAGE = 100
MAX_PAGE = 1000
MAX_OFFSET = 10_000_000
MAX_TEXT = 64  # a number or a URI fragment to search for
MAX_WORKER = 64  # calls.worker's column size
MAX_SIP_CALL_ID = 255  # calls.sip_call_id's column size
MAX_INTEGER_CHARS = 12
MAX_TIME_CHARS = 40  # "2024-06-10T12:34:56.123456+05:30" with room to spare
# Plausible creation times: 1970 to year ~2286 (beyond that float seconds lose sub-ms precision anyway).
MAX_UNIX_TIME = 1e10

STATUSES = frozenset(s.value for s in CallStatus)
END_REASONS = frozenset(r.value for r in EndReason)
DIRECTIONS = frozenset(d.value for d in Direction)


class QueryError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def to_json(self) -> dict[str, str]:
        return {"error": f"{self.field}: {self.reason}", "field": self.field, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class CallQuery:
    where: CallFilter
    limit: int = DEFAULT_PAGE
    offset: int = 0
    sip_call_id: str | None = None


def parse_call_query(params: Mapping[str, str]) -> CallQuery:
    """The query of ``GET /api/calls``; raises QueryError on the first bad parameter."""
    limit = _integer(params, "limit", DEFAULT_PAGE)
    offset = _integer(params, "offset", 0)
    if offset > MAX_OFFSET:
        raise QueryError("offset", f"at most {MAX_OFFSET}")
    number = _text(params, "number", MAX_TEXT)
    alias = _text(params, "q", MAX_TEXT)
    if number and alias and number != alias:
        raise QueryError("q", "give number or q, not two different values")
    since, until = _time(params, "since"), _time(params, "until")
    if since is not None and until is not None and until <= since:
        raise QueryError("until", "must be after since")
    where = CallFilter(number=number or alias, status=_word(params, "status", STATUSES),
                       end_reason=_word(params, "end_reason", END_REASONS),
                       direction=_word(params, "direction", DIRECTIONS),
                       worker=_text(params, "worker", MAX_WORKER), since=since, until=until)
    return CallQuery(where, limit=min(limit, MAX_PAGE), offset=offset,
                     sip_call_id=_text(params, "sip_call_id", MAX_SIP_CALL_ID))


def _raw(params: Mapping[str, str], field: str, max_chars: int) -> str | None:
    value = params.get(field)
    if value is None or value == "":
        return None  # an empty form field means "any"
    if len(value) > max_chars:
        raise QueryError(field, f"at most {max_chars} characters")
    return value


def _integer(params: Mapping[str, str], field: str, default: int) -> int:
    value = _raw(params, field, MAX_INTEGER_CHARS)
    if value is None:
        return default
    if not value.isascii() or not value.isdigit():  # "+1", "1e3", "-5", "²" are not page numbers
        raise QueryError(field, "must be a whole number, 0 or more")
    return int(value)


def _text(params: Mapping[str, str], field: str, max_chars: int) -> str | None:
    value = _raw(params, field, max_chars)
    if value is not None and not value.isprintable():
        raise QueryError(field, "must be printable text (no control characters)")
    return value.strip() or None if value is not None else None


def _word(params: Mapping[str, str], field: str, allowed: frozenset[str]) -> str | None:
    value = _raw(params, field, max(map(len, allowed)))
    if value is not None and value not in allowed:
        raise QueryError(field, f"must be one of {', '.join(sorted(allowed))}")
    return value


def _time(params: Mapping[str, str], field: str) -> float | None:
    value = _raw(params, field, MAX_TIME_CHARS)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise QueryError(field, "must be unix seconds or an ISO 8601 date/time") from None
        seconds = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_UNIX_TIME:
        raise QueryError(field, "out of range")
    return seconds


__all__ = ["CallQuery", "QueryError", "parse_call_query", "MAX_PAGE", "DEFAULT_PAGE"]
