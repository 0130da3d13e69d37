"""Outbound dispatch lands on a worker with room, whichever worker is asked; none with room is 503."""

from __future__ import annotations

import pytest

from tests.interop.conftest import free_port, sipp_messages
from tests.interop.test_outbound import dispatch_body, outbound_config

from tests.support import cluster_workers
from tests.support.cluster_workers import call_worker, callee, request, wait_until, workers_of

cluster, redis_server, postgres_cluster = (cluster_workers.cluster, cluster_workers.redis_server,  # fixtures
                                           cluster_workers.postgres_cluster)

pytestmark = pytest.mark.interop


def test_dispatch_to_a_full_worker_lands_on_the_one_with_room(cluster, tmp_path):
    uas_port = free_port()
    trunk = outbound_config(uas_port)
    a = cluster.start_worker("A", max_calls=1, extra=trunk)
    b = cluster.start_worker("B", max_calls=1, extra=trunk)
    # A is full: one live inbound call of its one.
    caller = call_worker(a, tmp_path / "caller", free_port())
    ringing = callee(tmp_path / "callee", "outbound_no_answer.xml", uas_port)
    try:
        wait_until(lambda: workers_of(b)["A"]["active_calls"] == 1, timeout=10, what="A full, as B sees it")

        status, body, _ = request(a, "POST", "/api/dispatch", dispatch_body(uas_port, ringing_timeout=6))
        assert status == 201, body  # B's answer, relayed by A
        call_id = body["call_id"]
        status, record, _ = request(a, "GET", f"/api/calls/{call_id}")
        assert status == 200 and record["worker"] == "B" and record["direction"] == "outbound", record
        wait_until(lambda: "INVITE sip:" in sipp_messages(ringing.cwd), timeout=5, what="the INVITE at the callee")

        # Both full now: asked anywhere, no worker has room.
        wait_until(lambda: workers_of(b)["B"]["active_calls"] == 1, timeout=5, what="B's beat counting its call")
        status, body, headers = request(b, "POST", "/api/dispatch", dispatch_body(uas_port))
        assert status == 503 and "no worker has room" in body["error"], body
        assert headers.get("retry-after") == "2"

        returncode, output = ringing.finish()
        assert returncode == 0, output  # rang, then B's CANCEL at the ringing timeout
        final = wait_until(lambda: (r := request(a, "GET", f"/api/calls/{call_id}")[1])["status"] == "hangup" and r,
                           timeout=5, what="the unanswered call ended")
        assert final["end_reason"] == "no_answer"
        assert sum(1 for c in request(a, "GET", "/api/calls")[1]["calls"] if c["direction"] == "outbound") == 1
    finally:
        ringing.kill()
        caller.kill()


def test_on_a_tie_the_asked_worker_places_the_call_itself(cluster, tmp_path):
    uas_port = free_port()
    trunk = outbound_config(uas_port)
    a = cluster.start_worker("A", max_calls=2, extra=trunk)
    b = cluster.start_worker("B", max_calls=2, extra=trunk)
    wait_until(lambda: workers_of(a).keys() == {"A", "B"}, timeout=5, what="both registered")
    for asked, lands in ((a, "A"), (b, "B")):  # the same room on both: no hop
        ringing = callee(tmp_path / f"callee-{asked.http_port}", "outbound_no_answer.xml", uas_port)
        try:
            status, body, _ = request(asked, "POST", "/api/dispatch",
                                      dispatch_body(uas_port, ringing_timeout=1, wait_until_answered=True))
            assert status == 201 and body["end_reason"] == "no_answer", body
            assert request(a, "GET", f"/api/calls/{body['call_id']}")[1]["worker"] == lands
            assert ringing.finish()[0] == 0
        finally:
            ringing.kill()
