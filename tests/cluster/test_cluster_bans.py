"""Login bans across real workers sharing Redis (app/cluster/bans.py): a guesser banned by one worker gets
no answers from any; a lift on any worker lifts it everywhere; forged bans in Redis are dropped."""

from __future__ import annotations

import re
import secrets
import select
import socket
import time
from pathlib import Path

import pytest
import redis

from callbridge.app.cluster import keys
from tests.interop.conftest import SCENARIOS, free_port, run_sipp, sipp_messages
from tests.support import cluster_workers
from tests.support.cluster_workers import request, wait_until

cluster, redis_server, postgres_cluster = (cluster_workers.cluster, cluster_workers.redis_server,  # fixtures
                                           cluster_workers.postgres_cluster)

pytestmark = pytest.mark.interop

ATTACKER, BYSTANDER = "127.0.0.3", "127.0.0.4"
BAN_SECONDS = 60
GUARDED = f"""
inbound_trunks:
  - name: office
    numbers: ["1001"]
    auth: {{username: alice, password: s3cret, realm: callbridge}}
security:
  auth_failures_before_backoff: 3
  auth_failures_before_ban: 3
  backoff_seconds: 0
  ban_seconds: {BAN_SECONDS}
"""
SHARE_S = 5.0  # a ban or lift reaches the other worker well within this (milliseconds when idle)


def options(worker, bind_host: str, wait: float = 1.0) -> list[int]:
    """The statuses of the answers to one OPTIONS sent from ``bind_host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((bind_host, 0))
        host, port = sock.getsockname()
        sock.sendto((f"OPTIONS sip:1001@127.0.0.1:{worker.sip_port} SIP/2.0\r\n"
                     f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
                     f"From: <sip:probe@{host}>;tag={secrets.token_hex(4)}\r\nTo: <sip:1001@127.0.0.1>\r\n"
                     f"Call-ID: {secrets.token_hex(8)}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                     "Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", worker.sip_port))
        statuses, deadline = [], time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            if select.select([sock], [], [], left)[0]:
                statuses.append(int(sock.recv(65535).split(b" ", 2)[1]))
    return statuses


def wrong_password(worker, source: str, cwd: Path, calls: int, timeout: int):
    """SIPp from ``source`` answering each 401 with the wrong password; (result, messages SIPp received)."""
    cwd.mkdir(parents=True, exist_ok=True)
    result = run_sipp([f"127.0.0.1:{worker.sip_port}", "-i", source, "-p", str(free_port()), "-m", str(calls),
                       "-s", "1001", "-sf", str(SCENARIOS / "uac_auth_rejected.xml"), "-au", "alice",
                       "-ap", "not-the-password", "-trace_msg"], cwd=cwd, timeout=timeout)
    received = re.findall(r"^SIP/2\.0 (\d{3})", sipp_messages(cwd), re.MULTILINE)
    return result, received


def bans_of(worker) -> set[tuple[str, str]]:
    status, body, _ = request(worker, "GET", "/api/security/bans")
    assert status == 200, body
    return {(ban["kind"], ban["key"]) for ban in body["bans"]}


def test_a_ban_on_one_worker_holds_on_the_other_and_a_lift_on_either_lifts_both(cluster, tmp_path):
    a = cluster.start_worker("A", extra=GUARDED)
    b = cluster.start_worker("B", extra=GUARDED)
    assert options(b, ATTACKER) == [200]  # before: B answers the attacker's address

    result, received = wrong_password(a, ATTACKER, tmp_path / "guess-a", calls=3, timeout=15)
    assert result.returncode == 0, result.output
    assert received.count("403") == 3, received  # three wrong answers: A's ban threshold
    assert options(a, ATTACKER) == []

    wait_until(lambda: {("source", ATTACKER), ("username", "alice")} <= bans_of(b), timeout=SHARE_S,
               what="B to list A's bans")
    assert options(b, ATTACKER) == []  # B never saw a failure from it, and still drops it
    assert options(b, BYSTANDER) == [200]  # only that source
    result, received = wrong_password(b, ATTACKER, tmp_path / "guess-b", calls=1, timeout=4)
    assert result.returncode != 0 and received == [], received  # the INVITE got nothing at all

    status, body, _ = request(b, "DELETE", f"/api/security/bans/source/{ATTACKER}")
    assert status == 200, body
    wait_until(lambda: ("source", ATTACKER) not in bans_of(a), timeout=SHARE_S, what="A to lift the ban")
    assert ("username", "alice") in bans_of(a)  # only what was lifted
    assert options(a, ATTACKER) == [200]
    assert options(b, ATTACKER) == [200]


def test_forged_bans_in_redis_are_dropped_and_workers_go_on(cluster):
    client = redis.Redis.from_url(cluster.redis.url)
    future = time.time() + 30
    # Keys a later worker reads at start: garbage, a ban far past any cap, one under another key's name.
    client.set(keys.ban("source", "127.0.0.5"), b"\xff\xfe not json", px=60_000)
    client.set(keys.ban("source", "127.0.0.6"), ('{"v":1,"via":"X","op":"ban","kind":"source","key":"127.0.0.6",'
                                                 f'"until":{future + 10 * 86400},"offences":1}}'), px=60_000)
    client.set(keys.ban("source", "127.0.0.7"), ('{"v":1,"via":"X","op":"ban","kind":"source","key":"127.0.0.1",'
                                                 f'"until":{future},"offences":1}}'), px=60_000)
    a = cluster.start_worker("A", extra=GUARDED)
    for raw in (b"[" * 5000, b"{}", b'{"v":1,"via":"X","op":"ban","kind":"planet","key":"x","until":1,"offences":1}',
                ('{"v":1,"via":"X","op":"ban","kind":"source","key":"localhost",'
                 f'"until":{future},"offences":1}}').encode(),
                ('{"v":1,"via":"X","op":"ban","kind":"username","key":"al\\u0000ice",'
                 f'"until":{future},"offences":1}}').encode()):
        client.publish(keys.BANS_CHANNEL, raw)
    # A well-formed one after the garbage: the subscription survived, and bans do come this way.
    client.publish(keys.BANS_CHANNEL, ('{"v":1,"via":"X","op":"ban","kind":"source","key":"127.0.0.8",'
                                       f'"until":{future},"offences":1}}').encode())
    wait_until(lambda: bans_of(a) == {("source", "127.0.0.8")}, timeout=SHARE_S, what="only the good ban")
    assert options(a, "127.0.0.1") == [200]
    assert options(a, "127.0.0.8") == []
    client.close()
    # stop_server (the fixture) fails the test if the worker logged a traceback.
