"""Calls through `callbridge cluster`'s Kamailio: spread, a full worker, trunk ACLs behind the proxy, floods.

One cluster for the module (2 workers, max_calls 2 each, PostgreSQL). Two inbound trunks tell the
caller's address apart: "carrier" admits 127.0.0.5 only, "local" 127.0.0.1 only (the proxy's own
address, which the workers would see if the source header were not believed); any other address
matches no trunk and is refused with 404.
"""

from __future__ import annotations

import collections
import re
import socket

import pytest

from tests.interop.conftest import SCENARIOS as INTEROP_SCENARIOS
from tests.interop.conftest import free_port, run_sipp, sipp_messages, start_sipp
from tests.support.postgres import postgres_cluster  # noqa: F401 - fixture

from .launch import (SCENARIOS, cluster_config, finish, free_port_block, launch, module_dir,  # noqa: F401 - fixture
                     rtp_block, sipp_call_log, sipp_calls, start_sipp_calls)

pytestmark = pytest.mark.interop

UP_TIMEOUT_S = 10.0  # a worker marked down comes back at the next 2 s probe that it answers 200
FLOOD_LIMIT = {"flood_requests": 20, "flood_window_s": 2}  # 10 requests/s per address


@pytest.fixture(scope="module")
def callee_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def cluster(module_dir, postgres_cluster, callee_port):  # noqa: F811 - the imported fixture
    block = free_port_block(6)
    sip_port, http_port = block, block + 3
    config = cluster_config(
        postgres_cluster.create_database(), rtp_base=rtp_block(), server={"max_calls": 2}, cluster=FLOOD_LIMIT,
        inbound_trunks=[{"name": "carrier", "allowed_cidrs": ["127.0.0.5/32"]},
                        {"name": "local", "allowed_cidrs": ["127.0.0.1/32"]}],
        # Outbound calls leave through the cluster's own Kamailio.
        outbound_trunks=[{"name": "pstn", "host": "127.0.0.1", "port": callee_port, "numbers": ["+15550001111"],
                          "outbound_proxy": f"sip:127.0.0.1:{sip_port}"}],
        agents=[{"name": "assistant"}, {"name": "bot", "provider": "holding", "dispatch": "explicit"}])
    run = launch(module_dir, config, ports=(sip_port, http_port))
    yield run
    finish(run)


def settled(cluster) -> None:
    """Every worker up in Kamailio's view and no call left up: each test starts from here."""
    cluster.wait_for(lambda: not [c for c in cluster.calls() if c["status"] not in ("hangup", "failed")],
                     timeout=30, what="no live calls")
    cluster.wait_for(lambda: all(f == "AP" for f in cluster.dispatcher_flags().values()),
                     timeout=UP_TIMEOUT_S, what="every worker up in dispatcher.list")


def records_by_sip_call_id(cluster) -> dict[str, dict]:
    return {c["sip_call_id"]: c for c in cluster.calls()}


def worker_of_contact(cluster, uri: str) -> str:
    """Which worker a SIP URI (the 200's Contact, where SIPp's ACK went) belongs to."""
    port = int(uri.rsplit(":", 1)[1].split(";")[0])
    return next(w["worker_id"] for w in cluster.workers if w["sip_port"] == port)


def test_calls_through_the_proxy_land_on_both_workers(cluster, tmp_path):
    settled(cluster)
    result = sipp_calls(cluster, tmp_path, calls=12, rate=6, limit=2, duration_ms=300)
    assert result.returncode == 0, result.output
    calls = sipp_call_log(tmp_path)
    assert len(calls) == 12 and all(c.succeeded for c in calls.values()), calls
    records = cluster.wait_for(lambda: (r := records_by_sip_call_id(cluster)) and
                               all(r.get(i, {}).get("status") == "hangup" for i in calls) and r,
                               timeout=15, what="12 finished records")
    landed = collections.Counter()
    for call_id, call in calls.items():
        record = records[call_id]
        # SIPp's ACK followed the route to the worker's Contact: the same worker the record names.
        assert worker_of_contact(cluster, call.ack_target) == record["worker"], (call, record["worker"])
        assert record["end_reason"] == "caller_hangup" and record["trunk"] == "local", record
        landed[record["worker"]] += 1
    # Round robin: both workers, about half each (a missed probe may skew it a little).
    assert set(landed) == {"w1", "w2"} and min(landed.values()) >= 3, landed


