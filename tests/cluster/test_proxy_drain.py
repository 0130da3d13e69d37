"""Draining behind `callbridge cluster`'s Kamailio, and Ctrl-C on the launcher itself.

A worker told to drain (POST /api/drain) while it holds calls answers OPTIONS with 503, so the proxy's
probes take it out: new calls go to the other worker, its own calls end normally, and it exits 0. Then
Ctrl-C on the launcher while calls are up: they still end normally (the proxy outlives the workers'
drain); a second Ctrl-C makes the workers hang up the rest; the launcher exits 0 and no process it
started is left.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import yaml

from tests.interop.conftest import free_port, start_sipp
from tests.support.postgres import postgres_cluster  # noqa: F401 - fixture

from .launch import (SCENARIOS, cluster_config, finish, launch, module_dir, pid_alive,  # noqa: F401 - fixture
                     rtp_block, sipp_call_log, sipp_calls, start_sipp_calls)

pytestmark = pytest.mark.interop

HOLD_MS = 6000
DOWN_TIMEOUT_S = 10.0  # a probe every 2 s; one 503 marks the worker down


@pytest.fixture(scope="module")
def cluster(module_dir, postgres_cluster):  # noqa: F811 - the imported fixture
    run = launch(module_dir, cluster_config(postgres_cluster.create_database(), rtp_base=rtp_block()))
    yield run
    finish(run)


def launcher_events(cluster, text: str) -> list[dict]:
    return [json.loads(line) for line in cluster.err_path.read_text().splitlines()
            if line.startswith("{") and text in line]


def test_a_drained_worker_gets_no_new_calls_finishes_its_own_and_exits_0(cluster, tmp_path):
    drained, other = cluster.worker("w1"), cluster.worker("w2")
    hold = start_sipp_calls(cluster, tmp_path / "hold", calls=4, rate=10, limit=4, duration_ms=HOLD_MS)
    try:
        held = cluster.wait_for(lambda: len(a := [c for c in cluster.calls() if c["status"] == "active"]) == 4 and a,
                                timeout=10, what="4 held calls")
        held_on_drained = [c for c in held if c["worker"] == "w1"]
        assert len(held_on_drained) == 2, held  # round robin

        status, body = cluster.request(drained["api_url"], "/api/drain", method="POST", body={})
        assert status == 202, body
        cluster.wait_for(lambda: cluster.dispatcher_flags()[drained["sip_uri"]] == "IP",
                         timeout=DOWN_TIMEOUT_S, what="Kamailio to mark the draining worker down")

        # New calls while it drains: every one on the other worker.
        result = sipp_calls(cluster, tmp_path / "new", calls=6, rate=5, limit=3, duration_ms=300)
        assert result.returncode == 0, result.output
        new_calls = sipp_call_log(tmp_path / "new")
        assert len(new_calls) == 6 and all(c.succeeded for c in new_calls.values()), new_calls
        records = {r["sip_call_id"]: r for r in cluster.calls("w2")}
        assert {records[i]["worker"] for i in new_calls} == {"w2"}
        assert {c.ack_target for c in new_calls.values()} == {f"sip:callbridge@127.0.0.1:{other['sip_port']}"}
        assert pid_alive(drained["pid"])  # still up: its calls are
    finally:
        hold.wait(timeout=30)
    # Its own calls ended as the caller ended them (SIPp's BYEs were answered), then it exited 0.
    assert hold.returncode == 0, hold.stdout.read() if hold.stdout else ""
    cluster.wait_for(lambda: not pid_alive(drained["pid"]), timeout=15, what="the drained worker to exit")
    ended = {r["id"]: r for r in cluster.calls("w2")}
    assert {ended[c["id"]]["end_reason"] for c in held_on_drained} == {"caller_hangup"}
    exits = cluster.wait_for(lambda: launcher_events(cluster, "worker w1 (pid"), timeout=5, what="the launcher's log")
    assert [(e["worker"], e["pid"], e["returncode"], e["level"]) for e in exits] == [
        ("w1", drained["pid"], 0, "warning")], exits


def test_ctrl_c_drains_live_calls_a_second_ctrl_c_ends_them_then_everything_stops(cluster, tmp_path):
    # Kamailio's children too: every pid of the cluster must be gone afterwards.
    kamailio_children = [int(p) for p in subprocess.run(["pgrep", "-P", str(cluster.state["kamailio_pid"])],
                                                        capture_output=True, text=True).stdout.split()]
    assert kamailio_children
    # One caller hangs up by itself after 3 s; the other stays until the far end hangs up.
    short = start_sipp_calls(cluster, tmp_path / "short", calls=1, rate=1, limit=1, duration_ms=3000)
    (tmp_path / "long").mkdir()
    long = start_sipp([f"127.0.0.1:{cluster.sip_port}", "-sf", str(SCENARIOS / "uac_proxied_until_bye.xml"),
                       "-s", "service", "-i", "127.0.0.1", "-p", str(free_port()), "-m", "1", "-trace_shortmsg",
                       "-timeout", "40", "-timeout_error"], cwd=tmp_path / "long")
    try:
        cluster.wait_for(lambda: sum(c["status"] == "active" for c in cluster.calls("w2")) == 2, timeout=10,
                         what="2 live calls")
        cluster.process.send_signal(signal.SIGINT)  # Ctrl-C: drain
        # The short call ends as its caller ends it: its BYE still goes through the proxy to the worker.
        short.wait(timeout=15)
        assert short.returncode == 0, short.stdout.read() if short.stdout else ""
        time.sleep(1.0)
        assert cluster.process.poll() is None and long.poll() is None  # the long call holds the drain open
        cluster.process.send_signal(signal.SIGINT)  # Ctrl-C again: the workers end their calls now
        long.wait(timeout=20)
        returncode = cluster.process.wait(timeout=30)
    finally:
        for sipp in (short, long):
            if sipp.poll() is None:
                sipp.kill()
    # The worker's BYE reached the caller through the proxy, which was still up.
    assert long.returncode == 0, long.stdout.read() if long.stdout else ""
    assert returncode == 0, cluster.logs()
    left = [pid for pid in cluster.pids() + kamailio_children if pid_alive(pid)]
    assert not left, left
    reasons = {r["sip_call_id"]: r["end_reason"] for r in _records_after_stop(cluster)}
    (short_id,) = sipp_call_log(tmp_path / "short")
    (long_id,) = sipp_call_log(tmp_path / "long")
    assert (reasons[short_id], reasons[long_id]) == ("caller_hangup", "shutdown"), reasons


def _records_after_stop(cluster) -> list[dict]:
    """The cluster is gone: read the shared PostgreSQL store directly."""
    import psycopg

    url = yaml.safe_load((cluster.workdir / "cluster.yaml").read_text())["database"]["url"]
    with psycopg.connect(url) as connection:
        rows = connection.execute("SELECT sip_call_id, end_reason FROM calls").fetchall()
    return [{"sip_call_id": sip_call_id, "end_reason": end_reason} for sip_call_id, end_reason in rows]
