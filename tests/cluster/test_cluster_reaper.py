"""Survivors racing to reap one dead worker, on a real redis-server and a real store: each call ends once."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from callbridge.app.cluster import keys
from callbridge.app.cluster.reaper import Reaper
from callbridge.app.cluster.registry import Registry, WorkerInfo
from callbridge.app.cluster.relay import Relay
from callbridge.app.events import EventBus
from callbridge.app.store import AsyncCallStore, CallStore
from tests.support.redis import RedisServer

HEARTBEAT = 1_700_000_100.0


@pytest.fixture
def redis_url(tmp_path):
    server = RedisServer.start(tmp_path / "redis")
    yield server.url
    server.stop()


@pytest.fixture
async def store(tmp_path):
    opened = AsyncCallStore(CallStore.open(None, tmp_path / "db"))
    yield opened
    await opened.close()


async def a_call(store: AsyncCallStore, call_id: str, worker: str | None, *, at: float = 1_700_000_000.0) -> None:
    await store.append_event(call_id, "status", {"status": "ringing"}, at)
    await store.append_event(call_id, "status", {"status": "active"}, at + 1)
    await store.save_call({"id": call_id, "direction": "inbound", "status": "active", "created_at": at,
                           "answered_at": at + 1, "worker": worker, "events": [], "transcript": []})


def survivor(url: str, name: str, store: AsyncCallStore) -> tuple[Reaper, EventBus, Redis]:
    redis = Redis.from_url(url)
    bus = EventBus(name)
    registry = Registry(redis, name, f"instance-{name}", timeout_s=2.0)
    return Reaper(redis, registry, store, bus=bus, relay=Relay(redis, redis, bus, name)), bus, redis


async def test_one_survivor_reaps_a_dead_worker_and_each_call_ends_once(redis_url, store):
    for call_id in ("c1", "c2"):
        await a_call(store, call_id, "dead")
    await store.save_call({"id": "done", "direction": "inbound", "status": "hangup", "end_reason": "caller_hangup",
                           "created_at": 1.0, "worker": "dead", "events": [], "transcript": []})
    setup = Redis.from_url(redis_url)
    info = WorkerInfo(id="dead", pid=1, instance="old", api_url="http://127.0.0.1:1", sip_uri="sip:127.0.0.1:1",
                      active_calls=2, capacity=4, draining=False, heartbeat=HEARTBEAT, started_at=HEARTBEAT - 60)
    await setup.hset(keys.worker("dead"), mapping=info.to_hash())
    await setup.zadd(keys.WORKERS, {"dead": HEARTBEAT, "live": time.time()})
    await setup.set(keys.alive("live"), "x", px=60_000)  # alive: never reaped, whatever it owns
    await setup.sadd(keys.owned("live"), "c3")
    await a_call(store, "c3", "live")
    await setup.sadd(keys.owned("dead"), "c1", "c2", "done")
    for call_id in ("c1", "c2", "done"):
        await setup.set(keys.call(call_id), "dead")

    survivors = [survivor(redis_url, name, store) for name in ("s1", "s2", "s3")]
    subscriptions = [bus.subscribe() for _, bus, _ in survivors]
    results = await asyncio.gather(*(reaper.sweep() for reaper, _, _ in survivors for _ in range(3)))
    assert sum(results) == 2  # c1 and c2, by whichever survivor held the lock; "done" had ended already

    for call_id in ("c1", "c2"):
        record = await store.get_call(call_id)
        assert (record["status"], record["end_reason"], record["ended_at"]) == ("hangup", "worker_lost", HEARTBEAT)
        assert [(e["type"], e.get("status")) for e in record["events"]] == [
            ("status", "ringing"), ("status", "active"), ("status", "hangup"), ("ended", None)]
    assert (await store.get_call("done"))["end_reason"] == "caller_hangup"
    assert (await store.get_call("c3"))["status"] == "active"
    # The ends went on the reaper's merged stream once, under the dead worker's name.
    published = [s.queue.get_nowait() for s in subscriptions for _ in range(s.queue.qsize())]
    assert sorted((e.call_id, e.type, e.worker) for e in published) == [
        ("c1", "ended", "dead"), ("c1", "status", "dead"), ("c2", "ended", "dead"), ("c2", "status", "dead")]
    # Redis forgets the dead worker's calls, and lists it as lost.
    assert await setup.exists(keys.owned("dead"), keys.call("c1"), keys.call("c2")) == 0
    assert await setup.hget(keys.worker("dead"), "state") == b"lost"
    assert await setup.smembers(keys.owned("live")) == {b"c3"}
    assert await setup.exists(keys.reaping("dead")) == 0  # the lock was let go
    for _, _, redis in survivors:
        await redis.aclose()
    await setup.aclose()


async def test_a_worker_redis_never_knew_is_reaped_from_the_store(redis_url, store):
    """Redis restarted empty (or the ownership never reached it): the store still names the worker."""
    await a_call(store, "orphan", "gone")
    await store.append_event("orphan", "dtmf", {"digit": "5"}, 1_700_000_007.5)
    await a_call(store, "solo", None)  # a single process's call: no worker, not the cluster's to end
    reaper, _, redis = survivor(redis_url, "s1", store)
    assert await reaper.sweep() == 0  # Redis alone does not know it
    assert await reaper.sweep(check_store=True) == 0  # a suspect: a live worker would be back within a beat
    assert reaper.store_suspects == {"gone"}
    assert await reaper.sweep(check_store=True) == 1  # still dead: reaped
    record = await store.get_call("orphan")
    assert (record["status"], record["end_reason"]) == ("hangup", "worker_lost")
    assert record["ended_at"] == 1_700_000_007.5  # no heartbeat known: its last event
    assert (await store.get_call("solo"))["status"] == "active"

    # A worker the store names that is alive after all (it re-registered after Redis lost it) is left alone.
    await a_call(store, "back", "returned")
    assert await reaper.sweep(check_store=True) == 0 and reaper.store_suspects == {"returned"}
    await redis.set(keys.alive("returned"), "x", px=60_000)
    assert await reaper.sweep(check_store=True) == 0
    assert (await store.get_call("back"))["status"] == "active"
    await redis.aclose()
