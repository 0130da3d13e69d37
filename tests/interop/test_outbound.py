"""Dispatched outbound calls against a SIPp carrier: digest auth, ringing, DTMF, the agent, the event stream."""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import pytest

from callbridge.media.codecs.g711 import ULAW_DECODE_TABLE

from tests.support.postgres import database_url, postgres_cluster  # noqa: F401 - fixtures

from tests.support.sse import SseClient as EventStream  # noqa: F401 - other tests import it from here

from .conftest import SCENARIOS, free_port, start_sipp
from .rtp_capture import RtpCapture

pytestmark = pytest.mark.interop

AGENT = "assistant"  # the demo line's agent (config defaults)
TRUNK_USER, TRUNK_PASS = "carrier", "s3cret-pass"
TELEPHONE_EVENT_PT = 96  # what the SIPp scenario offers: the server must honour it
EVENT_NAMES = "0123456789*#"


def outbound_config(uas_port: int, *, database_url: str | None = None,  # noqa: F811 - callers pass it by the name
                    extra: str = "") -> str:
    text = f"""
outbound_trunks:
  - name: carrier
    host: 127.0.0.1
    port: {uas_port}
    username: {TRUNK_USER}
    password: {TRUNK_PASS}
    numbers: ["+15550001111"]
"""
    if database_url:
        text += f"database:\n  url: {database_url}\n"
    return text + extra


def dispatch_body(uas_port: int, **metadata) -> dict:
    return {"agent_name": AGENT, "room_name": "room-1",
            "metadata": {"sip_call_to": "+15550102030", "sip_trunk_id": "carrier",
                         "participant_identity": "customer-1", **metadata}}


class RtpSink(RtpCapture):
    """Stands in for the callee's media port, and reads the digits and voice the server sent there."""

    def digits(self) -> str:
        """RFC 4733 §2.3: one event per RTP timestamp; take each timestamp's event code once."""
        seen: dict[int, str] = {}
        for packet in self.packets:
            code = packet.payload[0] if packet.payload else None
            if packet.payload_type == TELEPHONE_EVENT_PT and code is not None and packet.timestamp not in seen:
                seen[packet.timestamp] = EVENT_NAMES[code] if code < len(EVENT_NAMES) else "?"
        return "".join(seen[t] for t in sorted(seen))

    def voice_rms_after_dtmf(self) -> float:
        last_event = max((p.arrival for p in self.packets if p.payload_type == TELEPHONE_EVENT_PT), default=0.0)
        audio = b"".join(p.payload for p in self.packets if p.payload_type == 0 and p.arrival > last_event)
        if not audio:
            return 0.0
        pcm = ULAW_DECODE_TABLE[np.frombuffer(audio, dtype=np.uint8)].astype(np.float64)
        return float(np.sqrt(np.mean(pcm ** 2)))


def run_callee(tmp_path, scenario: str, uas_port: int, rtp_port: int | None = None, talk_ms: int = 6000):
    media = ["-set", "rtp_port", str(rtp_port)] if rtp_port is not None else []
    return start_sipp(["-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(uas_port), "-m", "1",
                       *media, "-d", str(talk_ms), "-timeout", "40", "-timeout_error"], cwd=tmp_path)


def finish(process, timeout: float = 40.0) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return output


def test_outbound_call_with_auth_dtmf_agent_and_remote_bye(server_factory, tmp_path, database_url):  # noqa: F811
    uas_port = free_port()
    server = server_factory(outbound_config(uas_port, database_url=database_url), ivr=True)
    sink = RtpSink()
    callee = run_callee(tmp_path, "outbound_auth_answer.xml", uas_port, sink.port, talk_ms=7000)
    stream = EventStream(server.http_port, token=server.api_token)
    try:
        time.sleep(0.5)  # let SIPp bind
        status, body = server.post("/api/dispatch", dispatch_body(uas_port, dtmf="1234#", order_number="A-1001",
                                                                  headers={"X-Campaign": "spring"}))
        assert status == 201, body
        call_id = body["call_id"]
        assert body["participant_identity"] == "customer-1" and body["room_name"] == "room-1"
        output = finish(callee)
    finally:
        sink.close()
    assert callee.returncode == 0, output  # verifyauth accepted our digest answer; X-Campaign was there
    stream.wait_for(lambda: "hangup" in stream.statuses(call_id), 10, "hangup on the event stream")
    stream.close()
    assert stream.statuses(call_id) == ["dialing", "ringing", "active", "hangup"]
    assert sink.digits() == "1234#"
    assert sink.voice_rms_after_dtmf() > 300, "the agent should have spoken after the digits"
    call = server.wait_for(lambda: (c := server.get(f"/api/calls/{call_id}"))["status"] == "hangup" and c,
                           what="final record")
    assert call["end_reason"] == "caller_hangup"  # the remote party (here the callee) hung up
    assert call["direction"] == "outbound" and call["trunk"] == "carrier" and call["caller"] == "+15550001111"
    assert call["handoff"]["agent"] == AGENT and call["handoff"]["variables"]["order_number"] == "A-1001"
    assert call["dispatch"]["participant_identity"] == "customer-1"
    assert any(e["type"] == "dtmf_sent" and e["digits"] == "1234#" for e in call["events"])
    assert any(entry.get("role") == "agent" for entry in call["transcript"])
    health = server.get("/healthz")
    assert health["rtp_ports_in_use"] == 0 and health["active_calls"] == 0


