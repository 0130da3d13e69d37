"""Who may be dialled out, and how often: the toll-fraud guard every outbound call passes.

Sans-IO: rules in, decisions out, ``now`` passed in. Every way of dialling out
(POST /api/calls, dispatch, flow bridges, agent transfers, an inbound REFER)
reaches :meth:`CallManager.dial`, which asks :meth:`DialPolicy.admit` first.

A number dialled through an outbound trunk must
- match the trunk's ``allow`` patterns when it has any;
- not be premium rate (:data:`PREMIUM_PREFIXES`) or international (outside the
  trunk's home country code) unless a pattern *names* it: the pattern's literal
  prefix (before any wildcard) covers the premium prefix / the foreign country
  code, so ``+1*`` does not open +1900 and ``*`` opens no foreign country;
- fit the trunk's caps: calls up at once, calls started per minute and per day.

The pattern rules (:meth:`DialPolicy.verdict`) are judged here, locally. The caps are counted by a
:class:`DialLedger`: :class:`LocalLedger` (this process alone, sans-IO, the default) or, in a cluster,
app/cluster/dial_ledger.py's RedisDialLedger, which counts every worker's dials in one place so the
caps hold for the cluster rather than once per worker.

A SIP URI with no trunk is dialled only when ``allow_uris`` lists it, and a URI
whose host and port are a trunk's is judged as a number through that trunk
(no way round a trunk's rules by spelling its address).

Patterns are shell-style globs (``fnmatch``): ``+1555*``, ``sip:*@pbx.example``.
One starting with ``+`` or a digit is a number pattern, matched against the
normalised E.164 form; anything else is matched against the URI without parameters.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import NamedTuple, Protocol

MINUTE_S = 60.0
DAY_S = 86400.0  # a sliding 24 h window: no midnight burst, no time zone to configure

# Well-known premium-rate and revenue-share prefixes (E.164). Denied unless an allow
# pattern names them explicitly. Not exhaustive: an allow list of destinations is the
# strong defence; this list stops the classic fraud targets when none is configured.
PREMIUM_PREFIXES: dict[str, str] = {
    "+1900": "NANP 900 premium services",
    "+1976": "NANP 976 premium (legacy pay-per-call)",
    "+4490": "UK 090x premium rate",
    "+4491": "UK 091x premium rate",
    "+4498": "UK 098x sexual entertainment services",
    "+4487": "UK 087x revenue-share non-geographic",
    "+49900": "Germany 0900 premium rate",
    "+49137": "Germany 0137 televoting (mass-call, revenue share)",
    "+33897": "France 0897 premium (Audiotel)",
    "+33899": "France 0899 premium (Audiotel)",
    "+34803": "Spain 803 adult premium",
    "+34806": "Spain 806 entertainment premium",
    "+34807": "Spain 807 professional premium",
    "+34905": "Spain 905 televoting",
    "+39899": "Italy 899 premium",
    "+39892": "Italy 892 premium",
    "+61190": "Australia 190x premium",
    "+64900": "New Zealand 0900 premium",
    "+881": "Global Mobile Satellite System (Iridium, Globalstar...): classic fraud target",
    "+882": "International Networks shared code: classic fraud target",
    "+883": "International Networks shared code",
    "+870": "Inmarsat SNAC satellite",
}

# Reasons a dial is refused (also the metric's label values).
DENY_PREMIUM = "premium"
DENY_INTERNATIONAL = "international"
DENY_NOT_ALLOWED = "not_allowed"  # no allow pattern matches
DENY_URI = "uri_not_allowed"  # a bare SIP URI outside allow_uris
DENY_CONCURRENT = "concurrent_cap"
DENY_RATE = "rate_cap"
DENY_DAILY = "daily_cap"
DENY_GLOBAL_DAILY = "global_daily_cap"
DENY_UNAVAILABLE = "policy_unavailable"  # the shared ledger cannot be asked: refused, never let through
CAP_REASONS = frozenset({DENY_CONCURRENT, DENY_RATE, DENY_DAILY, DENY_GLOBAL_DAILY})


class DialDenied(PermissionError):
    """A dial the policy refuses. A PermissionError is an OSError, so every dialer that
    already treats "could not dial" (no RTP port, bad address) fails safe on it too."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{detail} ({reason})")
        self.reason = reason
        self.detail = detail


class DialPolicyUnavailable(DialDenied):
    """The caps could not be counted (the cluster's ledger is unreachable): the dial is refused.
    Unlike the other refusals this one is temporary, so an API answers it as 503, not 403."""


