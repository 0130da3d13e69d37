"""The cluster's dial ledger (app/cluster/dial_ledger.py) against a real redis-server on loopback.

Two ledgers with their own connections stand for two workers sharing one Redis. What is asserted is
what Redis holds (ZCARD of the ledger's keys) as well as what the ledgers answered.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from redis.asyncio import Redis

from callbridge.app.cluster.dial_ledger import GLOBAL_DAY, RedisDialLedger, _Reply, trunk_key
from callbridge.call.dial_policy import (DENY_CONCURRENT, DENY_DAILY, DENY_GLOBAL_DAILY, DENY_PREMIUM, DENY_RATE,
                                         DENY_UNAVAILABLE, Caps, DialPolicy, DialPolicyUnavailable, TrunkRules)
from callbridge.call.outbound import OutboundCalls
from tests.support.redis import RedisServer, module_redis_server  # noqa: F401 - the redis_server fixture

BURST = 20  # admissions per worker in a concurrent burst
SHORT_LEASE_S = 1.5  # the crash test's lease: renewed every 0.5 s
DEADLINE_S = 10.0  # any wait for Redis to change is bounded by this

log_name = "callbridge.cluster"


@pytest.fixture
async def workers(redis_server):
    """make(**options) -> a ledger on a connection of its own; Redis is empty at the start of each test."""
    clients: list[Redis] = []
    ledgers: list[RedisDialLedger] = []
    probe = Redis.from_url(redis_server.url)
    await probe.flushall()

    def make(url: str | None = None, **options) -> RedisDialLedger:
        client = Redis.from_url(url or redis_server.url, socket_timeout=2, socket_connect_timeout=2)
        clients.append(client)
        ledgers.append(ledger := RedisDialLedger(client, worker_id=f"w{len(ledgers)}", **options))
        return ledger

    make.redis = probe
    yield make
    for ledger in ledgers:
        await ledger.close()
    for client in clients:
        await client.aclose()
    await probe.aclose()


async def burst(ledgers: list[RedisDialLedger], caps: Caps, trunk: str | None = "carrier", *,
                release: bool = False) -> list:
    async def one(ledger: RedisDialLedger):
        admission = await ledger.admit(trunk, caps, 0.0)
        if release and admission.ok:
            ledger.release(admission.ticket)
        return admission
    results = await asyncio.gather(*(one(ledger) for _ in range(BURST) for ledger in ledgers))
    for ledger in ledgers:
        await ledger.flush()
    return results


async def test_two_workers_never_hold_more_than_max_concurrent(workers):
    a, b = workers(), workers()
    results = await burst([a, b], Caps(max_concurrent=5))
    assert sum(r.ok for r in results) == 5, results
    assert {r.reason for r in results if not r.ok} == {DENY_CONCURRENT}
    assert await workers.redis.zcard(trunk_key("carrier", "active")) == 5
    assert a.active("carrier") + b.active("carrier") == 5


async def test_two_workers_never_start_more_than_max_per_minute(workers):
    a, b = workers(), workers()
    results = await burst([a, b], Caps(max_per_minute=7), release=True)
    assert sum(r.ok for r in results) == 7, results
    assert {r.reason for r in results if not r.ok} == {DENY_RATE}
    assert await workers.redis.zcard(trunk_key("carrier", "minute")) == 7
    assert await workers.redis.zcard(trunk_key("carrier", "active")) == 0  # no concurrent cap: no lease kept


async def test_two_workers_never_start_more_than_max_per_day_and_one_reports_it(workers):
    a, b = workers(), workers()
    results = await burst([a, b], Caps(max_per_day=9), release=True)
    assert sum(r.ok for r in results) == 9, results
    assert {r.reason for r in results if not r.ok} == {DENY_DAILY}
    assert [r.cap_reached for r in results if r.cap_reached] == ["trunk:carrier"]
    assert await workers.redis.zcard(trunk_key("carrier", "day")) == 9
    # Both see the cap full now: the one that filled it, and the one its next dial was refused on.
    rules = [TrunkRules("carrier", max_per_day=9)]
    assert a.daily_cap_reached(rules, None, 0.0)["carrier"] and b.daily_cap_reached(rules, None, 0.0)["carrier"]


async def test_the_global_daily_cap_holds_across_workers_and_trunks(workers):
    a, b = workers(), workers()
    caps = Caps(global_max_per_day=6)
    results = await asyncio.gather(*(ledger.admit(trunk, caps, 0.0) for _ in range(BURST // 2)
                                     for ledger in (a, b) for trunk in ("one", "two", None)))
    assert sum(r.ok for r in results) == 6, results
    assert {r.reason for r in results if not r.ok} == {DENY_GLOBAL_DAILY}
    assert [r.cap_reached for r in results if r.cap_reached] == ["global"]
    assert await workers.redis.zcard(GLOBAL_DAY) == 6


async def test_a_release_frees_the_slot_for_the_other_worker(workers):
    a, b = workers(), workers()
    caps = Caps(max_concurrent=1)
    held = await a.admit("carrier", caps, 0.0)
    assert held.ok
    assert (await b.admit("carrier", caps, 0.0)).reason == DENY_CONCURRENT
    a.release(held.ticket)
    a.release(held.ticket)  # twice is harmless
    await a.flush()
    assert await workers.redis.zcard(trunk_key("carrier", "active")) == 0
    assert (await b.admit("carrier", caps, 0.0)).ok


async def test_the_minute_window_slides(workers):
    a, b = workers(minute_s=1.0), workers(minute_s=1.0)
    caps = Caps(max_per_minute=2)
    assert (await a.admit("carrier", caps, 0.0)).ok and (await b.admit("carrier", caps, 0.0)).ok
    assert (await a.admit("carrier", caps, 0.0)).reason == DENY_RATE
    await asyncio.sleep(1.3)
    assert (await b.admit("carrier", caps, 0.0)).ok


DOOMED_WORKER = """
import asyncio, sys
from redis.asyncio import Redis
from callbridge.app.cluster.dial_ledger import RedisDialLedger
from callbridge.call.dial_policy import Caps

