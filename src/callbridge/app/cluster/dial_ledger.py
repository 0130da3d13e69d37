"""The outbound caps counted once for the whole cluster: the toll-fraud guard's shared ledger in Redis.

Each worker judges a dial's destination itself (call/dial_policy.py, the pattern rules); the caps
(a trunk's ``max_concurrent``, ``max_per_minute``, ``max_per_day`` and ``outbound.max_per_day``) are
counted here, so N workers admit what one would, not N times as much. One Lua script per admission
prunes, counts, decides and records atomically: two workers never both take the last slot.

    callbridge:dial:global:day         ZSET  admission -> start time: the sliding 24 h, all trunks
    callbridge:dial:trunk:{name}:day   ZSET  admission -> start time: the trunk's sliding 24 h
    callbridge:dial:trunk:{name}:minute ZSET admission -> start time: the trunk's sliding minute
    callbridge:dial:trunk:{name}:active ZSET admission -> lease expiry: the trunk's calls up

A member is ``{worker}/{instance}:{ticket}``. The key's suffix never contains ":", so no trunk name
can spell another trunk's key. Only the windows a cap is set for are written (a dial with no cap
at all does not touch Redis). Time is Redis's clock (TIME in the script), as for the registry's
liveness: the workers' clocks need not agree.

Calls up are leases, not counters: each admitted call is a member whose score is its lease expiry,
renewed every third of ``lease_s`` while this worker holds it, and removed on release. A worker that
crashes stops renewing, so its slots free themselves within ``lease_s`` without a reaper's help
(a reaper could only act after the worker timeout anyway, and a lease needs no other worker alive).
A renewal re-adds a lease that lapsed while the call was still up (a stalled worker, a Redis that
restarted empty): the count follows the calls really up, at the price of briefly counting one past
the cap rather than letting a further call through.

Fail closed: when Redis cannot be reached, answers with an error (a key of the wrong type written
by someone else), or answers something unexpected, the dial is refused as ``policy_unavailable``
and the cause is logged (throttled). A toll-fraud cap that silently stops counting while the dials
go on is worse than a dial refused until Redis is back; the pattern rules still judge every dial.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from ...call.dial_policy import (CAP_REASONS, DAY_S, DENY_UNAVAILABLE, MINUTE_S, Admission, Caps, TrunkRules,
                                 cap_detail)
from .quietlog import QuietLog

log = logging.getLogger("callbridge.cluster")

PREFIX = "callbridge:dial:"
GLOBAL_DAY = PREFIX + "global:day"
# A crashed worker's calls stop counting this long after its last renewal.
DEFAULT_LEASE_S = 30.0
RENEW_FRACTION = 1 / 3  # renew three times per lease: one lost renewal does not drop a call
# One admission waits no longer than this for Redis (then: refused, policy_unavailable).
ADMIT_TIMEOUT_S = 3.0
REDIS_TIMEOUT_S = 2.0
NO_CAP = -1
UNAVAILABLE_DETAIL = "the cluster's outbound call counter (Redis) cannot be used; dials are refused until it is back"

ADMIT_SCRIPT = """
-- KEYS[1]: the global day window; with a trunk, KEYS[2] its calls up, KEYS[3] its minute, KEYS[4] its day.
-- ARGV: member, lease_s, minute_s, day_s, then caps per key (-1: none): global day, concurrent, minute, day.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease, minute, day = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local caps = {tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])}
local cutoffs = {now - day, now, now - minute, now - day}
-- Every key pruned and counted before anything is written: a key of the wrong type fails here.
local counts = {}
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', cutoffs[i])
  counts[i] = redis.call('ZCARD', KEYS[i])
end
local reasons = {'global_daily_cap', 'concurrent_cap', 'rate_cap', 'daily_cap'}
local verdict, count = 'ok', 0
for _, i in ipairs({2, 3, 4, 1}) do
  if i <= #KEYS and caps[i] >= 0 and counts[i] >= caps[i] then
    verdict, count = reasons[i], counts[i]
    break
  end
end
local reached = ''
if verdict == 'ok' then
  local scores = {now, now + lease, now, now}
  local ttls = {day, lease, minute, day}
  for i = 1, #KEYS do
    if caps[i] >= 0 then
      redis.call('ZADD', KEYS[i], scores[i], ARGV[1])
      redis.call('PEXPIRE', KEYS[i], math.ceil(ttls[i] * 1000))
      counts[i] = counts[i] + 1
    end
  end
  if caps[1] >= 0 and counts[1] >= caps[1] then reached = 'global' end
  if #KEYS == 4 and caps[4] >= 0 and counts[4] >= caps[4] then reached = 'trunk' end
end
local function full_until(i)
  if i > #KEYS or caps[i] < 0 or counts[i] < caps[i] then return '' end
  local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if #oldest < 2 then return '' end
  return tostring(tonumber(oldest[2]) + day)
