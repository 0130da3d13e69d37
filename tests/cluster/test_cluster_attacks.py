"""Attacker-controlled inputs of a cluster: the peer mark on forwarded requests, the Redis events channel,
and Redis itself going away."""

from __future__ import annotations

import json
import time

import pytest
import redis

from callbridge.app.cluster.peerauth import HEADER as PEER_HEADER
from callbridge.app.cluster.peerauth import PeerMark
from tests.interop.conftest import free_port, run_sipp
from tests.support import cluster_workers
from tests.support.cluster_workers import (EventStream, call_worker, live_call_on, record, request, wait_until,
                                           workers_of)
from tests.support.redis import RedisServer

cluster, redis_server, postgres_cluster = (cluster_workers.cluster, cluster_workers.redis_server,  # fixtures
                                           cluster_workers.postgres_cluster)

pytestmark = pytest.mark.interop


def test_a_forged_peer_mark_is_refused_without_the_token_and_ignored_with_it(cluster, tmp_path):
    a = cluster.start_worker("A")
    b = cluster.start_worker("B")
    caller = call_worker(b, tmp_path / "caller", free_port())
    try:
        call_id = live_call_on(a, "B")["id"]
        path = f"/api/calls/{call_id}/hangup"
        # A well-formed mark, current, from a "peer" that does not hold the cluster's token.
        forged = PeerMark("not-the-cluster-token").sign("B", "POST", path, time.time())

        status, body, _ = request(a, "POST", path, headers={PEER_HEADER: forged}, auth=False)
        assert status == 401, body
        assert record(a, call_id)["status"] == "active"

        # With the token but the forged mark, A must still forward: were the mark believed, A would answer
        # from the store ("active") and B's caller would never get a BYE.
        status, body, _ = request(a, "POST", path, headers={PEER_HEADER: forged})
        assert (status, body) == (200, {"status": "hangup", "end_reason": "agent_hangup"}), body
        returncode, output = caller.finish()
        assert returncode == 0, output  # the BYE came
        assert "did not verify" in a.log_path.read_text()
    finally:
        caller.kill()


GARBAGE = [
    b"not json at all",
    b"\xff\xfe\x00 not utf-8",
    b"[" * 5000 + b"]" * 5000,  # nesting far past the decoder's limit
    b"{}",
    json.dumps({"v": 2, "via": "B", "worker": "B", "call_id": "c1", "type": "status", "at": 1.0, "data": {}}).encode(),
    json.dumps({"v": 1, "via": "B", "worker": "B", "call_id": "../../etc", "type": "status", "at": 1.0,
                "data": {}}).encode(),
    json.dumps({"v": 1, "via": "B b", "worker": "B", "call_id": "c1", "type": "status", "at": 1.0,
                "data": {}}).encode(),
    json.dumps({"v": 1, "via": "B", "worker": "B", "call_id": "c1", "type": "x" * 65, "at": 1.0,
                "data": {}}).encode(),
    json.dumps({"v": 1, "via": "B", "worker": "B", "call_id": "c1", "type": "status", "at": "soon",
                "data": {}}).encode(),
    b'{"v": 1, "via": "B", "worker": "B", "call_id": "c1", "type": "status", "at": NaN, "data": {}}',
    json.dumps({"v": 1, "via": "B", "worker": "B", "call_id": "c1", "type": "status", "at": 1.0,
                "data": ["list"]}).encode(),
    json.dumps({"v": 1, "via": "B", "worker": "B", "call_id": "c1", "type": "status", "at": 1.0, "seq": -1,
                "data": {}}).encode(),
    json.dumps({"v": 1, "via": "B", "worker": "B", "call_id": "c1", "type": "status", "at": 1.0,
                "data": {"pad": "x" * 300_000}}).encode(),  # over the size limit
]


def test_garbage_on_the_events_channel_is_dropped_and_the_stream_goes_on(cluster, tmp_path):
    a = cluster.start_worker("A")
    b = cluster.start_worker("B")
    stream = EventStream(a)
    client = redis.Redis.from_url(cluster.redis.url)
    try:
        for message in GARBAGE * 20:  # 260 messages: bounded
            client.publish("callbridge:events", message)
        # A well-formed event claiming to be about one of A's own calls: A has its own, it is ignored.
        client.publish("callbridge:events", json.dumps({"v": 1, "via": "X", "worker": "A", "call_id": "mine",
                                                        "type": "status", "at": 1.0, "data": {}}).encode())
        # B's real call still reaches A's stream.
        result = run_sipp([f"127.0.0.1:{b.sip_port}", "-sn", "uac", "-i", "127.0.0.1", "-p", str(free_port()),
                           "-m", "1", "-s", "demo", "-d", "300"], cwd=tmp_path, timeout=30)
        assert result.returncode == 0, result.output
        stream.wait_for(lambda events: any(e["type"] == "ended" for e in events), timeout=10,
                        what="B's call on A's stream")
        assert {(e["worker"], e["call_id"]) for e in stream.events} == {("B", stream.events[0]["call_id"])}
        log = a.log_path.read_text()
        assert "dropped a malformed message" in log
        # Throttled: one line per interval, with a count of the rest, however many arrive.
        assert log.count("dropped a malformed message") <= 2, log.count("dropped a malformed message")
        assert request(a, "GET", "/healthz")[0] == 200
    finally:
        client.close()
        stream.close()


def test_redis_lost_and_back_calls_go_on_and_the_worker_rejoins(cluster, tmp_path):
    a = cluster.start_worker("A")
    port = cluster.redis.port
    cluster.redis.stop()
    # Without Redis a call still works end to end on its worker, and its record is kept.
    (tmp_path / "during").mkdir()
    result = run_sipp([f"127.0.0.1:{a.sip_port}", "-sn", "uac", "-i", "127.0.0.1", "-p", str(free_port()),
                       "-m", "1", "-s", "demo", "-d", "500"], cwd=tmp_path / "during", timeout=30)
    assert result.returncode == 0, result.output
    first = wait_until(lambda: (c := request(a, "GET", "/api/calls")[1]["calls"]) and c[0]["status"] == "hangup"
                       and c[0], timeout=5, what="the call's final record")
    assert first["end_reason"] == "caller_hangup" and first["worker"] == "A"
    # A call that starts while Redis is away, and lives on after it comes back.
    caller = call_worker(a, tmp_path / "caller", free_port())
    try:
        call_id = live_call_on(a, "A", besides=frozenset({first["id"]}))["id"]  # the store may lag the first's end
        status, body, headers = request(a, "GET", "/api/cluster/workers")
        assert status == 503 and "retry-after" in headers, body

        cluster.redis = RedisServer.start(tmp_path / "redis-again", port=port)  # empty: everything was lost
        client = redis.Redis.from_url(cluster.redis.url)
        try:
            # The worker is back in the registry, and owns its call again (written anew after the loss).
            wait_until(lambda: "A" in workers_of(a), timeout=10, what="A registered again")
            wait_until(lambda: client.get(f"callbridge:call:{call_id}") == b"A", timeout=10,
                       what="the call's ownership written again")
            assert client.smembers("callbridge:owned:A") == {call_id.encode()}
        finally:
            client.close()
        status, body, _ = request(a, "POST", f"/api/calls/{call_id}/hangup")
        assert status == 200, body
        assert caller.finish()[0] == 0
    finally:
        caller.kill()
    log = a.log_path.read_text()
    assert 0 < log.count("heartbeat failed") <= 3, log.count("heartbeat failed")  # throttled, not one per beat
