"""Per-source load shedding, sans-IO: token buckets, a new-dialog admission check, throttled logging.

Nothing here reads a clock: every call takes ``now`` (seconds, any monotonic
origin), so the unit tests drive it with a fake clock. Memory is bounded: at
most ``max_keys`` sources are tracked (least recently seen evicted first) and
sources idle for ``idle_expiry`` seconds are forgotten.

The new-dialog check runs on the raw bytes, before the parser: parsing a SIP
message costs ~50 times what the peek costs, and a flood must stay cheap.
"""

from __future__ import annotations

import enum
import re
from collections import OrderedDict

# Kamailio's pike module defaults to 30 requests per 2 s per source IP (sampling_time_unit 2,
# reqs_density_per_unit 30), counting every request. We count only those that create state (a
# call, a transaction outside a dialog): 10/s with a burst of 20 fills 1,000 calls in under two
# minutes, while a flood's calls that are answered and never ACKed (each held ~32 s, Timer H)
# stay near 340 at most. A carrier trunk bringing more from one IP raises server.new_requests_*.
NEW_REQUESTS_PER_SOURCE = 10.0
NEW_REQUESTS_BURST = 20.0
# Over the rate, the first few get 503 + Retry-After (RFC 3261 §21.5.4) so a real proxy backs
# off or fails over (RFC 3261 §16.7); the rest of the window is dropped unanswered, so a flood
# cannot make us a reflector. The window restarts once the source is back under the rate.
REJECTS_PER_WINDOW = 5
REJECT_WINDOW = 10.0
RETRY_AFTER_SECONDS = 5
# Bounds memory under spoofed-source UDP floods (one entry is ~200 bytes).
MAX_TRACKED_SOURCES = 10_000
# A source silent this long starts again with a full bucket; pike forgets after 120 s.
IDLE_EXPIRY = 120.0
# One summary line per source and reason per interval.
LOG_INTERVAL = 10.0

# A request line ("METHOD SP"); responses start with "SIP/2.0".
_METHOD = re.compile(rb"[\r\n]*([A-Za-z]+) ")
# A To header with a tag (full or compact form, RFC 3261 §7.3.3): the request is inside a dialog.
_TO_TAG = re.compile(rb"\n(?:to|t)[ \t]*:[^\r\n]*;[ \t]*tag[ \t]*=", re.IGNORECASE)
# Never rate-limited: ACK has no response (RFC 3261 §17), CANCEL only ends what already exists.
_EXEMPT = frozenset({b"ACK", b"CANCEL"})


def new_dialog_method(data: bytes) -> bytes | None:
    """The method of a request that would create new state (no To tag), from the raw bytes; else None.

    Responses, ACK, CANCEL and in-dialog requests give None: they belong to
    calls that were already admitted.
    """
    match = _METHOD.match(data)
    if match is None:
        return None
    method = match.group(1).upper()
    if method == b"SIP" or method in _EXEMPT or has_to_tag(data):
        return None
    return method


def has_to_tag(data: bytes) -> bool:
    """Whether a raw message's To header carries a tag: it belongs to a dialog (RFC 3261 §12)."""
    return _TO_TAG.search(data) is not None


class TokenBuckets:
    """Per-key token bucket (``rate`` per second, up to ``burst``), bounded and expiring."""

    def __init__(self, rate: float, burst: float, max_keys: int = MAX_TRACKED_SOURCES,
                 idle_expiry: float = IDLE_EXPIRY) -> None:
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._idle_expiry = idle_expiry
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, last seen]

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str, now: float) -> bool:
        self._expire(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = [self._burst, now]
        else:
            self._buckets.move_to_end(key)
            bucket[0] = min(self._burst, bucket[0] + max(0.0, now - bucket[1]) * self._rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        return False

    def _expire(self, now: float) -> None:
        # Oldest first (LRU order), so this stops at the first recent one: O(1) amortised.
        while self._buckets:
            key, bucket = next(iter(self._buckets.items()))
            if now - bucket[1] < self._idle_expiry:
                break
            del self._buckets[key]


class Verdict(enum.Enum):
    ADMIT = "admit"
    REJECT = "reject"  # answer 503 with Retry-After
    DROP = "drop"  # say nothing


class NewDialogLimiter:
    """Admission of dialog-creating requests per source: admit, 503 a few, then drop. Counts each."""

    def __init__(self, rate: float = NEW_REQUESTS_PER_SOURCE, burst: float = NEW_REQUESTS_BURST, *,
                 rejects_per_window: int = REJECTS_PER_WINDOW, reject_window: float = REJECT_WINDOW,
                 max_keys: int = MAX_TRACKED_SOURCES, idle_expiry: float = IDLE_EXPIRY) -> None:
        self._buckets = TokenBuckets(rate, burst, max_keys, idle_expiry)
        self._rejects_per_window = rejects_per_window
        self._reject_window = reject_window
        self._max_keys = max_keys
        self._rejects: OrderedDict[str, list[float]] = OrderedDict()  # key -> [window start, rejects in it]
        self.admitted = self.rejected = self.dropped = 0

    def check(self, key: str, now: float) -> Verdict:
        if self._buckets.allow(key, now):
            self.admitted += 1
            return Verdict.ADMIT
        entry = self._rejects.get(key)
        if entry is None or now - entry[0] >= self._reject_window:
            if entry is None and len(self._rejects) >= self._max_keys:
                self._rejects.popitem(last=False)
            entry = self._rejects[key] = [now, 0]
        self._rejects.move_to_end(key)
        if entry[1] < self._rejects_per_window:
            entry[1] += 1
            self.rejected += 1
            return Verdict.REJECT
        self.dropped += 1
        return Verdict.DROP

    @property
    def tracked(self) -> int:
        return len(self._buckets)


class LogThrottle:
    """Say at most one thing per key per interval; count the rest for the next summary."""

    def __init__(self, interval: float = LOG_INTERVAL, max_keys: int = MAX_TRACKED_SOURCES) -> None:
        self._interval = interval
        self._max_keys = max_keys
        self._entries: OrderedDict[object, list[float]] = OrderedDict()  # key -> [last logged, suppressed]

    def check(self, key: object, now: float) -> int | None:
        """How many were suppressed since the last line (log now), or None (stay quiet)."""
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self._max_keys:
                self._entries.popitem(last=False)
            self._entries[key] = [now, 0]
            return 0
        self._entries.move_to_end(key)
        if now - entry[0] >= self._interval:
            suppressed = int(entry[1])
            entry[0], entry[1] = now, 0
            return suppressed
        entry[1] += 1
        return None
