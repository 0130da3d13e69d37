"""Attacks on the browser softphone's signalling (POST /api/webrtc/calls), against a real server.

Each bad offer gets a clear 4xx naming the field, and leaves nothing behind: no call up, no peer
connection holding a slot (the cap admits a new call afterwards), no task growing.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.error
import urllib.request

import pytest
from aiortc import RTCPeerConnection

pytestmark = pytest.mark.interop


def post(server, path: str, body: object, *, token: bool = True, raw: bytes | None = None) -> tuple[int, dict, dict]:
    """(status, lower-cased headers, JSON body) of a POST; HTTP errors are returned, not raised."""
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(server.auth if token else {})}
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", data=data, headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, json.loads(exc.read() or b"{}")


def browser_like_offer() -> str:
    """A real offer (aiortc's: Opus, G.722, PCMU, PCMA; ICE and DTLS attributes), no network needed."""
    async def make() -> str:
        pc = RTCPeerConnection()
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())


def offer_body(sdp: str, to: str = "tone") -> dict:
    return {"type": "offer", "sdp": sdp, "to": to}


def live_calls(server) -> int:
    return server.get("/healthz")["active_calls"]


def test_unauthenticated_offer_is_refused_by_the_guard(server_factory):
    server = server_factory()
    status, _, _ = post(server, "/api/webrtc/calls", offer_body(browser_like_offer()), token=False)
    assert status == 401
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/api/webrtc/targets")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 401
    assert live_calls(server) == 0


def test_bad_offers_get_422_naming_the_field_and_leave_nothing(server_factory):
    server = server_factory()
    tasks_before = server.get("/healthz")["asyncio_tasks"]
    good = browser_like_offer()
    no_codec = re.sub(r"^a=rtpmap:\d+ .*\r\n", "", good, flags=re.M)
    no_codec = re.sub(r"^(m=audio \d+ \S+) .*$", r"\1 120", no_codec, flags=re.M) + "a=rtpmap:120 x-nothing/8000\r\n"
    video_only = good.replace("m=audio ", "m=video ")
    cases = [
        ({"type": "offer", "to": "tone"}, "sdp", None),  # missing
        (offer_body(12345), "sdp", None),  # not a string
        (offer_body("hello, I am not SDP"), "sdp", None),  # garbage
        (offer_body("v=0\r\nm=audio 9 RTP/AVP 0\r\n" + "a=x\r\n" * 20_000), "sdp", "too_large"),  # > 64 KiB
        (offer_body(video_only), "sdp", "no_audio"),
        (offer_body(no_codec), "sdp", "not_acceptable"),
        (offer_body("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n\x00\xff"),
         "sdp", None),  # truncated: no ICE credentials, no fingerprint
        ({"type": "answer", "sdp": good, "to": "tone"}, "type", None),
        (offer_body(good, to=""), "to", None),
        (offer_body(good, to="x" * 1000), "to", None),
        ([1, 2, 3], "sdp", None),  # not an object
    ]
    for body, field, reason in cases:
        status, _, answer = post(server, "/api/webrtc/calls", body)
        assert status == 422, (body if len(str(body)) < 300 else field, status, answer)
        assert answer["field"] == field, answer
        if reason is not None:
            assert answer.get("reason") == reason, answer
    status, _, answer = post(server, "/api/webrtc/calls", None, raw=b"{not json")
    assert status in (400, 422), answer
    assert live_calls(server) == 0
    time.sleep(0.5)  # peer connections closed by the refusals finish closing
    assert server.get("/healthz")["asyncio_tasks"] <= tasks_before + 2
    assert "Traceback" not in server.log_path.read_text()


def test_unknown_target_is_404_and_targets_lists_the_line(server_factory):
    server = server_factory()
    targets = server.get("/api/webrtc/targets")
    assert targets["enabled"] is True
    assert targets["targets"][0] == {"to": "tone", "flow": "tone", "kind": "flow"}
    status, _, answer = post(server, "/api/webrtc/calls", offer_body(browser_like_offer(), to="no-such-line"))
    assert status == 404 and answer["field"] == "to", answer
    assert live_calls(server) == 0


def test_cap_refuses_the_next_browser_call_and_a_peer_that_never_connects_is_dropped(server_factory):
    server = server_factory("webrtc:\n  max_calls: 1\n  connect_timeout_s: 1.5\n")
    # Offers whose sender never does ICE: the server answers, then waits for a connection that never comes.
    status, _, first = post(server, "/api/webrtc/calls", offer_body(browser_like_offer()))
    assert status == 201, first
    status, headers, refused = post(server, "/api/webrtc/calls", offer_body(browser_like_offer()))
    assert status == 503 and refused["reason"] == "full", refused
    assert int(headers["retry-after"]) > 0
    # A browser leg has no REFER and no re-INVITE: transfer and hold are refused, not a 500.
    for action, body in (("transfer", {"target": "sip:operator@127.0.0.1"}), ("hold", {})):
        status, answer = server.post(f"/api/calls/{first['call_id']}/{action}", body)
        assert status == 409 and "error" in answer, (action, status, answer)
    record = server.wait_for(lambda: (r := server.get(f"/api/calls/{first['call_id']}"))["status"] == "hangup" and r,
                             timeout=10, what="the unconnected call dropped")
    assert record["end_reason"] == "failed" and record["source"] == "webrtc"
    assert [e["detail"] for e in record["events"] if e["type"] == "end_detail"] == ["webrtc_connect_timeout"]
    # Its slot is free again: the peer connection was closed, not leaked.
    status, _, again = server.wait_for(
        lambda: (r := post(server, "/api/webrtc/calls", offer_body(browser_like_offer())))[0] == 201 and r,
        timeout=5, what="the slot came back")
    assert again["call_id"] != first["call_id"]


def test_ice_gathering_is_time_boxed(server_factory):
    # A STUN server that never answers (a bound socket nobody reads): aioice would wait 5 s for it.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        port = black_hole.getsockname()[1]
        server = server_factory(f"webrtc:\n  gather_timeout_s: 1\n  ice_servers:\n"
                                f"    - urls: ['stun:127.0.0.1:{port}']\n")
        # The page is told the same servers (it needs them to reach us from behind NAT).
        assert server.get("/api/webrtc/targets")["ice_servers"] == [{"urls": [f"stun:127.0.0.1:{port}"]}]
        started = time.monotonic()
        status, headers, answer = post(server, "/api/webrtc/calls", offer_body(browser_like_offer()))
        took = time.monotonic() - started
    assert status == 503 and answer["reason"] == "ice_gathering", answer
    assert "retry-after" in headers
    assert took < 4.0, took
    assert live_calls(server) == 0
    failed = [c for c in server.calls() if c["source"] == "webrtc"]
    assert len(failed) == 1 and failed[0]["end_reason"] == "failed"


def test_a_draining_server_refuses_browser_calls(server_factory):
    server = server_factory()
    # One call up (answered, never connecting: it lives connect_timeout_s) keeps the draining server running.
    status, _, first = post(server, "/api/webrtc/calls", offer_body(browser_like_offer()))
    assert status == 201, first
    status, _, _ = post(server, "/api/drain", {})
    assert status == 202
    status, headers, answer = post(server, "/api/webrtc/calls", offer_body(browser_like_offer()))
    assert status == 503 and answer["reason"] == "draining", answer
    assert int(headers["retry-after"]) > 0
