"""One API on every worker: a call running on worker B is listed, read, acted on and watched through A.

SIPp is the caller (or callee) of a call on B; what SIPp received (the BYE, the REFER, the RFC 4733
digits at its media port) is the proof that A's request reached B and B acted.
"""

from __future__ import annotations

import pytest

from tests.interop.conftest import free_port
from tests.interop.test_outbound import RtpSink

from tests.support import cluster_workers
from tests.support.cluster_workers import (EventStream, call_worker, callee, fetch, live_call_on, request,
                                           wait_until, workers_of)

cluster, redis_server, postgres_cluster = (cluster_workers.cluster, cluster_workers.redis_server,  # fixtures
                                           cluster_workers.postgres_cluster)

pytestmark = pytest.mark.interop


def test_a_call_on_b_is_read_dtmfd_hung_up_and_watched_through_a(cluster, tmp_path):
    a = cluster.start_worker("A")
    b = cluster.start_worker("B")
    stream = EventStream(a)  # A's SSE, open before the call exists
    sink = RtpSink()
    caller = call_worker(b, tmp_path / "caller", sink.port)
    try:
        listed = live_call_on(a, "B")  # A's list: live calls of every worker, from the shared store
        call_id = listed["id"]
        assert [c["id"] for c in request(a, "GET", "/api/calls?worker=B")[1]["calls"]] == [call_id]
        assert request(a, "GET", "/api/calls?worker=A")[1]["calls"] == []

        status, record, _ = request(a, "GET", f"/api/calls/{call_id}")
        assert status == 200 and record["status"] == "active" and record["worker"] == "B", record
        wait_until(lambda: workers_of(a)["B"]["active_calls"] == 1, timeout=5, what="B's heartbeat counting it")

        status, body, _ = request(a, "POST", f"/api/calls/{call_id}/dtmf", {"digits": "12#"})
        assert (status, body) == (202, {"status": "sending"})
        wait_until(lambda: sink.digits() == "12#", timeout=5, what="the digits at SIPp's media port")

        status, body, _ = request(a, "POST", f"/api/calls/{call_id}/hangup")
        assert status == 200 and body == {"status": "hangup", "end_reason": "agent_hangup"}, body
        returncode, output = caller.finish()
        assert returncode == 0, output  # the scenario requires the BYE

        # A's SSE carried B's call, in order, named after B.
        stream.wait_for(lambda events: any(e["call_id"] == call_id and e["type"] == "ended" for e in events),
                        timeout=10, what="the call's end on A's stream")
        events = stream.of(call_id)
        assert {e["worker"] for e in events} == {"B"}
        assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
        types = [e["type"] for e in events]
        assert "dtmf_sent" in types and types[-1] == "ended", types
        assert [e["data"]["status"] for e in events if e["type"] == "status"] == ["ringing", "active", "hangup"]
        # Each event once: B's relay, not A's journal (A neither stored nor re-published it).
        assert len(types) == len({e["seq"] for e in events})

        final = wait_until(lambda: (r := request(a, "GET", f"/api/calls/{call_id}")[1])["status"] == "hangup" and r,
                           timeout=5, what="the final record through A")
        assert final["end_reason"] == "agent_hangup" and final["worker"] == "B"
        # The recording is a file on B's disk: A fetches it from B.
        status, headers, wav = fetch(a, f"/api/calls/{call_id}/recording")
        assert status == 200 and headers["content-type"] == "audio/wav", (status, headers)
        assert headers["x-callbridge-worker"] == "B" and wav[:4] == b"RIFF" and len(wav) > 8000
        assert not any((a.workdir / "data" / "recordings").glob("*.wav"))  # A has no recording of its own
        # Hanging up an ended call through A says how it ended (the store answers; nothing to forward).
        status, body, _ = request(a, "POST", f"/api/calls/{call_id}/hangup")
        assert status == 200 and body == {"status": "hangup", "end_reason": "agent_hangup"}, body
    finally:
        caller.kill()
        sink.close()
        stream.close()


def test_a_call_on_b_is_transferred_through_a(cluster, tmp_path):
    a = cluster.start_worker("A")
    b = cluster.start_worker("B")
    uas_port = free_port()
    referee = callee(tmp_path / "callee", "uas_refer.xml", uas_port)
    try:
        wait_until(lambda: workers_of(b).keys() == {"A", "B"}, timeout=5, what="both workers registered")
        status, body, _ = request(b, "POST", "/api/calls", {"to": f"sip:callee@127.0.0.1:{uas_port}"})
        assert status == 201, body
        call_id = body["id"]
        record = wait_until(lambda: (r := request(a, "GET", f"/api/calls/{call_id}")[1]).get("status") == "active"
                            and r, timeout=10, what="the call answered, read through A")
        assert record["worker"] == "B", record  # both idle: B kept the call it was asked to place

        status, body, _ = request(a, "POST", f"/api/calls/{call_id}/transfer",
                                  {"target": "sip:operator@127.0.0.1:5099"})
        assert (status, body) == (202, {"status": "transferring"})
        returncode, output = referee.finish()
        assert returncode == 0, output  # the REFER to the operator came (the scenario checks Refer-To), then BYE
        final = wait_until(lambda: (r := request(a, "GET", f"/api/calls/{call_id}")[1])["status"] == "hangup" and r,
                           timeout=5, what="the transferred call ended")
        assert final["end_reason"] == "transfer"
        assert [e for e in final["events"] if e["type"] == "refer_progress"][-1]["status"] == 200

        # An action on the ended call: B's own answer, relayed as it is.
        status, body, _ = request(a, "POST", f"/api/calls/{call_id}/transfer", {"target": "tel:1"})
        assert status == 409 and body["error"] == "the call has ended", body
    finally:
        referee.kill()


def test_an_action_on_an_unknown_call_is_404_on_any_worker(cluster):
    a = cluster.start_worker("A")
    status, body, _ = request(a, "POST", "/api/calls/0123456789abcdef/hangup")
    assert status == 404, body
    status, body, _ = request(a, "GET", "/api/calls/..%2F..%2Fetc/recording")
    assert status == 404, body
