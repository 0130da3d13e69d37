"""No RTP port pair free: the INVITE gets 503 with Retry-After, the API says 503, and nothing leaks.

The server gets a range of exactly two RTP/RTCP pairs (ports.py hands out even ports p with p + 1 in
range), SIPp holds both with two long calls, and a third SIPp caller must see 503 Service Unavailable
with a numeric Retry-After (checked by the scenario and in SIPp's own message trace).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest

from .conftest import SCENARIOS, free_port, free_udp_block, require_tool, run_sipp, sipp_log, sipp_messages

pytestmark = pytest.mark.interop

PAIRS = 2
LONG_CALL_MS = 10000


def ports_config(rtp_min: int, callee_port: int) -> str:
    # rtp_port_max = min + 3: the pairs (min, min+1) and (min+2, min+3), no more.
    return f"""
media:
  rtp_port_min: {rtp_min}
  rtp_port_max: {rtp_min + 2 * PAIRS - 1}
outbound_trunks:
  - name: carrier
    host: 127.0.0.1
    port: {callee_port}
    numbers: ["+15550001111"]
"""


def start_sipp_calls(server, cwd: Path, *args: str) -> subprocess.Popen:
    """SIPp in the background, its screen output to a file (a pipe nobody reads could fill up)."""
    cwd.mkdir(parents=True, exist_ok=True)
    command = [require_tool("sipp"), f"127.0.0.1:{server.sip_port}", "-i", "127.0.0.1", "-p", str(free_port()),
               "-mp", str(free_udp_block(4)), "-s", "1000", "-nostdin", "-trace_err", *args]
    with (cwd / "sipp.out").open("w") as out:
        return subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


def auth(server) -> dict[str, str]:
    # The API token header, where the test harness knows one (RunningServer.auth).
    return dict(getattr(server, "auth", {}))


def post(server, path: str, body: dict) -> tuple[int, dict, Message]:
    """POST JSON: (status, body, headers), HTTP errors returned rather than raised."""
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **auth(server)}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), exc.headers


def metrics(server) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/metrics", headers=auth(server))
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


def ended_count(text: str, reason: str) -> float:
    pattern = rf'^callbridge_calls_ended_total{{direction="inbound",end_reason="{reason}"}} (\S+)$'
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def sipp_call_id(process: subprocess.Popen, number: int = 1) -> str:
    return f"{number}-{process.pid}@127.0.0.1"  # SIPp's [call_id]


def test_no_free_rtp_port_answers_503_with_retry_after_and_leaks_nothing(server_factory, tmp_path):
    server = server_factory(ports_config(free_udp_block(2 * PAIRS), free_port()))
    holders = start_sipp_calls(server, tmp_path / "holders", "-sn", "uac", "-m", str(PAIRS), "-l", str(PAIRS),
                               "-r", "10", "-d", str(LONG_CALL_MS), "-timeout", "60", "-timeout_error")
    try:
        server.wait_for(lambda: server.get("/healthz")["active_calls"] == PAIRS, timeout=15,
                        what=f"{PAIRS} calls holding every RTP port")
        assert server.get("/healthz")["rtp_ports_in_use"] == PAIRS

        # The third caller: SIPp's scenario itself requires the 503 and a numeric Retry-After.
        third_dir = tmp_path / "third"
        third_dir.mkdir()
        third = run_sipp([f"127.0.0.1:{server.sip_port}", "-sf", str(SCENARIOS / "uac_expect_503.xml"),
                          "-i", "127.0.0.1", "-p", str(free_port()), "-mp", str(free_udp_block(2)), "-s", "1000",
                          "-m", "1", "-trace_msg"], cwd=third_dir, timeout=15)
        assert third.returncode == 0, third.output + server.log_tail()
        trace = sipp_messages(third_dir)
        assert re.search(r"^SIP/2\.0 503 Service Unavailable\r?$", trace, re.MULTILINE), trace
        assert re.search(r"^Retry-After: *\d+\r?$", trace, re.MULTILINE), trace
        assert "SIP/2.0 180" not in trace and "SIP/2.0 200" not in trace, trace
        call_id_header = re.search(r"^Call-ID: *(\S+)", trace, re.MULTILINE)
        assert call_id_header, trace
        third_call_id = call_id_header.group(1)

        # The refused call is on record as such; the two holders are untouched; no port was taken.
        refused = server.get(f"/api/calls?sip_call_id={third_call_id}")["calls"]
        assert len(refused) == 1, refused
        assert refused[0]["status"] == "hangup" and refused[0]["end_reason"] == "no_media_ports", refused[0]
        assert refused[0]["answered_at"] is None and refused[0]["media"] is None
        health = server.get("/healthz")
        assert health["active_calls"] == PAIRS and health["rtp_ports_in_use"] == PAIRS, health
        live = server.get("/api/calls?status=active")["calls"]
        assert sorted(c["sip_call_id"] for c in live) == sorted(sipp_call_id(holders, n) for n in (1, 2))
        server.wait_for(lambda: ended_count(metrics(server), "no_media_ports") == 1, timeout=5,
                        what="/metrics to count the refused call")

        # Placing calls while full: HTTP 503 with Retry-After, not a 500, and no call record.
        calls_before = len(server.calls())
        status, body, headers = post(server, "/api/calls", {"to": f"sip:nobody@127.0.0.1:{free_port()}"})
        assert status == 503 and "RTP port" in body["error"], (status, body)
        assert int(headers.get("Retry-After", "0")) > 0, headers
        status, body, headers = post(server, "/api/dispatch", {
            "agent_name": "assistant", "room_name": "room-1",
            "metadata": {"sip_call_to": "+15550102030", "sip_trunk_id": "carrier", "participant_identity": "p"}})
        assert status == 503 and "RTP port" in body["error"], (status, body)
        assert int(headers.get("Retry-After", "0")) > 0, headers
        assert len(server.calls()) == calls_before
        health = server.get("/healthz")
        assert health["active_calls"] == PAIRS and health["rtp_ports_in_use"] == PAIRS, health

        holders.wait(timeout=LONG_CALL_MS / 1000 + 30)
    finally:
        if holders.poll() is None:
            holders.kill()
            holders.wait()
    assert holders.returncode == 0, sipp_log(tmp_path / "holders")

    # Everything back to zero once the holders hang up.
    server.wait_for(lambda: (h := server.get("/healthz"))["active_calls"] == 0 and h["rtp_ports_in_use"] == 0,
                    timeout=10, what="no active call and no RTP port in use")
    reasons = sorted(c["end_reason"] for c in server.calls())
    assert reasons == ["caller_hangup", "caller_hangup", "no_media_ports"], reasons
    # The ports really came back: a new call is answered.
    again = run_sipp([f"127.0.0.1:{server.sip_port}", "-sn", "uac", "-i", "127.0.0.1", "-p", str(free_port()),
                      "-mp", str(free_udp_block(4)), "-s", "1000", "-m", "1", "-d", "500"],
                     cwd=tmp_path / "holders", timeout=20)
    assert again.returncode == 0, again.output
    server.wait_for(lambda: (h := server.get("/healthz"))["active_calls"] == 0 and h["rtp_ports_in_use"] == 0
                    and h["call_tasks"] == 0, timeout=10, what="the last call to end and its tasks to finish")
