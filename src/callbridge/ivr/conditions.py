"""Branch conditions: tests on variables, the caller, and the time of day.

String comparisons ignore case, because SIP headers and caller input arrive
in whatever case the far end chose ("ES", "es").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .template import render

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
VAR_OPERATORS = ("equals", "not_equals", "in", "not_in", "prefix", "exists")


@dataclass(frozen=True)
class VarTest:
    """``{var: NAME, <operator>: VALUE}``; values may be templates."""

    name: str
    operator: str
    value: str | tuple[str, ...] | bool

    def holds(self, variables: Mapping[str, str], now: datetime) -> bool:
        actual = str(variables.get(self.name) or "")
        if self.operator == "exists":
            return (actual != "") == self.value
        if isinstance(self.value, tuple):
            options = {render(item, variables).casefold() for item in self.value}
            return (actual.casefold() in options) == (self.operator == "in")
        expected = render(str(self.value), variables).casefold()
        if self.operator == "prefix":
            return actual.casefold().startswith(expected)
        return (actual.casefold() == expected) == (self.operator == "equals")

    def names(self) -> set[str]:
        return {self.name}


@dataclass(frozen=True)
class HoursTest:
    """True while ``now`` is within opening hours in ``timezone``.

    ``close`` before ``open`` means the hours run past midnight; the day
    that counts is the one the opening began on.
    """

    timezone: str
    days: frozenset[int]  # 0 = Monday
    open: time
    close: time

    def holds(self, variables: Mapping[str, str], now: datetime) -> bool:
        local = now.astimezone(ZoneInfo(self.timezone))
        moment = local.time().replace(tzinfo=None)
        if self.open < self.close:
            return local.weekday() in self.days and self.open <= moment < self.close
        if moment >= self.open:
            return local.weekday() in self.days
        return moment < self.close and (local.weekday() - 1) % 7 in self.days

    def names(self) -> set[str]:
        return set()


@dataclass(frozen=True)
class AllOf:
    """A list under ``if:``: every test must hold."""

    tests: tuple["Test", ...]

    def holds(self, variables: Mapping[str, str], now: datetime) -> bool:
        return all(test.holds(variables, now) for test in self.tests)

    def names(self) -> set[str]:
        return set().union(*(test.names() for test in self.tests))


Test = VarTest | HoursTest | AllOf


def parse_clock(text: object) -> time:
    """``"09:00"`` → time(9, 0); raises ValueError with an author-facing reason."""
    if isinstance(text, int) and not isinstance(text, bool):
        # YAML 1.1 reads an unquoted 17:30 as the base-60 number 1050.
        raise ValueError(f"put the time in quotes, e.g. \"17:30\" (YAML read it as the number {text})")
    if not isinstance(text, str) or len(text.split(":")) != 2:
        raise ValueError(f"time must be \"HH:MM\" in quotes, got {text!r}")
    hours, minutes = text.split(":")
    if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2 and len(hours) in (1, 2)):
        raise ValueError(f"time must be \"HH:MM\", got {text!r}")
    if int(hours) == 24 and int(minutes) == 0:
        return time.max  # "24:00": until the end of the day
    if int(hours) > 23 or int(minutes) > 59:
        raise ValueError(f"time {text!r} is not a time of day (00:00 to 24:00)")
    return time(int(hours), int(minutes))


def parse_days(spec: object) -> frozenset[int]:
    """``mon-fri``, ``mon,wed,fri``, ``fri-mon``, ``daily`` or a list of those."""
    items = spec if isinstance(spec, list) else [spec]
    days: set[int] = set()
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"days must be names like mon-fri, got {item!r}")
        for part in item.replace(" ", "").lower().split(","):
            if part in ("daily", "all", "everyday"):
                days.update(range(7))
                continue
            first, _, last = part.partition("-")
            for name in (first, last or first):
                if name not in DAY_NAMES:
                    raise ValueError(f"unknown day {name!r} in {item!r} (use {', '.join(DAY_NAMES)})")
            start, end = DAY_NAMES.index(first), DAY_NAMES.index(last or first)
            days.update((start + step) % 7 for step in range((end - start) % 7 + 1))
    return frozenset(days)


def check_timezone(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"timezone must be a name like Europe/Paris, got {name!r}")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r} (use an IANA name like Europe/Paris)") from None
    return name
