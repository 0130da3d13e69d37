"""SIPp drives a real ``callbridge serve`` process: the acceptance tests of the SIP foundation."""

from __future__ import annotations

import time

import pytest

from .conftest import SCENARIOS, free_port, run_sipp, start_sipp

pytestmark = pytest.mark.interop

AUTH_CONFIG = """
inbound_trunks:
  - name: office
    auth: {username: alice, password: s3cret, realm: callbridge}
"""


def sipp_uac(server, tmp_path, *extra: str, scenario: str | None = None, service: str = "demo"):
    args = [f"127.0.0.1:{server.sip_port}", "-i", "127.0.0.1", "-p", str(free_port()), "-m", "1", "-s", service]
    args += ["-sf", str(SCENARIOS / scenario)] if scenario else ["-sn", "uac"]
    return run_sipp(args + list(extra), cwd=tmp_path, timeout=30)


def only_call(server) -> dict:
    calls = server.calls()
    assert len(calls) == 1, calls
    return calls[0]


def test_builtin_uac_call_over_udp(server, tmp_path):
    result = sipp_uac(server, tmp_path, "-d", "1000")
    assert result.returncode == 0, result.output
    call = server.wait_for(lambda: (c := only_call(server))["status"] == "hangup" and c, what="hangup")
    assert call["end_reason"] == "caller_hangup"
    assert call["answered_at"] is not None
    # The demo line plays a paced tone: about 50 packets a second while up.
    assert call["media"]["packets_sent"] >= 30
    # Ringing, the INVITE, the demo line's route, then answered: in the order they happened.
    assert [e["type"] for e in call["events"]][:4] == ["status", "invite", "route", "status"]
    assert [e["status"] for e in call["events"] if e["type"] == "status"][:2] == ["ringing", "active"]


def test_builtin_uac_call_over_tcp(server, tmp_path):
    result = sipp_uac(server, tmp_path, "-t", "t1", "-d", "500")
    assert result.returncode == 0, result.output
    call = server.wait_for(lambda: (c := only_call(server))["status"] == "hangup" and c, what="hangup")
    assert call["end_reason"] == "caller_hangup"
    assert "tcp:" in next(e["source"] for e in call["events"] if e["type"] == "invite")


def test_digest_auth_right_password_succeeds(server_factory, tmp_path):
    server = server_factory(AUTH_CONFIG)
    result = sipp_uac(server, tmp_path, "-au", "alice", "-ap", "s3cret", scenario="uac_auth.xml")
    assert result.returncode == 0, result.output
    call = server.wait_for(lambda: (c := only_call(server))["status"] == "hangup" and c, what="hangup")
    assert call["answered_at"] is not None and call["trunk"] == "office"


def test_digest_auth_wrong_password_is_rejected(server_factory, tmp_path):
    server = server_factory(AUTH_CONFIG)
    result = sipp_uac(server, tmp_path, "-au", "alice", "-ap", "wrong", scenario="uac_auth_rejected.xml")
    assert result.returncode == 0, result.output  # the scenario itself expects the 403
    assert server.calls() == []  # no call was ever created


def test_digest_auth_required_when_trunk_has_credentials(server_factory, tmp_path):
    server = server_factory(AUTH_CONFIG)
    result = sipp_uac(server, tmp_path, "-d", "200")  # plain uac cannot answer the 401
    assert result.returncode != 0
    assert "401" in result.output
    assert server.calls() == []


def test_retransmitted_invite_is_absorbed(server_factory, tmp_path):
    server = server_factory("server:\n  ring_seconds: 1.0\n")
    result = sipp_uac(server, tmp_path, scenario="uac_retransmit.xml")
    assert result.returncode == 0, result.output
    call = server.wait_for(lambda: (c := only_call(server))["status"] == "hangup" and c, what="hangup")
    assert call["end_reason"] == "caller_hangup"
    assert sum(1 for e in call["events"] if e["type"] == "invite") == 1


def test_cancel_during_ringing(server_factory, tmp_path):
    server = server_factory("server:\n  ring_seconds: 5.0\n")
    result = sipp_uac(server, tmp_path, scenario="uac_cancel.xml")
    assert result.returncode == 0, result.output
    call = server.wait_for(lambda: (c := only_call(server))["status"] == "hangup" and c, what="hangup")
    assert call["end_reason"] == "caller_hangup" and call["answered_at"] is None


def test_options_gets_200(server, tmp_path):
    result = sipp_uac(server, tmp_path, scenario="options.xml")
    assert result.returncode == 0, result.output


def test_server_sends_refer_and_completes_transfer(server, tmp_path):
    uas_port = free_port()
    uas = start_sipp(["-sf", str(SCENARIOS / "uas_refer.xml"), "-i", "127.0.0.1", "-p", str(uas_port), "-m", "1",
                      "-timeout", "30", "-timeout_error"], cwd=tmp_path)
    try:
        time.sleep(0.5)  # let SIPp bind
        status, body = server.post("/api/calls", {"to": f"sip:callee@127.0.0.1:{uas_port}"})
        assert status == 201, body
        call_id = body["id"]
        server.wait_for(lambda: server.get(f"/api/calls/{call_id}")["status"] == "active", what="answer")
        status, _ = server.post(f"/api/calls/{call_id}/transfer", {"target": "sip:operator@127.0.0.1:5099"})
        assert status == 202
        output, _ = uas.communicate(timeout=30)
    finally:
        if uas.poll() is None:
            uas.kill()
    assert uas.returncode == 0, output
    call = server.wait_for(lambda: (c := server.get(f"/api/calls/{call_id}"))["status"] == "hangup" and c,
                           what="hangup")
    assert call["end_reason"] == "transfer"
    progress = [e for e in call["events"] if e["type"] == "refer_progress"]
    assert progress[-1]["status"] == 200 and progress[-1]["final"]


def test_malformed_message_gets_400_and_server_survives(server, tmp_path):
    import socket

    broken = (
        "INVITE sip:demo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-bad\r\n"
        "From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:demo@127.0.0.1>\r\nCall-ID: bad-1\r\nCSeq: 1 INVITE\r\n"
        "Max-Forwards: 70\r\nContent-Length: 999\r\n\r\nshort"
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.bind(("127.0.0.1", 0))
        sock.sendto(b"\x00\x01garbage that is not SIP", ("127.0.0.1", server.sip_port))
        sock.sendto(broken, ("127.0.0.1", server.sip_port))
        reply, _ = sock.recvfrom(4096)
    assert reply.startswith(b"SIP/2.0 400")
    # Still serving calls afterwards.
    result = sipp_uac(server, tmp_path, "-d", "200")
    assert result.returncode == 0, result.output