async def main():
    ledger = RedisDialLedger(Redis.from_url(sys.argv[1]), worker_id="doomed", lease_s=float(sys.argv[2]))
    for _ in range(2):
        assert (await ledger.admit("carrier", Caps(max_concurrent=2), 0.0)).ok
    await asyncio.sleep(60)  # holds its calls until killed

asyncio.run(main())
"""


async def wait_for(predicate, what: str):
    deadline = time.monotonic() + DEADLINE_S
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_worker_that_dies_holding_calls_frees_them_after_the_lease(workers, redis_server):
    survivor = workers(lease_s=SHORT_LEASE_S)
    caps = Caps(max_concurrent=2)
    active = trunk_key("carrier", "active")
    doomed = subprocess.Popen([sys.executable, "-c", DOOMED_WORKER, redis_server.url, str(SHORT_LEASE_S)])
    try:
        await wait_for(lambda: _equals(workers.redis.zcard(active), 2), "the doomed worker's two calls")
        # Alive, its renewals keep both slots taken all along, for several leases.
        alive_until = time.monotonic() + 2.5 * SHORT_LEASE_S
        while time.monotonic() < alive_until:
            assert (await survivor.admit("carrier", caps, 0.0)).reason == DENY_CONCURRENT
            await asyncio.sleep(0.2)
        assert await workers.redis.zcard(active) == 2
    finally:
        doomed.kill()
        doomed.wait(timeout=5)
    killed_at = time.monotonic()
    assert (await survivor.admit("carrier", caps, 0.0)).reason == DENY_CONCURRENT  # not before the lease lapses

    async def admitted() -> bool:
        return (await survivor.admit("carrier", caps, 0.0)).ok
    await wait_for(admitted, "the dead worker's slots to lapse")
    assert time.monotonic() - killed_at <= SHORT_LEASE_S + 3.0
    assert (await survivor.admit("carrier", caps, 0.0)).ok  # both slots came back
    assert (await survivor.admit("carrier", caps, 0.0)).reason == DENY_CONCURRENT


async def _equals(awaitable, expected) -> bool:
    return await awaitable == expected


# -- Redis unavailable or tampered with: refused, logged, never a crash -------------------------------


async def test_redis_down_refuses_capped_dials_and_logs_once(workers, tmp_path, caplog):
    gone = RedisServer.start(tmp_path / "gone")
    gone.stop()
    ledger = workers(gone.url, timeout_s=2.0)
    caplog.set_level(logging.WARNING, logger=log_name)
    started = time.monotonic()
    first = await ledger.admit("carrier", Caps(max_concurrent=5), 0.0)
    second = await ledger.admit(None, Caps(global_max_per_day=5), 0.0)
    assert (first.ok, first.reason, second.reason) == (False, DENY_UNAVAILABLE, DENY_UNAVAILABLE)
    assert time.monotonic() - started < 2 * 2.0 + 1.0  # bounded by the timeout, never a hang
    warnings = [r for r in caplog.records if "policy_unavailable" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]  # throttled
    assert "127.0.0.1" not in first.detail  # the API client is not told where Redis lives
    # The pattern rules are judged locally whatever Redis does; a dial with no cap needs no Redis.
    policy = DialPolicy(ledger=ledger)
    rules = TrunkRules("carrier", max_concurrent=5)
    assert (await policy.decide("sip:+19005550100@c:5060", "+19005550100", rules, 0.0)).reason == DENY_PREMIUM
    assert (await policy.decide("sip:+15550100001@c:5060", "+15550100001", rules, 0.0)).reason == DENY_UNAVAILABLE
    assert (await policy.decide("sip:+15550100001@c:5060", "+15550100001", TrunkRules("carrier"), 0.0)).allowed
    # Back on the same port: counting resumes.
    back = RedisServer.start(tmp_path / "back", port=gone.port)
    try:
        assert (await ledger.admit("carrier", Caps(max_concurrent=5), 0.0)).ok
    finally:
        await ledger.close()
        back.stop()


@pytest.mark.parametrize("key, junk", [
    (trunk_key("carrier", "active"), ("set", "not a sorted set")),
    (trunk_key("carrier", "minute"), ("hset", {"x": "1"})),
    (GLOBAL_DAY, ("lpush", "junk")),
])
async def test_a_key_of_the_wrong_type_refuses_the_dial_and_counts_nothing(workers, caplog, key, junk):
    redis = workers.redis
    command, value = junk
    if command == "hset":
        await redis.hset(key, mapping=value)
    else:
        await getattr(redis, command)(key, value)
    ledger = workers()
    caplog.set_level(logging.WARNING, logger=log_name)
    caps = Caps(max_concurrent=5, max_per_minute=5, global_max_per_day=5)
    admission = await ledger.admit("carrier", caps, 0.0)
    assert (admission.ok, admission.reason) == (False, DENY_UNAVAILABLE)
    assert any("WRONGTYPE" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    for other in {trunk_key("carrier", "active"), trunk_key("carrier", "minute"), GLOBAL_DAY} - {key}:
        assert await redis.exists(other) == 0, other  # refused before anything was written
    # Another trunk whose keys are sound is not affected (unless the junk is in the global key).
    other_trunk = await ledger.admit("other", Caps(max_concurrent=5), 0.0)
    assert other_trunk.ok == (key != GLOBAL_DAY)


async def test_junk_members_count_against_the_cap_rather_than_open_it(workers):
    redis = workers.redis
    await redis.zadd(trunk_key("carrier", "minute"), {"junk-1": float("inf"), "junk-2": 1e300})
    await redis.zadd(trunk_key("carrier", "active"), {"junk-3": float("-inf")})  # a lapsed lease: pruned
    ledger = workers()
    assert (await ledger.admit("carrier", Caps(max_per_minute=2), 0.0)).reason == DENY_RATE
    assert (await ledger.admit("carrier", Caps(max_concurrent=1), 0.0)).ok
    assert await redis.zscore(trunk_key("carrier", "active"), "junk-3") is None


async def test_renewal_and_release_survive_a_clobbered_key(workers, caplog):
    ledger = workers(lease_s=0.6)
    caplog.set_level(logging.WARNING, logger=log_name)
    held = await ledger.admit("carrier", Caps(max_concurrent=2), 0.0)
    assert held.ok
    await workers.redis.set(trunk_key("carrier", "active"), "clobbered")
    await asyncio.sleep(0.6)  # at least one renewal meets the string
    ledger.release(held.ticket)
    await ledger.flush()
    messages = [r.getMessage() for r in caplog.records]
    assert any("renewal failed" in m for m in messages) and any("release failed" in m for m in messages), messages
    assert await workers.redis.get(trunk_key("carrier", "active")) == b"clobbered"  # not ours to delete


@pytest.mark.parametrize("reply", [
    None, b"ok", [], [b"ok"] * 5, [b"ok", b"0", b"", b"1.5", b"", b"", b"extra"],
    [b"allow_all", b"0", b"", b"1.5", b"", b""], [b"ok", b"zero", b"", b"1.5", b"", b""],
    [b"ok", b"0", b"everything", b"1.5", b"", b""], [b"ok", b"0", b"", b"\xff", b"", b""], [1, 2, 3, 4, 5, 6],
])
def test_an_unexpected_script_reply_is_refused(reply):
    assert _Reply.parse(reply) is None


# -- the dialling path: the decision is taken before any port is opened -------------------------------


class NoPorts:
    """The media side of a manager: counts the RTP ports asked for, and has none."""

    def __init__(self) -> None:
        self.policy = SimpleNamespace(srtp="off")
        self.opened = 0

    async def open_rtp(self):
        self.opened += 1
        raise OSError("no RTP port (stand-in)")


async def test_dial_refused_as_unavailable_opens_no_port_and_a_failed_dial_gives_its_slot_back(workers, tmp_path):
    media = NoPorts()
    outbound = OutboundCalls(SimpleNamespace(media=media, now=lambda: 0.0))
    outbound.rules = lambda: [TrunkRules("carrier", host="127.0.0.1", port=5099, max_concurrent=1)]
    told: list[tuple] = []
    outbound.dial_listeners.append(lambda *event: told.append(event))
    gone = RedisServer.start(tmp_path / "gone")
    gone.stop()
    outbound.policy = DialPolicy(ledger=workers(gone.url, timeout_s=2.0))
    with pytest.raises(DialPolicyUnavailable) as refused:
        await outbound.dial("sip:+15550100001@127.0.0.1:5099", trunk="carrier")
    assert (refused.value.reason, media.opened) == (DENY_UNAVAILABLE, 0)
    assert told == [("denied", DENY_UNAVAILABLE, "carrier")]
    # With Redis up: admitted, then the port fails, and the slot goes back for the next dial.
    ledger = workers()
    outbound.policy = DialPolicy(ledger=ledger)
    for _ in range(2):
        with pytest.raises(OSError, match="stand-in"):
            await outbound.dial("sip:+15550100001@127.0.0.1:5099", trunk="carrier")
        await ledger.flush()
        assert await workers.redis.zcard(trunk_key("carrier", "active")) == 0
    assert media.opened == 2
