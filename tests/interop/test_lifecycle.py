"""Call records that survive: kill -9 mid-call, webhooks across a restart, and cleanup after many calls."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from callbridge.app.webhooks import SIGNATURE_HEADER, verify

from tests.support.postgres import database_url, postgres_cluster  # noqa: F401 - fixtures

from .conftest import free_port, run_sipp, start_server, stop_server
from .test_outbound import EventStream, RtpSink, dispatch_body, finish, outbound_config, run_callee

pytestmark = pytest.mark.interop

WEBHOOK_SECRET = "whsec-for-the-test-0123456789"


def test_kill_9_mid_call_keeps_every_event_the_stream_showed(server_factory, tmp_path, database_url):  # noqa: F811
    uas_port = free_port()
    config = outbound_config(uas_port, database_url=database_url)
    server = server_factory(config, ivr=True)
    sink = RtpSink()
    callee = run_callee(tmp_path, "outbound_auth_answer.xml", uas_port, sink.port, talk_ms=30000)
    stream = EventStream(server.http_port, token=server.api_token)
    restarted = None
    try:
        time.sleep(0.5)
        status, body = server.post("/api/dispatch", dispatch_body(uas_port, dtmf="5"))
        assert status == 201, body
        call_id = body["call_id"]
        # Mid-call: answered, and the agent has said something.
        stream.wait_for(lambda: any(e["call_id"] == call_id and e["type"] == "transcript" for e in stream.events),
                        30, "the agent's first words")
        server.process.kill()  # SIGKILL: no shutdown code runs
        server.process.wait(timeout=10)
        time.sleep(0.3)  # the stream's last bytes reach our reader
        seen = [e for e in stream.events if e["call_id"] == call_id]
        stream.close()
        restarted = start_server(server.workdir, config)
        record = restarted.get(f"/api/calls/{call_id}")
    finally:
        sink.close()
        callee.kill()
        finish(callee, 5)
        if restarted is not None:
            stop_server(restarted)
    stored = record["events"]
    assert [e["status"] for e in stored if e["type"] == "status"][:3] == ["dialing", "ringing", "active"]
    # Every event a client saw is in the record, in the same place, with the same time and content.
    for event in seen:
        assert event["seq"] is not None
        kept = stored[event["seq"] - 1]
        assert kept["type"] == event["type"] and kept["at"] == pytest.approx(event["at"]), (event, kept)
        assert {k: kept[k] for k in event["data"]} == event["data"]
    assert record["dispatch"]["sip_call_to"] == "+15550102030"


class WebhookReceiver:
    def __init__(self, port: int) -> None:
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def payloads(self, event: str) -> list[dict]:
        return [json.loads(body) for headers, body in self.received if headers.get("X-Callbridge-Event") == event]


def test_webhooks_are_signed_and_delivered_after_the_receiver_comes_up_across_a_restart(server_factory, tmp_path):
    hook_port = free_port()
    config = (f"webhooks:\n  url: http://127.0.0.1:{hook_port}/hook\n  secret: {WEBHOOK_SECRET}\n")
    server = server_factory(config)
    result = run_sipp([f"127.0.0.1:{server.sip_port}", "-i", "127.0.0.1", "-p", str(free_port()), "-m", "1",
                       "-sn", "uac", "-d", "500"], cwd=tmp_path, timeout=20)
    assert result.returncode == 0, result.output
    call = server.wait_for(lambda: (c := server.calls()) and c[0]["status"] == "hangup" and c[0], what="hangup")
    stop_server(server)  # the receiver never answered: every delivery is still pending
    receiver = WebhookReceiver(hook_port)
    restarted = start_server(server.workdir, "routing:\n  default_flow: tone\n" + config)

    def statuses() -> list[str]:
        return [p["status"] for p in receiver.payloads("call.status") if p["call_id"] == call["id"]]

    try:
        # Pending deliveries go out concurrently (webhooks.BATCH_SIZE), so they may arrive
        # in any order: wait for all of them, not just the last one sent.
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and not (receiver.payloads("call.ended") and len(statuses()) >= 3):
            time.sleep(0.1)
    finally:
        stop_server(restarted)
        receiver.close()
    assert receiver.received, "no webhook arrived"
    for headers, body in receiver.received:
        assert verify(WEBHOOK_SECRET, headers[SIGNATURE_HEADER], body), headers
    assert sorted(statuses()) == sorted(["ringing", "active", "hangup"])
    ended = [p for p in receiver.payloads("call.ended") if p["id"] == call["id"]]
    assert len(ended) >= 1
    final = ended[0]
    assert final["end_reason"] == "caller_hangup" and final["status"] == "hangup"
    assert final["recording_url"] == f"/api/calls/{call['id']}/recording"
    for key in ("transcript", "ivr", "handoff", "duration_s", "talk_s", "media", "events"):
        assert key in final, key


def test_resources_return_to_baseline_after_many_calls(server_factory, tmp_path):
    uas_port = free_port()
    server = server_factory(outbound_config(uas_port))
    baseline = server.get("/healthz")
    # Inbound: five calls, one after another.
    result = run_sipp([f"127.0.0.1:{server.sip_port}", "-i", "127.0.0.1", "-p", str(free_port()), "-m", "5",
                       "-sn", "uac", "-d", "300", "-r", "5"], cwd=tmp_path, timeout=30)
    assert result.returncode == 0, result.output
    # Outbound: two unanswered dispatches.
    for _ in range(2):
        callee = run_callee(tmp_path, "outbound_no_answer.xml", uas_port)
        time.sleep(0.3)
        status, body = server.post("/api/dispatch", dispatch_body(uas_port, ringing_timeout=0.5,
                                                                  wait_until_answered=True))
        assert status == 201 and body["end_reason"] == "no_answer", body
        finish(callee, 10)

    last = []

    def settled():
        health = server.get("/healthz")
        last[:] = [health]
        return (health["active_calls"] == 0 and health["rtp_ports_in_use"] == 0 and health["call_tasks"] == 0
                and health["calls_in_memory"] == 0 and health["journal_backlog"] == 0) and health

    try:
        server.wait_for(settled, timeout=10, what="ports, tasks and memory back to baseline")
    except AssertionError:
        raise AssertionError(f"not back to baseline: {last} vs {baseline}; "
                             f"tasks now {server.get('/api/media')['asyncio_tasks']}") from None
    # Only the service's own long-lived tasks remain (the pacer starts with the first call and stays).
    names = server.get("/api/media")["asyncio_tasks"]
    assert {n for n in names if not n.startswith("Task-")} <= {"gc", "http", "journal", "media-pacer", "media-watchdog",
                                                               "retention", "webhooks"}
    assert sum(n.startswith("Task-") for n in names) <= 2, names  # the main task and this request's
    assert len(server.calls()) == 7  # all still listed, now from the store
