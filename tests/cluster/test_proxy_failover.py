"""A worker killed (-9) under steady call load behind `callbridge cluster`'s Kamailio.

Kamailio's INVITE timeout (1 s without 100 Trying) and its OPTIONS probes take the dead worker out;
every call placed more than 3 s after the kill succeeds on the survivor, as SIPp saw it. The dead
worker's calls that were up end as worker_lost once the survivor's reaper notices it is gone.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.support.postgres import postgres_cluster  # noqa: F401 - fixture

from .launch import cluster_config, finish, launch, module_dir, rtp_block, sipp_call_log, start_sipp_calls  # noqa: F401

pytestmark = pytest.mark.interop

LOAD_RATE = 4  # calls/s: bounded, ~15 s of calls
LOAD_CALLS = 60
CALL_MS = 1500
KILL_AFTER_S = 4.0
SETTLE_S = 3.0  # calls placed this long after the kill must all succeed
IN_FLIGHT_S = 0.2  # a call whose INVITE left just before the kill may have reached the victim
REAP_TIMEOUT_S = 20.0  # worker_timeout_s (2 s) plus the reaper's round, with room for a busy machine


@pytest.fixture(scope="module")
def cluster(module_dir, postgres_cluster):  # noqa: F811 - the imported fixture
    run = launch(module_dir, cluster_config(postgres_cluster.create_database(), rtp_base=rtp_block()))
    yield run
    finish(run)


def test_kill_9_under_load_new_calls_succeed_on_the_survivor(cluster, tmp_path):
    victim, survivor = cluster.worker("w2"), cluster.worker("w1")
    load = start_sipp_calls(cluster, tmp_path, calls=LOAD_CALLS, rate=LOAD_RATE, duration_ms=CALL_MS, limit=30,
                            timeout=90)
    try:
        time.sleep(KILL_AFTER_S)
        assert load.poll() is None, "SIPp ended before the kill"
        killed_at = time.time()
        os.kill(victim["pid"], signal.SIGKILL)
        load.wait(timeout=120)
    finally:
        if load.poll() is None:
            load.kill()
    calls = sipp_call_log(tmp_path)
    assert len(calls) == LOAD_CALLS, len(calls)
    before = [c for c in calls.values() if c.started < killed_at]
    after = [c for c in calls.values() if c.started > killed_at + SETTLE_S]
    assert len(before) >= 10 and len(after) >= 20, (len(before), len(after))
    failed = [(round(c.started - killed_at, 2), c.responses) for c in after if not c.succeeded]
    assert not failed, f"calls placed over {SETTLE_S} s after the kill failed: {failed}"
    # Stricter: no call placed after the kill fails. In its first 1.5 s no probe can have found the
    # worker dead yet, so round robin still offers it calls: each must fail over to the survivor
    # when no 100 Trying comes within 1 s (t_set_fr), not fail.
    placed_after = [c for c in calls.values() if c.started > killed_at + IN_FLIGHT_S]
    failed = [(round(c.started - killed_at, 2), c.responses) for c in placed_after if not c.succeeded]
    assert not failed, f"calls placed after the kill failed: {failed}"
    assert {c.ack_target.rsplit(":", 1)[1].split(";")[0] for c in after} == {str(survivor["sip_port"])}

    # The store agrees: every call after the kill is the survivor's.
    records = {r["sip_call_id"]: r for r in cluster.calls("w1")}
    assert {records[c.call_id]["worker"] for c in after} == {"w1"}

    # The victim's calls that were up when it died end as worker_lost; those that had ended keep their reason.
    def victims_settled():
        mine = [r for r in cluster.calls("w1") if r["worker"] == "w2"]
        return mine if mine and all(r["status"] == "hangup" for r in mine) else None

    victims = cluster.wait_for(victims_settled, timeout=REAP_TIMEOUT_S, what="the dead worker's calls to end")
    reasons = {r["end_reason"] for r in victims}
    lost = [r for r in victims if r["end_reason"] == "worker_lost"]
    assert reasons <= {"caller_hangup", "worker_lost"} and lost, reasons
    for record in lost:  # up when the worker died: answered before the kill, not ended before it
        assert record["answered_at"] is not None and record["answered_at"] < killed_at + 1, record

    # The launcher said so (it does not hide a dead worker).
    deaths = [json.loads(line) for line in cluster.err_path.read_text().splitlines()
              if line.startswith("{") and "exited unexpectedly" in line]
    assert [(d["worker"], d["pid"], d["returncode"]) for d in deaths] == [("w2", victim["pid"], -9)], deaths