@dataclass(frozen=True)
class TrunkRules:
    name: str
    host: str = ""
    port: int = 5060
    allow: tuple[str, ...] = ()  # empty: any number of the home country that is not premium
    home_country: str = "+1"
    max_concurrent: int | None = None
    max_per_minute: int | None = None
    max_per_day: int | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # "ok" or one of the DENY_* values
    detail: str = ""
    trunk: str | None = None
    ticket: int | None = None  # hand back to release() when the call ends
    cap_reached: str | None = None  # set on the admission that fills a daily cap: "trunk:<name>" or "global"


@dataclass(frozen=True)
class Caps:
    """What a ledger counts a dial against: its trunk's caps and the global daily cap (None: no cap)."""

    max_concurrent: int | None = None
    max_per_minute: int | None = None
    max_per_day: int | None = None
    global_max_per_day: int | None = None

    @classmethod
    def of(cls, rules: TrunkRules | None, global_max_per_day: int | None) -> Caps:
        if rules is None:  # a dial with no trunk counts against the global cap only
            return cls(global_max_per_day=global_max_per_day)
        return cls(rules.max_concurrent, rules.max_per_minute, rules.max_per_day, global_max_per_day)

    @property
    def capped(self) -> bool:
        return any(c is not None for c in (self.max_concurrent, self.max_per_minute, self.max_per_day,
                                            self.global_max_per_day))


class Admission(NamedTuple):
    """A ledger's answer: counted (``ok``, with a ``ticket`` to release) or refused by a cap."""

    ok: bool
    reason: str  # "ok", a cap's DENY_* value, or DENY_UNAVAILABLE
    detail: str = ""
    ticket: int | None = None
    cap_reached: str | None = None  # this admission filled a daily cap: "trunk:<name>" or "global"


class DialLedger(Protocol):
    """Counts admitted dials against the caps. ``admit`` decides and counts in one step (atomic for a
    shared ledger, so two workers never both take the last slot); ``release`` gives a ticket's
    concurrent slot back when the call ends (twice, or an unknown ticket, is harmless)."""

    async def admit(self, trunk: str | None, caps: Caps, now: float) -> Admission: ...

    def release(self, ticket: int | None) -> None: ...

    def daily_cap_reached(self, rules: list[TrunkRules], global_max_per_day: int | None,
                          now: float) -> dict[str, bool]: ...

    def active(self, trunk: str) -> int: ...


def cap_detail(reason: str, trunk: str | None, count: int, caps: Caps) -> str:
    """The words for a cap refusal: the same from every ledger."""
    if reason == DENY_CONCURRENT:
        return f"trunk {trunk} has {count} calls up (max {caps.max_concurrent})"
    if reason == DENY_RATE:
        return f"trunk {trunk} started {count} calls this minute (max {caps.max_per_minute})"
    if reason == DENY_DAILY:
        return f"trunk {trunk} reached its daily cap of {caps.max_per_day} calls"
    return f"the daily cap of {caps.global_max_per_day} outbound calls is reached"


def normalise(number: str, home_country: str) -> str | None:
    """E.164 (``+CC...``) from what a dialler wrote; None for a user part that is not a number."""
    text = number.strip()
    if text.startswith("+"):
        digits = "".join(c for c in text[1:] if c not in " -.()")
        return "+" + digits if digits.isdigit() else None
    digits = "".join(c for c in text if c not in " -.()")
    if not digits.isdigit():
        return None
    if digits.startswith("00"):  # the ITU international prefix
        return "+" + digits[2:]
    if home_country == "+1":
        if digits.startswith("011"):  # NANP international prefix
            return "+" + digits[3:]
        if len(digits) == 11 and digits.startswith("1"):
            return "+" + digits
    # A national number: the home country code, without a national trunk prefix "0".
    return home_country + digits.lstrip("0")