end
return {verdict, tostring(count), reached, tostring(now), full_until(1), full_until(4)}
"""

RENEW_SCRIPT = """
-- KEYS[1]: a trunk's calls up; ARGV: lease_s, then this worker's members to keep.
local t = redis.call('TIME')
local expiry = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000))
return #ARGV - 1
"""

VERDICTS = CAP_REASONS | {"ok"}
REACHED = frozenset({"", "global", "trunk"})


def trunk_key(trunk: str, window: str) -> str:
    return f"{PREFIX}trunk:{trunk}:{window}"


def redis_client(url: str, worker_id: str | None = None) -> Redis:
    """A client for the ledger alone (when the cluster node does not lend its own); ValueError for a bad URL."""
    return Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S,
                          retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
                          client_name=f"callbridge-{worker_id or 'worker'}-dial")


class _Reply:
    """The admission script's answer, checked: anything else is ``None`` (and the dial refused)."""

    def __init__(self, verdict: str, count: int, reached: str, now: float, global_full: float | None,
                 trunk_full: float | None) -> None:
        self.verdict, self.count, self.reached, self.now = verdict, count, reached, now
        self.global_full, self.trunk_full = global_full, trunk_full

    @classmethod
    def parse(cls, reply: object) -> _Reply | None:
        if not isinstance(reply, list) or len(reply) != 6:
            return None
        fields = [item.decode("ascii", "replace") if isinstance(item, bytes) else item for item in reply]
        if not all(isinstance(item, str) for item in fields):
            return None
        verdict, count, reached, now, global_full, trunk_full = fields
        if verdict not in VERDICTS or reached not in REACHED:
            return None
        try:
            return cls(verdict, int(count), reached, float(now), float(global_full) if global_full else None,
                       float(trunk_full) if trunk_full else None)
        except ValueError:
            return None


