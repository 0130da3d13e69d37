"""Throttles online password guessing: back-off, then ban, per source and per username. Sans-IO.

Digest (RFC 7616 §5.13) leaves online guessing to the server: every wrong
answer we check is one guess the attacker got for free. This table counts
failed digest answers per source address and per username and tells the UA
core what to do with the next request:

- ``VERIFY``: check the credentials as usual;
- ``REFUSE``: backing off; answer 403 *without* checking, so even the right
  password gets 403 and the attempt tells the guesser nothing;
- ``DROP``: the source is banned; send nothing at all (no amplification, and
  a scanner sees a dead host).

After ``failures_before_backoff`` failures a key backs off (1 s, doubling per
failure, capped); after ``failures_before_ban`` it is banned for
``ban_seconds``, doubled for each repeat offence while the key is remembered.
Refused attempts count as failures: a guesser that ignores the back-off
reaches the ban within ``failures_before_ban`` answers. A successful login
clears the source's and the username's records and remembers the pair, so a
username under attack from elsewhere does not lock out a device that has
logged in before from its own address.

Memory is bounded: at most ``max_tracked`` records (expired ones are dropped
first, active bans last), and the remembered good pairs likewise.
Time is whatever clock the caller passes as ``now`` (the UA uses the loop's).

In a cluster (app/cluster/bans.py) failures stay counted per worker; bans are
shared: ``on_ban``/``on_lift`` tell the sharer what this table decided, and
:meth:`AuthGuard.impose` / ``lift(..., announce=False)`` apply what another
worker decided without telling anyone again (no echo).
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("callbridge.sip.guard")

DEFAULT_FAILURES_BEFORE_BACKOFF = 3
DEFAULT_FAILURES_BEFORE_BAN = 10
DEFAULT_FAILURE_WINDOW = 600.0  # failures are forgotten this long after the last one
DEFAULT_BACKOFF_SECONDS = 1.0  # the first back-off; doubles per further failure
MAX_BACKOFF_SECONDS = 60.0
DEFAULT_BAN_SECONDS = 600.0
DEFAULT_MAX_BAN_SECONDS = 86400.0  # repeat offences double the ban up to a day
DEFAULT_MAX_TRACKED = 10_000
PRUNE_FRACTION = 10  # over capacity, free this fraction (1/10) of the table at once
# How long a (source, username) pair that logged in stays exempt from that username's lockout.
GOOD_PAIR_SECONDS = 86400.0
# An IPv6 host holds a whole /64 (RFC 4291 §2.5.4 interface IDs): count it as one source.
IPV6_SOURCE_PREFIX = 64

SOURCE, USERNAME = "source", "username"


class Verdict(enum.Enum):
    VERIFY = "verify"
    REFUSE = "refuse"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    failures_before_backoff: int = DEFAULT_FAILURES_BEFORE_BACKOFF
    failures_before_ban: int = DEFAULT_FAILURES_BEFORE_BAN
    failure_window: float = DEFAULT_FAILURE_WINDOW
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS
    ban_seconds: float = DEFAULT_BAN_SECONDS
    max_ban_seconds: float = DEFAULT_MAX_BAN_SECONDS
    max_tracked: int = DEFAULT_MAX_TRACKED

    def __post_init__(self) -> None:
        if not 1 <= self.failures_before_backoff <= self.failures_before_ban:
            raise ValueError("need 1 <= failures_before_backoff <= failures_before_ban")
        if self.failure_window <= 0 or self.ban_seconds <= 0 or self.max_tracked < 1 or self.backoff_seconds < 0:
            raise ValueError("window, ban and capacity must be positive")


@dataclass(slots=True)
class _Record:
    failures: int = 0
    last_failure: float = 0.0
    retry_at: float = 0.0  # backing off until then
    banned_until: float = 0.0
    offences: int = 0  # bans so far, for the doubling

    def banned(self, now: float) -> bool:
        return now < self.banned_until

    def forgettable(self, now: float, window: float) -> bool:
        return now >= max(self.banned_until, self.last_failure + window)


@dataclass(frozen=True, slots=True)
class Ban:
    kind: str  # "source" or "username"
    key: str
    until: float  # in the caller's clock
    failures: int
    offences: int


@functools.lru_cache(maxsize=4096)
def source_key(host: str) -> str:
    """The address a source is counted under: the host, or its /64 for IPv6."""
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])  # no brackets, no zone id
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{IPV6_SOURCE_PREFIX}", strict=False))
    return str(address)


class AuthGuard:
    """The failure and ban table; every method takes ``now`` and none blocks."""

    def __init__(self, policy: GuardPolicy | None = None) -> None:
        self.policy = policy or GuardPolicy()
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()
        self._good_pairs: OrderedDict[tuple[str, str], float] = OrderedDict()
        # Totals for /metrics.
        self.failures_total = 0
        self.refused_total = 0
        self.dropped_total = 0
        self.bans_total = 0
        # Told of every ban this table starts and every lift asked of it; must not block or raise.
        self.on_ban: Callable[[Ban], None] | None = None
        self.on_lift: Callable[[str, str], None] | None = None

    # -- questions -------------------------------------------------------------

    def source_banned(self, host: str, now: float) -> bool:
        """Cheap enough to ask for every datagram."""
        if not self._records:
            return False
        record = self._records.get((SOURCE, source_key(host)))
        return record is not None and record.banned(now)

    def check(self, host: str, username: str | None, now: float) -> Verdict:
        """What to do with credentials from ``host`` for ``username`` (None if unreadable)."""
        source = self._live((SOURCE, source_key(host)), now)
        if source is not None and source.banned(now):
            return Verdict.DROP
        if source is not None and now < source.retry_at:
            return Verdict.REFUSE
        if username is not None and not self._good_pair(host, username, now):
            user = self._live((USERNAME, username), now)
            if user is not None and (user.banned(now) or now < user.retry_at):
                return Verdict.REFUSE
        return Verdict.VERIFY

    def bans(self, now: float) -> list[Ban]:
        """Every ban in force, soonest to end first."""
        found = [Ban(kind, key, r.banned_until, r.failures, r.offences)
                 for (kind, key), r in self._records.items() if r.banned(now)]
        return sorted(found, key=lambda ban: ban.until)

    def banned_count(self, kind: str, now: float) -> int:
        return sum(1 for (k, _), r in self._records.items() if k == kind and r.banned(now))

    @property
    def tracked(self) -> int:
        return len(self._records)

    # -- outcomes --------------------------------------------------------------

    def record_failure(self, host: str, username: str | None, now: float, *, refused: bool = False) -> list[Ban]:
        """A failed (or, with ``refused``, an unchecked) attempt; returns the bans it started."""
        self.failures_total += 1
        if refused:
            self.refused_total += 1
        keys = [(SOURCE, source_key(host))]
        if username is not None and not self._good_pair(host, username, now):
            keys.append((USERNAME, username))
        started = []
        for key in keys:
            ban = self._fail(key, now)
            if ban is not None:
                started.append(ban)
        return started

    def record_success(self, host: str, username: str | None, now: float) -> None:
        self._records.pop((SOURCE, source_key(host)), None)
        if username is None:
            return
        self._records.pop((USERNAME, username), None)
        pair = (source_key(host), username)
        self._good_pairs[pair] = now + GOOD_PAIR_SECONDS
        self._good_pairs.move_to_end(pair)
        while len(self._good_pairs) > self.policy.max_tracked:
            self._good_pairs.popitem(last=False)

    def record_dropped(self) -> None:
        self.dropped_total += 1

    def lift(self, kind: str, key: str, *, announce: bool = True) -> bool:
        """End a ban (and forget its failures) by hand; False if there was none.

        ``announce`` tells ``on_ban``'s counterpart ``on_lift`` (an operator's lift); a lift
        another worker made is applied with ``announce=False``.
        """
        found = self._records.pop((kind, source_key(key) if kind == SOURCE else key), None) is not None
        if found and announce and self.on_lift is not None:
            self.on_lift(kind, source_key(key) if kind == SOURCE else key)
        return found

    def impose(self, kind: str, key: str, until: float, now: float, *, offences: int = 1) -> Ban | None:
        """Apply a ban decided elsewhere (another worker) until ``until``; never reported to ``on_ban``.

        ``until`` is capped at the longest ban the policy allows. A ban already running
        longer is kept. Returns the ban now in force, or None when nothing changed.
        """
        if kind not in (SOURCE, USERNAME):
            raise ValueError(f"kind must be {SOURCE} or {USERNAME}")
        policy = self.policy
        until = min(until, now + max(policy.max_ban_seconds, policy.ban_seconds))
        if until <= now:
            return None
        record_key = (kind, source_key(key) if kind == SOURCE else key)
        record = self._records.get(record_key)
        if record is not None and record.banned_until >= until:
            return None
        if record is None:
            record = self._records[record_key] = _Record()
            self._make_room(now)
        self._records.move_to_end(record_key)
        record.banned_until = until
        record.failures = 0
        record.retry_at = 0.0
        record.offences = max(record.offences, offences)  # repeat offences double the next ban on any worker
        return Ban(kind, record_key[1], until, 0, record.offences)

    # -- internals -------------------------------------------------------------

    def _good_pair(self, host: str, username: str, now: float) -> bool:
        until = self._good_pairs.get((source_key(host), username))
        return until is not None and now < until

    def _live(self, key: tuple[str, str], now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and record.forgettable(now, self.policy.failure_window):
            del self._records[key]
            return None
        return record

    def _fail(self, key: tuple[str, str], now: float) -> Ban | None:
        policy = self.policy
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = _Record()
            self._make_room(now)
        elif now - record.last_failure > policy.failure_window:
            record.failures = 0  # a fresh window; earlier offences still double the next ban
        self._records.move_to_end(key)
        record.last_failure = now
        if record.banned(now):
            return None  # already serving its sentence; the slate after it is clean
        record.failures += 1
        if record.failures >= policy.failures_before_ban:
            record.offences += 1
            longest = max(policy.max_ban_seconds, policy.ban_seconds)
            length = min(policy.ban_seconds * 2 ** (record.offences - 1), longest)
            record.banned_until = now + length
            record.failures = 0  # after the ban, a clean slate for back-off, not an instant re-ban
            record.retry_at = 0.0
            self.bans_total += 1
            ban = Ban(key[0], key[1], record.banned_until, policy.failures_before_ban, record.offences)
            log.warning("banned %s %s for %.0f s after %d failed logins", key[0], key[1], length,
                        policy.failures_before_ban)
            if self.on_ban is not None:
                self.on_ban(ban)
            return ban
        if record.failures >= policy.failures_before_backoff:
            steps = record.failures - policy.failures_before_backoff
            delay = min(policy.backoff_seconds * 2 ** min(steps, 32), MAX_BACKOFF_SECONDS)
            record.retry_at = now + delay
            if steps == 0:
                log.warning("backing off %s %s after %d failed logins", key[0], key[1], record.failures)
        return None

    def _make_room(self, now: float) -> None:
        """Over capacity: forget expired records, then the oldest unbanned, then the oldest bans.

        It frees a tenth of the table at once, so the scan runs once per that many
        new keys (a flood of fresh sources costs O(1) each, amortised), and a flood
        cannot push a ban out while unbanned records remain.
        """
        cap = self.policy.max_tracked
        if len(self._records) <= cap:
            return
        target = cap - max(1, cap // PRUNE_FRACTION)
        window = self.policy.failure_window
        expired = [k for k, r in self._records.items() if r.forgettable(now, window)]
        unbanned = [k for k, r in self._records.items() if not r.banned(now) and not r.forgettable(now, window)]
        for key in expired + unbanned:
            if len(self._records) <= target:
                return
            del self._records[key]
        while len(self._records) > target:
            self._records.popitem(last=False)