def test_a_full_worker_answers_503_and_the_call_goes_to_the_other(cluster, tmp_path):
    settled(cluster)
    hold = start_sipp_calls(cluster, tmp_path / "hold", calls=3, rate=10, limit=3, duration_ms=6000)
    try:
        active = cluster.wait_for(lambda: len(a := [c for c in cluster.calls() if c["status"] == "active"]) == 3 and a,
                                  timeout=10, what="3 held calls")
        per_worker = collections.Counter(c["worker"] for c in active)
        full = next(w for w, n in per_worker.items() if n == 2)  # max_calls 2
        other = next(w["worker_id"] for w in cluster.workers if w["worker_id"] != full)
        full_sip_port = cluster.worker(full)["sip_port"]

        # Straight to the full worker: 503 with Retry-After, as SIPp received it.
        (tmp_path / "direct").mkdir()
        direct = run_sipp([f"127.0.0.1:{full_sip_port}", "-sf", str(INTEROP_SCENARIOS / "uac_expect_503.xml"),
                           "-s", "service", "-i", "127.0.0.1", "-p", str(free_port()), "-m", "1"],
                          cwd=tmp_path / "direct", timeout=20)
        assert direct.returncode == 0, direct.output

        # Through the proxy, two calls one after the other (each waits until the proxy sees the other
        # worker up again: with the held call it is full while a call is up). Before each, the operator
        # command marks the full worker active again, as if no probe had seen it full yet: round robin
        # offers one of the two calls to it, it answers 503, and the proxy fails over to the other
        # worker within the transaction. Without failover one of the two calls would fail.
        other_uri, full_uri = cluster.worker(other)["sip_uri"], cluster.worker(full)["sip_uri"]
        landed = []
        for attempt in range(2):
            cluster.wait_for(lambda: cluster.dispatcher_flags()[other_uri] == "AP", timeout=UP_TIMEOUT_S,
                             what=f"{other} up again")
            cluster.kamcmd("dispatcher.set_state", "ap", "1", full_uri)
            cwd = tmp_path / f"through{attempt}"
            result = sipp_calls(cluster, cwd, calls=1, rate=1, limit=1, duration_ms=200)
            assert result.returncode == 0, result.output
            (call,) = sipp_call_log(cwd).values()
            assert call.succeeded, call
            record = cluster.wait_for(lambda c=call: records_by_sip_call_id(cluster).get(c.call_id), timeout=10,
                                      what="the record")
            landed.append((record["worker"], worker_of_contact(cluster, call.ack_target)))
        assert landed == [(other, other), (other, other)], (full, landed)
    finally:
        hold.wait(timeout=30)
    assert hold.returncode == 0, hold.stdout.read() if hold.stdout else ""


def spoofed(cluster, cwd, *, local_ip: str, target_port: int, claimed: str):
    cwd.mkdir()
    return run_sipp([f"127.0.0.1:{target_port}", "-sf", str(SCENARIOS / "uac_spoofed_source.xml"), "-s", "service",
                     "-i", local_ip, "-p", str(free_port()), "-m", "1", "-set", "source", claimed], cwd=cwd, timeout=20)


