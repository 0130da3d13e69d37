"""A worker killed with -9: its live calls end as worker_lost, recorded up to the crash, never "active" forever."""

from __future__ import annotations

import time

import pytest

from callbridge.app.store import CallStore
from tests.support import cluster_workers
from tests.support.cluster_workers import (HEARTBEAT_S, WORKER_TIMEOUT_S, EventStream, call_worker, live_call_on,
                                           record, request, wait_until, workers_of)
from tests.interop.conftest import free_port

cluster, redis_server, postgres_cluster = (cluster_workers.cluster, cluster_workers.redis_server,  # fixtures
                                           cluster_workers.postgres_cluster)

pytestmark = pytest.mark.interop

# The survivor notices within the timeout plus a sweep or two; a loaded machine gets generous room.
NOTICE_S = WORKER_TIMEOUT_S + 8.0


def stored(cluster, call_id: str, tmp_path) -> dict:
    store = CallStore.open(cluster.database_url, tmp_path / "reader")
    try:
        found = store.get_call(call_id)
    finally:
        store.close()
    assert found is not None
    return found


def complete(call: dict) -> dict | None:
    """The record once it is complete: its status ended and its last event written."""
    done = call["status"] == "hangup" and call["events"] and call["events"][-1]["type"] == "ended"
    return call if done else None


def assert_ended_as_lost(final: dict, before: dict, killed_at: float) -> None:
    assert (final["status"], final["end_reason"], final["worker"]) == ("hangup", "worker_lost", "B"), final
    # Every event up to the crash kept as it was, then the end the survivor wrote.
    kept = [(e["type"], e["at"]) for e in before["events"]]
    assert [(e["type"], e["at"]) for e in final["events"][:len(kept)]] == kept
    assert all(e["at"] <= killed_at for e in final["events"][len(kept):-2])  # journaled after `before`, pre-crash
    closing = final["events"][-2:]
    assert [(e["type"], e.get("status"), e.get("end_reason") or e.get("reason")) for e in closing] == [
        ("status", "hangup", "worker_lost"), ("ended", None, "worker_lost")], closing
    # Ended at B's last sign of life: before the kill, after its last heartbeat before it.
    assert killed_at - (HEARTBEAT_S + 1.5) < final["ended_at"] <= killed_at, (final["ended_at"], killed_at)
    assert final["ended_at"] >= before["answered_at"]
    assert final["talk_s"] == round(final["ended_at"] - final["answered_at"], 3)


def test_a_killed_workers_call_ends_as_worker_lost_on_the_survivor(cluster, tmp_path):
    a = cluster.start_worker("A")
    b = cluster.start_worker("B")
    stream = EventStream(a)
    caller = call_worker(b, tmp_path / "caller", free_port())
    try:
        call_id = live_call_on(a, "B")["id"]
        before = record(a, call_id)
        assert before["status"] == "active" and before["answered_at"] is not None

        b.process.kill()  # SIGKILL: no goodbye, no last event
        killed_at = time.time()
        b.process.wait(timeout=5)
        # Right after the crash B still counts as alive: an action through A cannot reach it.
        status, body, headers = request(a, "POST", f"/api/calls/{call_id}/dtmf", {"digits": "1"})
        assert status == 503 and body["worker"] == "B" and "retry-after" in headers, body

        final = wait_until(lambda: complete(record(a, call_id)), timeout=NOTICE_S,
                           what="the call ended by the survivor")
        assert_ended_as_lost(final, before, killed_at)
        noticed = time.time() - killed_at
        assert noticed < NOTICE_S, noticed

        assert_ended_as_lost(stored(cluster, call_id, tmp_path), before, killed_at)  # the store itself says so

        # The end went out on the merged stream, under B's name.
        stream.wait_for(lambda events: any(e["call_id"] == call_id and e["type"] == "ended" for e in events),
                        timeout=5, what="the end on A's stream")
        ended = [e for e in stream.of(call_id) if e["type"] in ("status", "ended")][-2:]
        assert [(e["type"], e["worker"], e["data"].get("end_reason") or e["data"].get("reason")) for e in ended] == [
            ("status", "B", "worker_lost"), ("ended", "B", "worker_lost")], ended

        listed = workers_of(a)["B"]
        assert (listed["state"], listed["alive"]) == ("lost", False) and listed["reaped_at"] is not None, listed
        status, body, _ = request(a, "POST", f"/api/calls/{call_id}/hangup")
        assert (status, body) == (200, {"status": "hangup", "end_reason": "worker_lost"})
    finally:
        caller.kill()
        stream.close()


def test_a_worker_restarted_under_its_id_ends_its_previous_lifes_calls(cluster, tmp_path):
    """No survivor at all: the crashed worker itself, started again, ends what it left "active"."""
    b = cluster.start_worker("B")
    caller = call_worker(b, tmp_path / "caller", free_port())
    try:
        call_id = live_call_on(b, "B")["id"]
        before = stored(cluster, call_id, tmp_path)  # what B's journal wrote (its memory may be ahead)
        b.process.kill()
        killed_at = time.time()
        b.process.wait(timeout=5)
        again = cluster.start_worker("B")  # waits out the old liveness key, then reaps its previous life
        final = complete(record(again, call_id))  # already ended: the restart did it before taking calls
        assert final is not None
        assert_ended_as_lost(final, before, killed_at)
        assert workers_of(again)["B"]["pid"] == again.process.pid
    finally:
        caller.kill()