class RedisDialLedger:
    """A :class:`~callbridge.call.dial_policy.DialLedger` shared by every worker through one Redis.

    ``lease_s``, ``minute_s`` and ``day_s`` are the production values unless a test shortens them.
    Call :meth:`close` when the worker stops (it releases what is still held).
    """

    def __init__(self, redis: Redis, *, worker_id: str | None = None, lease_s: float = DEFAULT_LEASE_S,
                 minute_s: float = MINUTE_S, day_s: float = DAY_S, timeout_s: float = ADMIT_TIMEOUT_S,
                 owns_client: bool = False) -> None:
        self.redis = redis
        self.lease_s, self.minute_s, self.day_s, self.timeout_s = lease_s, minute_s, day_s, timeout_s
        self.owns_client = owns_client
        self._owner = f"{worker_id or 'worker'}/{uuid.uuid4().hex[:12]}"
        self._admit_script = redis.register_script(ADMIT_SCRIPT)
        self._renew_script = redis.register_script(RENEW_SCRIPT)
        self._next_ticket = 0
        self._tickets: dict[int, str | None] = {}  # ticket -> trunk, every dial admitted and not released
        self._held: dict[int, tuple[str, str]] = {}  # ticket -> (calls-up key, member): leases we renew
        self._full_until: dict[str, float] = {}  # "global" / "trunk:<name>" -> monotonic time it frees
        self._fullness_seen: dict[str, float] = {}  # scope -> Redis time of the reply that set it
        self._renewer: asyncio.Task[None] | None = None
        self._writes = asyncio.Lock()  # a release's ZREM never overtaken by a renewal of the same member
        self._pending: set[asyncio.Task[None]] = set()
        self._quiet = QuietLog(log)

    # -- DialLedger ---------------------------------------------------------------------------------

    async def admit(self, trunk: str | None, caps: Caps, now: float) -> Admission:
        """Count one dial against ``caps`` for the whole cluster; ``now`` is unused (Redis keeps time)."""
        if not caps.capped:
            return self._admitted(trunk, None)  # nothing to count: Redis is not asked
        ticket = self._next_ticket = self._next_ticket + 1
        member = f"{self._owner}:{ticket}"
        keys = [GLOBAL_DAY]
        if trunk is not None:
            keys += [trunk_key(trunk, "active"), trunk_key(trunk, "minute"), trunk_key(trunk, "day")]
        args: list[str | float | int] = [member, self.lease_s, self.minute_s, self.day_s]
        args += [NO_CAP if cap is None else cap
                 for cap in (caps.global_max_per_day, caps.max_concurrent, caps.max_per_minute, caps.max_per_day)]
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await self._admit_script(keys=keys, args=args)
        except (asyncio.CancelledError, TimeoutError) as exc:
            if trunk is not None:  # abandoned: the slot the script may still take goes back (else: the lease)
                self._remove_later(trunk_key(trunk, "active"), member)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return self._unavailable("the dial ledger's Redis did not answer within %.1f s", self.timeout_s)
        except (RedisError, OSError) as exc:
            return self._unavailable("cannot count an outbound dial in Redis: %s", exc)
        reply = _Reply.parse(raw)
        if reply is None:
            return self._unavailable("unexpected reply from the dial ledger's script: %.200r", raw)
        self._note_fullness(trunk, reply)
        if reply.verdict != "ok":
            return Admission(False, reply.verdict, cap_detail(reply.verdict, trunk, reply.count, caps))
        cap_reached = {"global": "global", "trunk": f"trunk:{trunk}", "": None}[reply.reached]
        held = (trunk_key(trunk, "active"), member) if trunk is not None and caps.max_concurrent is not None else None
        return self._admitted(trunk, held, ticket, cap_reached)

    def release(self, ticket: int | None) -> None:
        if ticket is None:
            return
        self._tickets.pop(ticket, None)
        held = self._held.pop(ticket, None)
        if held is not None:
            self._remove_later(*held)

    def daily_cap_reached(self, rules: list[TrunkRules], global_max_per_day: int | None,
                          now: float) -> dict[str, bool]:
        """Whether each daily cap is full, as this worker's latest admissions saw it (a gauge may lag
        another worker's dials until this worker dials; ``now`` is unused)."""
        clock = time.monotonic()
        full = {"global": global_max_per_day is not None and self._full_until.get("global", 0.0) > clock}
        for trunk in rules:
            if trunk.max_per_day is not None:
                full[trunk.name] = self._full_until.get(f"trunk:{trunk.name}", 0.0) > clock
        return full

    def active(self, trunk: str) -> int:
        """Calls up through ``trunk`` that this worker admitted (the cluster's count is in Redis)."""
        return sum(1 for name in self._tickets.values() if name == trunk)

    # -- lifecycle ----------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait for the releases under way to reach Redis (or fail)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def close(self) -> None:
        """Stop renewing, give back what is still held, and close the client if it is ours."""
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        for ticket in list(self._tickets):
            self.release(ticket)
        await self.flush()
        if self.owns_client:
            await self.redis.aclose()

    # -- inside -------------------------------------------------------------------------------------

    def _admitted(self, trunk: str | None, held: tuple[str, str] | None, ticket: int | None = None,
                  cap_reached: str | None = None) -> Admission:
        if ticket is None:
            ticket = self._next_ticket = self._next_ticket + 1
        self._tickets[ticket] = trunk
        if held is not None:
            self._held[ticket] = held
            if self._renewer is None:
                self._renewer = asyncio.get_running_loop().create_task(self._renew_while_held(),
                                                                       name="dial-ledger-renew")
        return Admission(True, "ok", "", ticket, cap_reached)

    def _unavailable(self, message: str, cause: object) -> Admission:
        self._quiet.warning("dial-ledger", "outbound dial refused (policy_unavailable): " + message, cause)
        return Admission(False, DENY_UNAVAILABLE, UNAVAILABLE_DETAIL)

    def _note_fullness(self, trunk: str | None, reply: _Reply) -> None:
        clock = time.monotonic()
        scopes = [("global", reply.global_full)] + ([(f"trunk:{trunk}", reply.trunk_full)] if trunk else [])
        for scope, until in scopes:
            # Replies on different connections arrive in any order: an older one must not undo a newer one.
            if reply.now < self._fullness_seen.get(scope, float("-inf")):
                continue
            self._fullness_seen[scope] = reply.now
            if until is None:
                self._full_until.pop(scope, None)
            else:
                self._full_until[scope] = clock + (until - reply.now)

    async def _renew_while_held(self) -> None:
        """The leases of the calls this worker holds, renewed until it holds none (then the task ends)."""
        try:
            while self._held:
                await asyncio.sleep(self.lease_s * RENEW_FRACTION)
                await self._renew()
        finally:
            self._renewer = None  # the next admission that holds a lease starts another

    async def _renew(self) -> None:
        async with self._writes:
            by_key: dict[str, list[str]] = {}
            for key, member in self._held.values():
                by_key.setdefault(key, []).append(member)
            for key, members in by_key.items():
                await self._quietly("renewal", self._renew_script(keys=[key], args=[self.lease_s, *members]))

    def _remove_later(self, key: str, member: str) -> None:
        try:
            task = asyncio.get_running_loop().create_task(self._remove(key, member), name="dial-ledger-release")
        except RuntimeError:
            return  # no loop (shutting down): the lease lapses within lease_s
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _remove(self, key: str, member: str) -> None:
        async with self._writes:
            await self._quietly("release", self.redis.zrem(key, member))

    async def _quietly(self, what: str, command: Awaitable[object]) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await command
        except (RedisError, OSError) as exc:
            # A lost release frees itself when the lease lapses; a lost renewal is retried next time.
            self._quiet.warning(f"dial-ledger-{what}", "dial ledger: a %s failed (calls go on): %s", what, exc)