def literal_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard: what the pattern names for sure."""
    for index, char in enumerate(pattern):
        if char in "*?[":
            return pattern[:index]
    return pattern


def is_number_pattern(pattern: str) -> bool:
    return pattern[:1] == "+" or pattern[:1].isdigit()


def premium_prefix(e164: str) -> str | None:
    return next((p for p in sorted(PREMIUM_PREFIXES, key=len, reverse=True) if e164.startswith(p)), None)


def number_verdict(e164: str, uri_text: str, rules: TrunkRules) -> tuple[str, str]:
    """("ok", "") or (DENY_*, detail) for a number through ``rules``' trunk, caps aside."""
    numbers = [p for p in rules.allow if is_number_pattern(p)]
    matching = [p for p in numbers if fnmatchcase(e164, p)]
    matching += [p for p in rules.allow if not is_number_pattern(p) and fnmatchcase(uri_text, p)]
    if rules.allow and not matching:
        return DENY_NOT_ALLOWED, f"{e164} is not in trunk {rules.name}'s allowed destinations"
    named = [literal_prefix(p) for p in matching if is_number_pattern(p)]
    premium = premium_prefix(e164)
    if premium is not None and not any(prefix.startswith(premium) for prefix in named):
        return DENY_PREMIUM, f"{e164} is premium rate ({PREMIUM_PREFIXES[premium]})"
    if not e164.startswith(rules.home_country):
        # Named only by a pattern whose literal part goes past "+" into a foreign country code.
        if not any(len(prefix) > 1 and prefix.startswith("+") and not prefix.startswith(rules.home_country)
                   and e164.startswith(prefix[:2]) for prefix in named):
            return DENY_INTERNATIONAL, f"{e164} is international (trunk {rules.name}'s home is {rules.home_country})"
    return "ok", ""


@dataclass
class _Usage:
    active: set[int] = field(default_factory=set)
    minute: deque[float] = field(default_factory=deque)
    day: deque[float] = field(default_factory=deque)


class LocalLedger:
    """The caps counted in this process alone (sans-IO, ``now`` passed in): a single callbridge."""

    def __init__(self) -> None:
        self._usage: dict[str, _Usage] = {}
        self._global_day: deque[float] = deque()
        self._tickets: dict[int, str] = {}
        self._next_ticket = 0

    async def admit(self, trunk: str | None, caps: Caps, now: float) -> Admission:
        return self.take(trunk, caps, now)

    def take(self, trunk: str | None, caps: Caps, now: float) -> Admission:
        """:meth:`admit`, synchronously."""
        if trunk is not None:
            refused = self._trunk_caps(trunk, caps, now)
            if refused is not None:
                return refused
        _expire(self._global_day, now - DAY_S)
        if caps.global_max_per_day is not None and len(self._global_day) >= caps.global_max_per_day:
            return Admission(False, DENY_GLOBAL_DAILY, cap_detail(DENY_GLOBAL_DAILY, trunk, 0, caps))
        ticket = self._next_ticket = self._next_ticket + 1
        cap_reached = None
        self._global_day.append(now)
        if caps.global_max_per_day is not None and len(self._global_day) >= caps.global_max_per_day:
            cap_reached = "global"
        if trunk is not None:
            usage = self._usage.setdefault(trunk, _Usage())
            usage.active.add(ticket)
            usage.minute.append(now)
            usage.day.append(now)
            self._tickets[ticket] = trunk
            if caps.max_per_day is not None and len(usage.day) >= caps.max_per_day:
                cap_reached = f"trunk:{trunk}"
        return Admission(True, "ok", "", ticket, cap_reached)

    def release(self, ticket: int | None) -> None:
        name = self._tickets.pop(ticket, None) if ticket is not None else None
        if name is not None and ticket is not None and name in self._usage:
            self._usage[name].active.discard(ticket)

    def _trunk_caps(self, trunk: str, caps: Caps, now: float) -> Admission | None:
        usage = self._usage.setdefault(trunk, _Usage())
        _expire(usage.minute, now - MINUTE_S)
        _expire(usage.day, now - DAY_S)
        for reason, count, cap in ((DENY_CONCURRENT, len(usage.active), caps.max_concurrent),
                                   (DENY_RATE, len(usage.minute), caps.max_per_minute),
                                   (DENY_DAILY, len(usage.day), caps.max_per_day)):
            if cap is not None and count >= cap:
                return Admission(False, reason, cap_detail(reason, trunk, count, caps))
        return None

    def daily_cap_reached(self, rules: list[TrunkRules], global_max_per_day: int | None,
                          now: float) -> dict[str, bool]:
        _expire(self._global_day, now - DAY_S)
        full = {"global": global_max_per_day is not None and len(self._global_day) >= global_max_per_day}
        for trunk in rules:
            if trunk.max_per_day is None:
                continue
            usage = self._usage.get(trunk.name)
            if usage is not None:
                _expire(usage.day, now - DAY_S)
            full[trunk.name] = usage is not None and len(usage.day) >= trunk.max_per_day
        return full

    def active(self, trunk: str) -> int:
        usage = self._usage.get(trunk)
        return len(usage.active) if usage else 0