def test_trunk_acl_sees_the_caller_behind_the_proxy(cluster, tmp_path):
    settled(cluster)
    # From the carrier's address through the proxy: admitted, on the carrier trunk (not "local",
    # which is what the proxy's own address would match).
    result = sipp_calls(cluster, tmp_path / "carrier", calls=1, rate=1, limit=1, duration_ms=200, local_ip="127.0.0.5")
    assert result.returncode == 0, result.output
    (call_id,) = sipp_call_log(tmp_path / "carrier")
    record = cluster.wait_for(lambda: records_by_sip_call_id(cluster).get(call_id), timeout=10, what="the record")
    assert record["trunk"] == "carrier", record

    # From an address no trunk admits, through the proxy: refused (SIPp saw the 404).
    refused = sipp_calls(cluster, tmp_path / "stranger", calls=1, rate=1, limit=1, duration_ms=200,
                         local_ip="127.0.0.6")
    assert refused.returncode != 0
    (stranger,) = sipp_call_log(tmp_path / "stranger").values()
    assert stranger.invite_final == 404, refused.output

    # The stranger claims the carrier's address itself: the proxy replaces the header, so still 404.
    through = spoofed(cluster, tmp_path / "spoof-proxy", local_ip="127.0.0.6", target_port=cluster.sip_port,
                      claimed="127.0.0.5;port=5060;proto=udp")
    assert through.returncode == 0, through.output
    # And straight to a worker, from an address that is not the trusted proxy: the header is ignored.
    direct = spoofed(cluster, tmp_path / "spoof-direct", local_ip="127.0.0.6",
                     target_port=cluster.worker("w1")["sip_port"], claimed="127.0.0.5;port=5060;proto=udp")
    assert direct.returncode == 0, direct.output
    assert all(r["trunk"] != "carrier" or r["sip_call_id"] == call_id for r in cluster.calls())


def test_the_proxy_is_no_open_relay(cluster, tmp_path):
    """A stranger's INVITE for another host, routed through the proxy, gets 403 and reaches nobody."""
    settled(cluster)
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind(("127.0.0.1", 0))
    victim.settimeout(1.0)
    victim_port = victim.getsockname()[1]
    before = {r["id"] for r in cluster.calls()}
    cwd = tmp_path / "relay"
    cwd.mkdir()
    try:
        result = run_sipp([f"127.0.0.1:{cluster.sip_port}", "-sf", str(SCENARIOS / "uac_relay_attempt.xml"),
                           "-i", "127.0.0.6", "-p", str(free_port()), "-m", "1",
                           "-set", "victim", f"127.0.0.1:{victim_port}", "-trace_msg"], cwd=cwd, timeout=20)
        assert result.returncode == 0, result.output  # SIPp's own check: the proxy answered 403
        with pytest.raises(TimeoutError):  # the victim's address received nothing at all
            victim.recvfrom(65535)
    finally:
        victim.close()
    assert {r["id"] for r in cluster.calls()} == before  # and no worker took it as a call


def test_a_flood_is_dropped_by_the_proxy_but_a_trunk_address_is_exempt(cluster, tmp_path):
    settled(cluster)

    def flood(local_ip: str) -> tuple[int, int]:
        """(answered, sent) for 150 OPTIONS at 100/s from ``local_ip``, as SIPp counted them."""
        cwd = tmp_path / local_ip
        cwd.mkdir()
        run_sipp([f"127.0.0.1:{cluster.sip_port}", "-sf", str(SCENARIOS / "options_proxy.xml"), "-i", local_ip,
                  "-p", str(free_port()), "-m", "150", "-r", "100", "-l", "150", "-trace_shortmsg"], cwd=cwd,
                 timeout=30)
        calls = sipp_call_log(cwd).values()
        return sum(1 for c in calls if c.final("OPTIONS") == 200), len(calls)

    # 150 OPTIONS at 100/s against a limit of 20 per 2 s: from a stranger most are dropped...
    answered, sent = flood("127.0.0.7")
    assert sent == 150 and answered < 75, (answered, sent)
    # ...from the carrier trunk's address every one is answered.
    answered, sent = flood("127.0.0.5")
    assert (answered, sent) == (150, 150)
    # Calls from the carrier still go through while the stranger is blocked.
    result = sipp_calls(cluster, tmp_path / "call", calls=1, rate=1, limit=1, duration_ms=200, local_ip="127.0.0.5")
    assert result.returncode == 0, result.output



