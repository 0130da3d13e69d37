"""An outbound trunk created over the API carries a dispatched call to a SIPp carrier, and outlives a restart."""

from __future__ import annotations

import time

import pytest

from .conftest import free_port, stop_server
from .test_outbound import RtpSink, finish, run_callee

pytestmark = pytest.mark.interop

# What scenarios/outbound_auth_answer.xml checks: its digest credentials and an X-Campaign header.
TRUNK_USER, TRUNK_PASS = "carrier", "s3cret-pass"


def api_trunk(uas_port: int) -> dict:
    return {"name": "api-carrier", "host": "127.0.0.1", "port": uas_port, "username": TRUNK_USER,
            "password": TRUNK_PASS, "numbers": ["+15550003333"], "headers": {"X-Campaign": "spring"}}


def test_api_trunk_dispatches_a_call_and_survives_a_restart(server_factory, tmp_path):
    uas_port = free_port()
    # No trunks in the file: the one the call uses exists only through the API.
    server = server_factory("", ivr=True)
    status, created = server.post("/api/trunks/outbound", api_trunk(uas_port))
    assert status == 201, created
    assert created["source"] == "api" and created["password"] == "***"

    sink = RtpSink()
    callee = run_callee(tmp_path, "outbound_auth_answer.xml", uas_port, sink.port, talk_ms=2000)
    try:
        time.sleep(0.5)  # let SIPp bind
        status, body = server.post("/api/dispatch", {
            "agent_name": "assistant",
            "metadata": {"sip_call_to": "+15550102030", "sip_trunk_id": "api-carrier",
                         "participant_identity": "customer-1"}})
        assert status == 201, body
        output = finish(callee)
    finally:
        sink.close()
    # SIPp verified the digest answer made with the API trunk's password, and its X-Campaign header.
    assert callee.returncode == 0, output
    call = server.wait_for(lambda: (c := server.get(f"/api/calls/{body['call_id']}"))["status"] == "hangup" and c,
                           what="the call's final record")
    assert call["trunk"] == "api-carrier" and call["caller"] == "+15550003333"
    assert call["answered_at"] is not None and call["end_reason"] == "caller_hangup"
    assert len(sink.packets) > 0, "no media reached the callee"

    data_dir = server.workdir / "data"
    stop_server(server)
    # Secrets at rest: the database (and its WAL) holds the password only sealed.
    stored = [path for path in data_dir.rglob("callbridge.db*") if path.is_file()]
    assert stored and not any(TRUNK_PASS.encode() in path.read_bytes() for path in stored)
    restarted = server_factory("", ["--data-dir", str(data_dir)])
    listed = {t["name"]: t for t in restarted.get("/api/trunks")["outbound"]}
    assert listed["api-carrier"]["source"] == "api" and listed["api-carrier"]["port"] == uas_port
    assert listed["api-carrier"]["password"] == "***"
    # Still usable after the restart: a dispatch names it without a 422 (nobody answers; it is cancelled).
    status, again = restarted.post("/api/dispatch", {
        "agent_name": "assistant",
        "metadata": {"sip_call_to": "+15550102030", "sip_trunk_id": "api-carrier",
                     "participant_identity": "customer-1", "ringing_timeout": 1}})
    assert status == 201, again
