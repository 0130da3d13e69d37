"""Login bans for the whole cluster: a source or username banned on one worker is banned on all.

Behind Kamailio a guesser's requests are spread round robin over the workers; without sharing it would
get N workers' worth of guesses, and a banned source would still be answered by the others. Failures
stay counted per worker (each worker's guard, sip/guard.py); what is shared is the ban once imposed:

- out: the guard's ``on_ban`` / ``on_lift`` queue it (bounded, sendqueue.py); one task writes the key
  ``callbridge:ban:{kind}:{key}`` (JSON, expiring when the ban ends, so a worker that starts later
  applies the bans in force) and publishes the same JSON on ``callbridge:bans`` (live workers apply it
  within milliseconds). A lift deletes the key and publishes a lift.
- in: each message from another worker, and on every (re)subscription each key found, is checked
  (:func:`validate`) and applied with ``AuthGuard.impose`` or ``lift(..., announce=False)``: a ban
  that came from elsewhere never goes out again, so there are no echo loops.

Wire format (times are unix seconds: each worker converts to its guard's own clock)::

    {"v": 1, "via": "w1", "op": "ban", "kind": "source", "key": "192.0.2.7", "until": 1718000600.0,
     "offences": 1}
    {"v": 1, "via": "w1", "op": "lift", "kind": "username", "key": "alice"}

Anyone with Redis access can write these, so everything is checked: the kind, the key's shape (what
``source_key`` makes, or a printable username of bounded length), ``until`` in the future and no
further than the policy's longest ban; malformed ones are dropped and logged, throttled. Lifts missed
while Redis was unreachable are not replayed: such a ban runs out on its own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ...sip.guard import IPV6_SOURCE_PREFIX, SOURCE, USERNAME, AuthGuard, Ban
from ..jsonbody import JsonTooComplex, NotJson, decode
from . import keys
from .quietlog import QuietLog
from .sendqueue import SendQueue

log = logging.getLogger("callbridge.cluster")

WIRE_VERSION = 1
BAN, LIFT = "ban", "lift"
KINDS = (SOURCE, USERNAME)
# A ban message is under 200 bytes plus the username; anything much larger is not ours.
MAX_MESSAGE_BYTES = 2048
# Usernames longer than this are not shared (their bans stay on the worker that made them).
MAX_USERNAME_LENGTH = 256
MAX_SOURCE_LENGTH = 64  # "ffff:ffff:ffff:ffff::/64" and any IPv4 address fit
MAX_OFFENCES = 64  # 2**63 times ban_seconds is past any cap already
# Workers' clocks differ a little: a ban may end this much later than the longest ban from our now.
CLOCK_SKEW_S = 60.0
BAN_QUEUE_SIZE = 1000
SCAN_COUNT = 500  # keys per SCAN round trip
MGET_CHUNK = 500
RESUBSCRIBE_MIN_S, RESUBSCRIBE_MAX_S = 0.2, 5.0


class BanMessageError(ValueError):
    """A ban message or key that is not one of ours."""


@dataclass(frozen=True, slots=True)
class SharedBan:
    op: str  # ban or lift
    via: str
    kind: str
    key: str
    until: float = 0.0  # unix seconds; bans only
    offences: int = 1


def valid_source(key: str) -> bool:
    """``key`` is exactly what ``source_key`` makes: an IPv4 address or an IPv6 /64, canonical."""
    if not key or len(key) > MAX_SOURCE_LENGTH:
        return False
    try:
        address = ipaddress.ip_address(key)
    except ValueError:
        pass
    else:
        return isinstance(address, ipaddress.IPv4Address) and str(address) == key
    try:
        network = ipaddress.ip_network(key, strict=True)
    except ValueError:
        return False
    return (isinstance(network, ipaddress.IPv6Network) and network.prefixlen == IPV6_SOURCE_PREFIX
            and network.network_address.ipv4_mapped is None and str(network) == key)


def valid_username(key: str) -> bool:
    return 0 < len(key) <= MAX_USERNAME_LENGTH and key.isprintable()


def valid_key(kind: str, key: str) -> bool:
    return valid_source(key) if kind == SOURCE else kind == USERNAME and valid_username(key)


def encode(shared: SharedBan) -> bytes:
    message: dict[str, object] = {"v": WIRE_VERSION, "via": shared.via, "op": shared.op, "kind": shared.kind,
                                  "key": shared.key}
    if shared.op == BAN:
        message.update(until=round(shared.until, 3), offences=shared.offences)
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()


def validate(raw: object, *, wall: float, longest: float) -> SharedBan:
    """A message's bytes as a SharedBan; ``wall`` is unix now, ``longest`` the longest ban allowed."""
    if not isinstance(raw, bytes):
        raise BanMessageError("not bytes")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise BanMessageError(f"larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        message = decode(raw)
    except (JsonTooComplex, NotJson) as exc:
        raise BanMessageError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise BanMessageError("not a JSON object")
    if message.get("v") != WIRE_VERSION:
        raise BanMessageError("unknown version")
    via, op, kind, key = (message.get(name) for name in ("via", "op", "kind", "key"))
    if not isinstance(via, str) or not keys.WORKER_ID.match(via):
        raise BanMessageError("via is not a worker id")
    if op not in (BAN, LIFT):
        raise BanMessageError("op")
    if kind not in KINDS:
        raise BanMessageError("kind")
    assert isinstance(op, str) and isinstance(kind, str)
    if not isinstance(key, str) or not valid_key(kind, key):
        raise BanMessageError(f"key is not a {kind}")
    if op == LIFT:
        return SharedBan(LIFT, via, kind, key)
    until, offences = message.get("until"), message.get("offences")
    if isinstance(until, bool) or not isinstance(until, (int, float)) or not math.isfinite(until):
        raise BanMessageError("until")
    if not wall < until <= wall + longest + CLOCK_SKEW_S:
        raise BanMessageError("until is not a time in the ban's range")
    if isinstance(offences, bool) or not isinstance(offences, int) or not 1 <= offences <= MAX_OFFENCES:
        raise BanMessageError("offences")
    return SharedBan(BAN, via, kind, key, float(until), offences)


class BanSharing:
    """Joins one worker's guard to the cluster's bans; ``now`` is the clock the guard is fed."""

    def __init__(self, redis: Redis, subscriber: Redis, guard: AuthGuard, now: Callable[[], float],
                 worker_id: str, *, wall: Callable[[], float] = time.time, maxsize: int = BAN_QUEUE_SIZE) -> None:
        self.redis = redis
        self.subscriber = subscriber  # pub/sub takes a connection of its own from this client
        self.guard = guard
        self.now = now
        self.wall = wall
        self.worker_id = worker_id
        self.queue: SendQueue[SharedBan] = SendQueue("bans", self._send, maxsize=maxsize)
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._quiet = QuietLog(log)
        self.applied = 0  # bans and lifts from other workers applied here
        self.rejected = 0

    @property
    def longest(self) -> float:
        policy = self.guard.policy
        return max(policy.max_ban_seconds, policy.ban_seconds)

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self, timeout: float) -> None:
        """Hook the guard, subscribe and load the bans in force; return once done (or after ``timeout``)."""
        self.guard.on_ban = self._banned
        self.guard.on_lift = self._lifted
        self.queue.start()
        self._task = asyncio.get_running_loop().create_task(self._subscribe_forever(), name="cluster-bans")
        try:
            async with asyncio.timeout(timeout):
                await self._subscribed.wait()
        except TimeoutError:
            log.warning("cluster: not yet subscribed to the cluster's bans; retrying in the background")

    async def stop(self) -> None:
        self.guard.on_ban = self.guard.on_lift = None
        await self.queue.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # -- out ------------------------------------------------------------------------------------------

    def _banned(self, ban: Ban) -> None:
        if ban.kind == USERNAME and not valid_username(ban.key):
            return  # others would refuse it: it stays a local ban
        until = self.wall() + (ban.until - self.now())
        self.queue.put(SharedBan(BAN, self.worker_id, ban.kind, ban.key, until, min(ban.offences, MAX_OFFENCES)))

    def _lifted(self, kind: str, key: str) -> None:
        if valid_key(kind, key):
            self.queue.put(SharedBan(LIFT, self.worker_id, kind, key))

    async def _send(self, batch: list[SharedBan]) -> None:
        wall = self.wall()
        async with self.redis.pipeline(transaction=False) as pipe:
            for shared in batch:
                name, payload = keys.ban(shared.kind, shared.key), encode(shared)
                if shared.op == LIFT:
                    pipe.delete(name)
                else:
                    ttl_ms = int((shared.until - wall) * 1000)
                    if ttl_ms <= 0:
                        continue  # over before it got out
                    pipe.set(name, payload, px=ttl_ms)
                pipe.publish(keys.BANS_CHANNEL, payload)
            await pipe.execute()

    # -- in -------------------------------------------------------------------------------------------

    async def _subscribe_forever(self) -> None:
        delay = RESUBSCRIBE_MIN_S
        while True:
            pubsub = self.subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.BANS_CHANNEL)
                await self.load()  # after subscribing: a ban made meanwhile arrives one way or the other
                self._subscribed.set()
                delay = RESUBSCRIBE_MIN_S
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.on_message(message.get("data"))
            except (RedisError, OSError) as exc:
                self._quiet.warning("bans-subscribe", "cluster: lost the bans channel (%s); subscribing again", exc)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESUBSCRIBE_MAX_S)

    async def load(self) -> int:
        """Apply the bans in force in Redis (at most the guard's ``max_tracked``); how many were applied."""
        names: list[bytes] = []
        limit = self.guard.policy.max_tracked
        async for name in self.redis.scan_iter(match=keys.BAN_PREFIX + "*", count=SCAN_COUNT):
            names.append(name)
            if len(names) >= limit:
                break
        applied = 0
        for start in range(0, len(names), MGET_CHUNK):
            chunk = names[start:start + MGET_CHUNK]
            values = await self.redis.mget(chunk)
            for name, value in zip(chunk, values, strict=True):
                if value is not None and self._apply(value, key_name=keys.text(name) or "", stored=True):
                    applied += 1
        return applied

    def on_message(self, raw: object) -> None:
        self._apply(raw, key_name=None, stored=False)

    def _apply(self, raw: object, *, key_name: str | None, stored: bool) -> bool:
        where = "key" if stored else keys.BANS_CHANNEL
        try:
            shared = validate(raw, wall=self.wall(), longest=self.longest)
            if stored and (shared.op != BAN or key_name != keys.ban(shared.kind, shared.key)):
                raise BanMessageError("the value does not match its key")
        except BanMessageError as exc:
            self.rejected += 1
            self._quiet.warning(("bad-ban", stored), "cluster: dropped a malformed ban %s: %s", where, exc,
                                rejected=self.rejected)
            return False
        if shared.via == self.worker_id and not stored:
            return False  # our own, applied when we made it
        now = self.now()
        if shared.op == LIFT:
            changed = self.guard.lift(shared.kind, shared.key, announce=False)
        else:
            local_until = now + (shared.until - self.wall())
            changed = self.guard.impose(shared.kind, shared.key, local_until, now, offences=shared.offences) is not None
        if changed:
            self.applied += 1
            log.info("cluster: %s %s %s from %s", "applied ban of" if shared.op == BAN else "lifted ban of",
                     shared.kind, shared.key, shared.via)
        return changed
