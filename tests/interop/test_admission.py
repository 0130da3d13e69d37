"""A full worker answers OPTIONS as it answers INVITE: 503 with Retry-After, seen by SIPp.

A proxy's dispatcher probes workers with OPTIONS; one that says 200 to OPTIONS but 503 to
INVITE flaps up and down (docs: Kamailio notes). Before this change OPTIONS got 200 at
max_calls, so options_expect_503.xml failed.
"""

from __future__ import annotations

import pytest

from .worker_peers import finished, healthz, sipp_once, sipp_started

pytestmark = pytest.mark.interop


def test_full_worker_answers_options_and_invite_503_then_admits_again(server_factory, tmp_path):
    server = server_factory("server:\n  max_calls: 1\n")
    holder = sipp_started(server, tmp_path, "holder", extra=["-d", "8000"])  # one call, up for 8 s
    try:
        status, body, retry_after = server.wait_for(lambda: (h := healthz(server))[1].get("active_calls") == 1 and h,
                                                    timeout=15, what="the first call up")
        assert (status, body["status"], retry_after) == (503, "full", "10"), body
        code, output = sipp_once(server, tmp_path, "options", scenario="options_expect_503.xml")
        assert code == 0, output
        code, output = sipp_once(server, tmp_path, "invite", scenario="uac_expect_503.xml")
        assert code == 0, output
        assert healthz(server)[1]["active_calls"] == 1  # the refused INVITE left no call behind
    finally:
        code, output = finished(holder, timeout=30)
    assert code == 0, output  # the live call ran to its end untouched
    status, body, _ = server.wait_for(lambda: (h := healthz(server))[0] == 200 and h, timeout=10, what="room again")
    assert body["status"] == "ok" and body["active_calls"] == 0, body
    code, output = sipp_once(server, tmp_path, "options-after", scenario="options.xml")
    assert code == 0, output  # 200 once a slot is free
    refused = [c for c in server.calls() if c["status"] != "hangup" or c["end_reason"] != "caller_hangup"]
    assert refused == [], refused