def test_unanswered_call_is_cancelled_at_the_ringing_timeout(server_factory, tmp_path):
    uas_port = free_port()
    server = server_factory(outbound_config(uas_port))
    callee = run_callee(tmp_path, "outbound_no_answer.xml", uas_port)
    time.sleep(0.5)
    started = time.monotonic()
    status, body = server.post("/api/dispatch", dispatch_body(uas_port, ringing_timeout=1.5,
                                                              wait_until_answered=True))
    waited = time.monotonic() - started
    assert status == 201, body
    assert body["status"] == "hangup" and body["end_reason"] == "no_answer", body
    assert 1.4 < waited < 8, waited
    output = finish(callee)
    assert callee.returncode == 0, output  # SIPp got the CANCEL it requires
    call = server.get(f"/api/calls/{body['call_id']}")
    assert call["end_reason"] == "no_answer" and call["answered_at"] is None
    assert [e["status"] for e in call["events"] if e["type"] == "status"] == ["dialing", "ringing", "hangup"]


def test_max_call_duration_ends_the_call_with_bye(server_factory, tmp_path):
    uas_port = free_port()
    server = server_factory(outbound_config(uas_port), ivr=True)
    sink = RtpSink()
    # The callee would stay 20 s; the limit is 3 s, so the BYE comes from us (SIPp then fails its own BYE).
    callee = run_callee(tmp_path, "outbound_auth_answer.xml", uas_port, sink.port, talk_ms=20000)
    try:
        time.sleep(0.5)
        status, body = server.post("/api/dispatch", dispatch_body(uas_port, max_call_duration=3))
        assert status == 201, body
        call = server.wait_for(lambda: (c := server.get(f"/api/calls/{body['call_id']}"))["status"] == "hangup" and c,
                               timeout=15, what="hangup at the time limit")
    finally:
        sink.close()
        callee.kill()
        finish(callee, 5)
    events = [(e["type"], e.get("status") or e.get("detail") or e.get("role")) for e in call["events"]]
    assert call["end_reason"] == "timeout", events
    assert 2.5 < call["ended_at"] - call["answered_at"] < 5
    assert server.get("/healthz")["rtp_ports_in_use"] == 0


def test_bad_dispatch_requests_get_422_naming_the_field(server_factory):
    server = server_factory(outbound_config(free_port()))
    cases = [
        ({"agent_name": "nobody", "metadata": dispatch_body(0)["metadata"]}, "agent_name"),
        (dispatch_body(0, sip_trunk_id="x"), "metadata.sip_trunk_id"),
        (dispatch_body(0, sip_call_to="5550102030"), "metadata.sip_call_to"),
        (dispatch_body(0, sip_call_to="sip:"), "metadata.sip_call_to"),
        ({"agent_name": AGENT, "metadata": {"sip_trunk_id": "carrier", "participant_identity": "p"}},
         "metadata.sip_call_to"),
        (dispatch_body(0, participant_identity=None), "metadata.participant_identity"),
        (dispatch_body(0, ringing_timeout="soon"), "metadata.ringing_timeout"),
        (dispatch_body(0, max_call_duration=-1), "metadata.max_call_duration"),
        (dispatch_body(0, wait_until_answered="yes"), "metadata.wait_until_answered"),
        (dispatch_body(0, dtmf="12x"), "metadata.dtmf"),
        (dispatch_body(0, headers={"Via": "evil"}), "metadata.headers.Via"),
        ({"agent_name": AGENT}, "metadata"),
    ]
    for body, field in cases:
        status, reply = server.post("/api/dispatch", body)
        assert status == 422, (body, reply)
        assert reply["field"] == field, (body, reply)
        assert reply["reason"]
    status, reply = server.post("/api/dispatch", dispatch_body(0, sip_trunk_id="x"))
    assert reply["reason"] == "unknown trunk 'x'"
    assert server.calls() == []


def test_api_needs_the_bearer_token_when_configured(server_factory):
    token = "t0ken-for-the-test-0123456789"
    server = server_factory(outbound_config(free_port(), extra=f"api:\n  token: {token}\n"))
    for path in ("/api/calls", "/api/events", "/api/media"):
        request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}")
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(request, timeout=5)
        assert denied.value.code == 401
        assert denied.value.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/api/calls",
                                   headers={"Authorization": "Bearer wrong"})
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(wrong, timeout=5)
    assert denied.value.code == 401 and 'error="invalid_token"' in denied.value.headers["WWW-Authenticate"]
    good = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/api/calls",
                                  headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(good, timeout=5) as response:
        assert json.loads(response.read())["calls"] == []
    # Health stays open for load balancers; metrics need the token (Prometheus: authorization.credentials_file).
    assert server.get("/healthz")["status"] == "ok"
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics", timeout=5)
    assert denied.value.code == 401
    metrics = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(metrics, timeout=5) as response:
        text = response.read().decode()
    assert "callbridge_active_calls 0" in text and "callbridge_agent_session_renewals_total 0" in text