class DialPolicy:
    """Decides each dial: the pattern rules here, the caps by :attr:`ledger`; ``release`` when the call ends.

    ``ledger`` is a :class:`LocalLedger` unless one is given (a cluster's shared one: see
    app/dial_rules.py use_cluster_ledger). Swap it only before dials are placed: a ticket is
    released to the ledger that is current at the time.
    """

    def __init__(self, *, allow_uris: tuple[str, ...] = (), max_per_day: int | None = None,
                 ledger: DialLedger | None = None) -> None:
        self.allow_uris = tuple(allow_uris)
        self.max_per_day = max_per_day
        self.local = LocalLedger()
        self.ledger: DialLedger = ledger if ledger is not None else self.local
        self.denied: dict[str, int] = {}  # reason -> count, for /metrics

    # -- deciding ---------------------------------------------------------------------------

    def verdict(self, target: str, user: str | None, rules: TrunkRules | None) -> tuple[str, str]:
        """Pattern rules only (no caps, nothing counted): for a REFER's pre-check, say."""
        if rules is None:
            if any(fnmatchcase(target, p) for p in self.allow_uris):
                return "ok", ""
            return DENY_URI, f"{target} is not in outbound.allow_uris and no trunk serves it"
        e164 = normalise(user or "", rules.home_country) if user else None
        if e164 is None:
            # A name, not a number (sip:sales@carrier): only an explicit URI pattern opens it.
            if any(not is_number_pattern(p) and fnmatchcase(target, p) for p in rules.allow):
                return "ok", ""
            return DENY_NOT_ALLOWED, f"{target} is not a number, and trunk {rules.name} does not list it"
        return number_verdict(e164, target, rules)

    async def decide(self, target: str, user: str | None, rules: TrunkRules | None, now: float) -> Decision:
        """Decide a dial: the patterns, then the caps through the ledger. An allowed dial is counted
        until ``release(ticket)``; a ledger that cannot count refuses (DENY_UNAVAILABLE)."""
        name = rules.name if rules else None
        reason, detail = self.verdict(target, user, rules)
        if reason != "ok":  # refused by a pattern: the ledger is not asked, nothing is counted
            return self._refused(reason, detail, name)
        return self._decided(name, await self.ledger.admit(name, Caps.of(rules, self.max_per_day), now))

    def admit(self, target: str, user: str | None, rules: TrunkRules | None, now: float) -> Decision:
        """:meth:`decide` synchronously, with the local ledger (a single process; the unit tests)."""
        if self.ledger is not self.local:
            raise RuntimeError("a shared dial ledger is asked through 'await DialPolicy.decide(...)'")
        name = rules.name if rules else None
        reason, detail = self.verdict(target, user, rules)
        if reason != "ok":
            return self._refused(reason, detail, name)
        return self._decided(name, self.local.take(name, Caps.of(rules, self.max_per_day), now))

    def release(self, ticket: int | None) -> None:
        self.ledger.release(ticket)

    def _decided(self, trunk: str | None, admission: Admission) -> Decision:
        if not admission.ok:
            return self._refused(admission.reason, admission.detail, trunk)
        return Decision(True, "ok", "", trunk, admission.ticket, admission.cap_reached)

    def _refused(self, reason: str, detail: str, trunk: str | None) -> Decision:
        self.denied[reason] = self.denied.get(reason, 0) + 1
        return Decision(False, reason, detail, trunk)

    # -- reading ------------------------------------------------------------------------------

    def daily_cap_reached(self, rules: list[TrunkRules], now: float) -> dict[str, bool]:
        """Per trunk (and "global"): whether its daily cap is full now (for a gauge)."""
        return self.ledger.daily_cap_reached(rules, self.max_per_day, now)

    def active(self, trunk: str) -> int:
        """Calls up through ``trunk`` that this process admitted."""
        return self.ledger.active(trunk)


def transfer_allowed(target: str, user: str | None, patterns: tuple[str, ...] | list[str],
                     home_country: str = "+1") -> bool:
    """Whether an inbound REFER's target is one of ``patterns`` (numbers or URI globs)."""
    e164 = normalise(user, home_country) if user else None
    for pattern in patterns:
        if is_number_pattern(pattern):
            if e164 is not None and fnmatchcase(e164, pattern):
                return True
        elif fnmatchcase(target, pattern):
            return True
    return False


def _expire(times: deque[float], cutoff: float) -> None:
    while times and times[0] <= cutoff:
        times.popleft()
