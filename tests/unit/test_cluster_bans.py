"""Login bans shared through a real redis-server (app/cluster/bans.py) and the guard's impose API."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from callbridge.app.cluster import keys
from callbridge.app.cluster.bans import (MAX_MESSAGE_BYTES, MAX_USERNAME_LENGTH, BanMessageError, BanSharing,
                                         SharedBan, encode, valid_source, validate)
from callbridge.sip.guard import SOURCE, USERNAME, AuthGuard, GuardPolicy, source_key
from tests.support.redis import RedisServer, module_redis_server  # noqa: F401 - the redis_server fixture

POLICY = GuardPolicy(failures_before_backoff=3, failures_before_ban=3, ban_seconds=30.0, max_ban_seconds=120.0)
DEADLINE_S = 5.0  # any wait for the other side is bounded by this
QUIET_S = 0.5  # how long "nothing more arrives" is watched


@pytest.fixture
async def workers(redis_server):
    """make(worker_id) -> (sharing, guard), started; Redis is empty at the start of each test."""
    clients: list[Redis] = []
    started: list[BanSharing] = []
    admin = Redis.from_url(redis_server.url)
    await admin.flushdb()

    async def make(worker_id: str, *, start: bool = True, maxsize: int = 100) -> tuple[BanSharing, AuthGuard]:
        redis, subscriber = Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)
        clients.extend([redis, subscriber])
        guard = AuthGuard(POLICY)
        sharing = BanSharing(redis, subscriber, guard, time.monotonic, worker_id, maxsize=maxsize)
        if start:
            await sharing.start(DEADLINE_S)
            started.append(sharing)
        return sharing, guard

    make.admin = admin  # type: ignore[attr-defined]
    yield make
    for sharing in started:
        await sharing.stop()
    for client in clients + [admin]:
        await client.aclose()


async def eventually(predicate: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def guess(guard: AuthGuard, host: str, username: str | None = "alice") -> None:
    for _ in range(POLICY.failures_before_ban):
        guard.record_failure(host, username, time.monotonic())


# -- the guard's side (sans-IO) --------------------------------------------------------------------------

def test_impose_extends_never_shortens_is_capped_and_is_not_reported():
    guard = AuthGuard(POLICY)
    told: list[object] = []
    guard.on_ban = told.append
    assert guard.impose(SOURCE, "192.0.2.7", 100.0, 10.0) is not None
    assert guard.source_banned("192.0.2.7", 99.0) and not guard.source_banned("192.0.2.7", 100.0)
    assert guard.impose(SOURCE, "192.0.2.7", 50.0, 10.0) is None  # a shorter one changes nothing
    assert guard.source_banned("192.0.2.7", 99.0)
    capped = guard.impose(USERNAME, "alice", 1e12, 10.0, offences=3)
    assert capped is not None and capped.until == 10.0 + POLICY.max_ban_seconds and capped.offences == 3
    assert guard.impose(SOURCE, "192.0.2.8", 5.0, 10.0) is None  # already over
    assert told == [] and guard.bans_total == 0
    with pytest.raises(ValueError):
        guard.impose("planet", "x", 100.0, 10.0)


def test_imposed_offences_double_the_next_local_ban():
    guard = AuthGuard(POLICY)
    guard.impose(SOURCE, "192.0.2.7", 1.0 + POLICY.ban_seconds * 2, 1.0, offences=2)
    later = 1.0 + POLICY.ban_seconds * 2 + 1
    bans = [guard.record_failure("192.0.2.7", None, later) for _ in range(POLICY.failures_before_ban)][-1]
    assert bans and bans[0].offences == 3 and bans[0].until == later + POLICY.ban_seconds * 4


def test_lift_announces_the_normalised_key_unless_told_not_to():
    guard = AuthGuard(POLICY)
    lifted: list[tuple[str, str]] = []
    guard.on_lift = lambda kind, key: lifted.append((kind, key))
    guard.impose(SOURCE, "2001:db8::1", 100.0, 0.0)
    assert guard.lift(SOURCE, "2001:db8::99")
    assert lifted == [(SOURCE, "2001:db8::/64")]
    guard.impose(USERNAME, "alice", 100.0, 0.0)
    assert guard.lift(USERNAME, "alice", announce=False) and lifted == [(SOURCE, "2001:db8::/64")]
    assert not guard.lift(USERNAME, "alice") and len(lifted) == 1  # nothing to lift: nothing said


# -- the wire ---------------------------------------------------------------------------------------------

def test_source_keys_are_exactly_what_source_key_makes():
    for host in ("192.0.2.7", "2001:db8::1", "::ffff:192.0.2.9", "[2001:db8:0:1::5]"):
        assert valid_source(source_key(host)), host
    for forged in ("", "example.com", "192.0.2.07", "2001:db8::1", "2001:db8::/48", "2001:db8::1/64",
                   "192.0.2.0/24", "::ffff:0:0/64", " 192.0.2.7", "192.0.2.7\n", "x" * 100):
        assert not valid_source(forged), forged


def _message(**changes: Any) -> bytes:
    message: dict[str, Any] = {"v": 1, "via": "w2", "op": "ban", "kind": "source", "key": "192.0.2.7",
                               "until": time.time() + 60, "offences": 1}
    message.update(changes)
    return json.dumps({k: v for k, v in message.items() if v is not ...}).encode()


BAD_MESSAGES = [
    b"", b"not json", b"[1,2]", b"null", b"[" * 3000, b'{"v":1' + b" " * MAX_MESSAGE_BYTES + b"}",
    _message(v=2), _message(v=...), _message(via="w 2"), _message(via=""), _message(via=7),
    _message(op="nuke"), _message(kind="planet"), _message(kind=None),
    _message(key="example.com"), _message(key=["192.0.2.7"]), _message(key="2001:db8::1"),
    _message(kind="username", key=""), _message(kind="username", key="a" * (MAX_USERNAME_LENGTH + 1)),
    _message(kind="username", key="al\x00ice"), _message(kind="username", key="al\r\nice"),
    _message(until=...), _message(until="soon"), _message(until=True), _message(until=time.time() - 1),
    _message(until=time.time() + 10 * 86400), _message(until=1e308), b'{"v":1,"via":"w2","op":"ban",'
    b'"kind":"source","key":"192.0.2.7","until":NaN,"offences":1}',
    _message(offences=0), _message(offences=-1), _message(offences=1000), _message(offences=1.5),
    _message(offences=...), "a str, not bytes",
]


@pytest.mark.parametrize("raw", BAD_MESSAGES, ids=range(len(BAD_MESSAGES)))
def test_validate_refuses_forgeries(raw):
    with pytest.raises(BanMessageError):
        validate(raw, wall=time.time(), longest=POLICY.max_ban_seconds)


def test_validate_takes_what_encode_makes():
    ban = SharedBan("ban", "w1", USERNAME, "alice", time.time() + 30, 2)
    assert validate(encode(ban), wall=time.time(), longest=60.0) == SharedBan("ban", "w1", USERNAME, "alice",
                                                                                round(ban.until, 3), 2)
    lift = SharedBan("lift", "w1", SOURCE, "2001:db8::/64")
    assert validate(encode(lift), wall=time.time(), longest=60.0) == lift


# -- through Redis ----------------------------------------------------------------------------------------

async def test_a_ban_reaches_the_other_worker_once_with_a_key_that_expires_with_it(workers):
    admin: Redis = workers.admin
    monitor = admin.pubsub(ignore_subscribe_messages=True)
    await monitor.subscribe(keys.BANS_CHANNEL)
    a, guard_a = await workers("w1")
    b, guard_b = await workers("w2")
    guess(guard_a, "192.0.2.7")
    await eventually(lambda: guard_b.source_banned("192.0.2.7", time.monotonic()), "w2 to apply the ban")
    await eventually(lambda: guard_b.check("192.0.2.99", "alice", time.monotonic()).value == "refuse",
                     "w2 to lock the username too")
    assert {(ban.kind, ban.key) for ban in guard_b.bans(time.monotonic())} == {(SOURCE, "192.0.2.7"),
                                                                               (USERNAME, "alice")}
    ttl = await admin.pttl(keys.ban(SOURCE, "192.0.2.7"))
    assert POLICY.ban_seconds * 1000 - 5000 < ttl <= POLICY.ban_seconds * 1000
    # Exactly the two bans went out, both from w1: w2 applied them without publishing them again.
    seen: list[dict] = []
    deadline = time.monotonic() + QUIET_S + 1
    while time.monotonic() < deadline:
        message = await monitor.get_message(timeout=0.1)
        if message is not None:
            seen.append(json.loads(message["data"]))
    await monitor.aclose()
    assert sorted((m["via"], m["op"], m["kind"]) for m in seen) == [("w1", "ban", SOURCE), ("w1", "ban", USERNAME)]
    assert guard_b.bans_total == 0 and b.applied == 2 and a.applied == 0


async def test_a_worker_started_later_applies_the_bans_in_force(workers):
    _, guard_a = await workers("w1")
    guess(guard_a, "2001:db8:0:7::1")
    deadline = time.monotonic() + DEADLINE_S
    while len(await workers.admin.keys(keys.BAN_PREFIX + "*")) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    late, guard_late = await workers("w3")
    assert guard_late.source_banned("2001:db8:0:7::abcd", time.monotonic())
    assert late.applied == 2


async def test_lifting_on_one_worker_lifts_everywhere(workers):
    _, guard_a = await workers("w1")
    _, guard_b = await workers("w2")
    guess(guard_a, "192.0.2.7")
    await eventually(lambda: guard_b.source_banned("192.0.2.7", time.monotonic()), "w2 to apply the ban")
    assert guard_b.lift(SOURCE, "192.0.2.7")  # what DELETE /api/security/bans/source/192.0.2.7 does on w2
    await eventually(lambda: not guard_a.source_banned("192.0.2.7", time.monotonic()), "w1 to lift it")
    deadline = time.monotonic() + DEADLINE_S
    while await workers.admin.exists(keys.ban(SOURCE, "192.0.2.7")) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert not await workers.admin.exists(keys.ban(SOURCE, "192.0.2.7"))
    assert await workers.admin.exists(keys.ban(USERNAME, "alice"))  # only what was lifted


async def test_garbage_on_the_channel_and_in_keys_is_dropped_and_logged_throttled(workers, caplog):
    caplog.set_level(logging.WARNING, logger="callbridge.cluster")
    admin: Redis = workers.admin
    for n, raw in enumerate(m for m in BAD_MESSAGES if isinstance(m, bytes)):
        await admin.set(keys.ban(SOURCE, f"198.51.100.{n}"), raw, px=60_000)
    # A well-formed ban under the wrong key name, and a lift stored as a key.
    await admin.set(keys.ban(SOURCE, "198.51.100.250"), _message(key="198.51.100.251"), px=60_000)
    await admin.set(keys.ban(SOURCE, "198.51.100.252"), _message(op="lift", key="198.51.100.252"), px=60_000)
    await admin.set(keys.BAN_PREFIX + "\xff\xfe", b"\xff", px=60_000)
    sharing, guard = await workers("w1")
    stored_rejected = sharing.rejected
    assert stored_rejected >= len([m for m in BAD_MESSAGES if isinstance(m, bytes)]) + 2
    for raw in BAD_MESSAGES:
        if isinstance(raw, bytes):
            await admin.publish(keys.BANS_CHANNEL, raw)
    # The subscription is alive after all that: a good ban still arrives.
    await admin.publish(keys.BANS_CHANNEL, _message(key="203.0.113.5"))
    await eventually(lambda: guard.source_banned("203.0.113.5", time.monotonic()), "the good ban")
    assert [(b.kind, b.key) for b in guard.bans(time.monotonic())] == [(SOURCE, "203.0.113.5")]
    assert sharing.rejected >= stored_rejected + len([m for m in BAD_MESSAGES if isinstance(m, bytes)])
    dropped = [r for r in caplog.records if "malformed ban" in r.getMessage()]
    assert 1 <= len(dropped) <= 2, [r.getMessage() for r in dropped]  # one per kind of place, throttled


async def test_our_own_messages_are_not_applied_twice_and_a_full_queue_drops(workers):
    sharing, guard = await workers("w1", start=False, maxsize=2)
    sharing.guard.on_ban = sharing._banned  # hooked as start() does, but the queue never drains
    for n in range(5):
        guess(guard, f"192.0.2.{n}", username=None)
    assert sharing.queue.dropped == 3 and guard.bans_total == 5  # the local bans hold all the same
    sharing.on_message(_message(via="w1", key="203.0.113.9"))
    assert not guard.source_banned("203.0.113.9", time.monotonic())