def test_a_call_over_tcp_and_a_hangup_by_the_worker_both_go_through_the_proxy(cluster, tmp_path):
    settled(cluster)
    # TCP to the proxy (it relays to the worker over UDP; the double Record-Route keeps both legs right).
    tcp = sipp_calls(cluster, tmp_path / "tcp", calls=1, rate=1, limit=1, duration_ms=200, transport="t1")
    assert tcp.returncode == 0, tcp.output
    (call,) = sipp_call_log(tmp_path / "tcp").values()
    assert call.succeeded
    record = cluster.wait_for(lambda: records_by_sip_call_id(cluster).get(call.call_id), timeout=10, what="record")
    assert "tcp:" in next(e["source"] for e in record["events"] if e["type"] == "invite"), record["events"][:3]

    # The worker hangs up (API): its BYE follows the route set back through Kamailio to SIPp.
    cwd = tmp_path / "bye"
    cwd.mkdir()
    caller = start_sipp([f"127.0.0.1:{cluster.sip_port}", "-sf", str(SCENARIOS / "uac_proxied_until_bye.xml"),
                         "-s", "service", "-i", "127.0.0.1", "-p", str(free_port()), "-m", "1", "-trace_shortmsg",
                         "-timeout", "40", "-timeout_error"], cwd=cwd)
    try:
        live = cluster.wait_for(lambda: next((c for c in cluster.calls() if c["status"] == "active"), None),
                                timeout=10, what="the live call")
        status, body = cluster.request(cluster.worker(live["worker"])["api_url"], f"/api/calls/{live['id']}/hangup",
                                       method="POST", body={})
        assert status in (200, 202), body
        caller.wait(timeout=30)
    finally:
        if caller.poll() is None:
            caller.kill()
    assert caller.returncode == 0, caller.stdout.read() if caller.stdout else ""
    ended = cluster.wait_for(lambda: (r := records_by_sip_call_id(cluster).get(live["sip_call_id"])) and
                             r["status"] == "hangup" and r, timeout=10, what="the hung-up record")
    assert ended["end_reason"] == "agent_hangup", ended["end_reason"]  # ours, not the caller's


def test_an_outbound_call_leaves_through_the_proxy_and_its_bye_comes_back_through_it(cluster, callee_port,
                                                                                      tmp_path):
    settled(cluster)
    callee = start_sipp(["-sf", str(SCENARIOS / "callee_proxied.xml"), "-i", "127.0.0.1", "-p", str(callee_port),
                         "-m", "1", "-d", "1000", "-trace_msg", "-timeout", "40", "-timeout_error"], cwd=tmp_path)
    try:
        status, body = cluster.request(cluster.worker("w1")["api_url"], "/api/dispatch", method="POST", body={
            "agent_name": "bot", "room_name": "room-1",
            "metadata": {"sip_call_to": "+15550102030", "sip_trunk_id": "pstn", "participant_identity": "c-1"}})
        assert status in (200, 201, 202), body
        callee.wait(timeout=40)
    finally:
        if callee.poll() is None:
            callee.kill()
    assert callee.returncode == 0, (callee.stdout.read() if callee.stdout else "") + cluster.logs()
    messages = sipp_messages(tmp_path)
    invite = messages[messages.index("INVITE sip:"):]
    invite = invite[:invite.index("\n\n")]
    # The callee got the INVITE from Kamailio (its Via on top, its Record-Route), not from a worker.
    via = next(line for line in invite.splitlines() if line.lower().startswith("via:"))
    assert f"127.0.0.1:{cluster.sip_port}" in via, invite
    assert re.search(rf"Record-Route: <sip:127\.0\.0\.1:{cluster.sip_port};", invite), invite
    # And the worker's record says the callee hung up: its BYE came back through the proxy.
    record = cluster.wait_for(lambda: next((c for c in cluster.calls() if c["direction"] == "outbound"
                                            and c["status"] == "hangup"), None), timeout=15, what="the record")
    assert record["end_reason"] == "caller_hangup" and record["trunk"] == "pstn", record
