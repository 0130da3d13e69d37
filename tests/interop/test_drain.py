"""Graceful drain of a real ``callbridge serve`` process, measured from SIPp and the stored records.

SIGTERM (or POST /api/drain) while calls are up: new INVITEs and OPTIONS get 503, /healthz says
"draining", the live calls run to their own end, and the process exits 0 with every record
complete. A second SIGTERM, or server.drain_deadline_s, ends the calls still up with BYE, which
SIPp must receive. Before this change SIGTERM hung up every call at once with end_reason "error":
each test below fails on that (the callers' own BYE, the 503s, the end reasons, the timing).
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from .conftest import RunningServer
from .worker_peers import finished, healthz, sipp_once, sipp_started, stored_calls

pytestmark = pytest.mark.interop

EXIT_TIMEOUT_S = 20.0


def calls_up(server: RunningServer, count: int) -> None:
    server.wait_for(lambda: healthz(server)[1].get("active_calls") == count, timeout=15, what=f"{count} calls up")


def draining(server: RunningServer) -> dict:
    status, body, retry_after = server.wait_for(lambda: (h := healthz(server))[1].get("status") == "draining" and h,
                                                timeout=10, what="draining")
    assert status == 503 and retry_after is not None and retry_after.isdigit(), (status, retry_after)
    return body


def exit_code(server: RunningServer) -> int:
    try:
        return server.process.wait(timeout=EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the server did not exit after the drain:\n{server.log_tail()}") from None


def assert_complete(records: list[dict], count: int, end_reason: str) -> None:
    assert len(records) == count, records
    for record in records:
        assert record["status"] == "hangup" and record["end_reason"] == end_reason, record
        assert record["answered_at"] is not None and record["ended_at"] is not None, record
        assert record["events"][-1]["type"] == "ended", record["events"][-3:]


def test_sigterm_refuses_new_calls_and_exits_when_the_live_ones_end(server_factory, tmp_path):
    server = server_factory()
    callers = sipp_started(server, tmp_path, "callers", calls=2, extra=["-l", "2", "-d", "6000"])
    try:
        calls_up(server, 2)
        server.process.send_signal(signal.SIGTERM)
        assert draining(server)["active_calls"] == 2
        code, output = sipp_once(server, tmp_path, "late-invite", scenario="uac_expect_503.xml")
        assert code == 0, output
        code, output = sipp_once(server, tmp_path, "late-options", scenario="options_expect_503.xml")
        assert code == 0, output
        assert server.process.poll() is None, "exited while calls were up"
    finally:
        code, output = finished(callers, timeout=30)
    assert code == 0, output  # both calls ended by SIPp's own BYE, answered 200
    assert exit_code(server) == 0
    assert_complete(stored_calls(server), 2, "caller_hangup")


def test_post_api_drain_needs_the_token_and_drains(server_factory, tmp_path):
    server = server_factory()
    caller = sipp_started(server, tmp_path, "caller", extra=["-d", "5000"])
    try:
        calls_up(server, 1)
        url = f"http://127.0.0.1:{server.http_port}/api/drain"
        with pytest.raises(urllib.error.HTTPError) as refused:  # attack: no token
            urllib.request.urlopen(urllib.request.Request(url, data=b"{}", method="POST"), timeout=5)
        assert refused.value.code == 401
        bad = urllib.request.Request(url, data=b"drain!", method="POST",
                                     headers={**server.auth, "Content-Type": "text/plain"})
        with pytest.raises(urllib.error.HTTPError) as refused:  # a cross-site form post
            urllib.request.urlopen(bad, timeout=5)
        assert refused.value.code == 415
        status, body, _ = healthz(server)
        assert (status, body["status"]) == (200, "ok"), body  # refused requests began no drain
        status, body = server.post("/api/drain", {})
        assert (status, body) == (202, {"draining": True, "active_calls": 1})
        assert server.post("/api/drain", {"again": [1, 2]}) == (202, {"draining": True, "active_calls": 1})
        draining(server)
        code, output = sipp_once(server, tmp_path, "options", scenario="options_expect_503.xml")
        assert code == 0, output
        # Outbound too: a draining worker places no new call (a cluster sends the dial elsewhere).
        request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/api/calls", method="POST",
                                         data=b'{"to": "sip:someone@127.0.0.1:5999"}',
                                         headers={**server.auth, "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 503 and refused.value.headers["Retry-After"].isdigit()
        assert healthz(server)[1]["active_calls"] == 1  # nothing was dialled
    finally:
        code, output = finished(caller, timeout=30)
    assert code == 0, output
    assert exit_code(server) == 0
    assert_complete(stored_calls(server), 1, "caller_hangup")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])  # SIGINT: the cluster launcher's Ctrl-C
def test_second_signal_sends_bye_at_once(server_factory, tmp_path, sig):
    server = server_factory()
    callers = sipp_started(server, tmp_path, "callers", calls=2, scenario="uac_wait_bye.xml", extra=["-l", "2"])
    try:
        calls_up(server, 2)
        server.process.send_signal(sig)
        draining(server)
        time.sleep(1.0)
        assert callers.poll() is None and healthz(server)[1]["active_calls"] == 2  # the first one ends nothing
        server.process.send_signal(sig)
        code, output = finished(callers, timeout=15)
    finally:
        if callers.poll() is None:
            callers.kill()
    assert code == 0, output  # SIPp received a BYE on each call (the scenario requires it)
    assert exit_code(server) == 0
    assert_complete(stored_calls(server), 2, "shutdown")


def test_drain_deadline_ends_the_remaining_call_with_bye(server_factory, tmp_path):
    deadline = 3.0
    server = server_factory(f"server:\n  drain_deadline_s: {deadline}\n")
    caller = sipp_started(server, tmp_path, "caller", scenario="uac_wait_bye.xml")
    try:
        calls_up(server, 1)
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        draining(server)
        code, output = finished(caller, timeout=deadline + 15)
        waited = time.monotonic() - signalled
    finally:
        if caller.poll() is None:
            caller.kill()
    assert code == 0, output  # the BYE arrived
    assert deadline - 0.5 <= waited <= deadline + 8, waited  # at the deadline, not at the signal
    assert exit_code(server) == 0
    assert_complete(stored_calls(server), 1, "drain_deadline")
