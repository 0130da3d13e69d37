"""Clusters of real workers on loopback: a redis-server, one PostgreSQL database, `callbridge serve` processes.

Workers are ordinary server processes (tests/interop/conftest.py start_server) with a ``cluster:``
section; SIPp calls them directly (no proxy: the cluster's shared state is what is under test).
Use the fixtures by importing them into a test module:

    from tests.support.cluster_workers import cluster, postgres_cluster, redis_server  # noqa: F401
"""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.interop.conftest import SCENARIOS as INTEROP_SCENARIOS
from tests.support.sse import SseClient
from tests.support.waiting import wait_until
from tests.interop.conftest import (TONE_LINE, RunningServer, free_port, free_udp_block, require_tool,
                                    start_server, stop_server)
from tests.support.postgres import postgres_cluster  # noqa: F401 - fixture, re-exported
from tests.support.redis import RedisServer

SCENARIOS = Path(__file__).parent.parent / "cluster" / "scenarios"
# Fast enough for tests, slow enough for 2 shared cores: a worker is dead after 2 s of silence.
HEARTBEAT_S = 0.3
WORKER_TIMEOUT_S = 2.0


def worker_config(name: str, *, redis_url: str, database_url: str, token: str, max_calls: int = 4,
                  extra: str = "") -> str:
    return TONE_LINE + f"""
server:
  max_calls: {max_calls}
api:
  token: {token}
database:
  url: {database_url}
cluster:
  redis_url: {redis_url}
  worker_id: {name}
  heartbeat_s: {HEARTBEAT_S}
  worker_timeout_s: {WORKER_TIMEOUT_S}
""" + extra


@dataclass
class Cluster:
    root: Path
    redis: RedisServer
    database_url: str
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    workers: dict[str, RunningServer] = field(default_factory=dict)
    started: list[RunningServer] = field(default_factory=list)

    def start_worker(self, name: str, *, max_calls: int = 4, extra: str = "") -> RunningServer:
        workdir = self.root / f"{name}-{len(self.started)}"
        workdir.mkdir()
        config = worker_config(name, redis_url=self.redis.url, database_url=self.database_url, token=self.token,
                               max_calls=max_calls, extra=extra)
        self.workers[name] = worker = start_server(workdir, config)
        self.started.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self.started:
            stop_server(worker)  # also: no worker ever logged a traceback
        self.redis.stop()  # a test may have swapped in a Redis of its own (a restart): it goes too


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer.start(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def cluster(tmp_path, redis_server, postgres_cluster):  # noqa: F811 - the fixture imported above
    running = Cluster(tmp_path, redis_server, postgres_cluster.create_database())
    yield running
    running.stop()


# -- talking to workers ----------------------------------------------------------------------------------

def request(worker: RunningServer, method: str, path: str, body: dict | None = None, *,
            headers: dict[str, str] | None = None, auth: bool = True, timeout: float = 15.0) -> tuple[int, dict, dict]:
    """(status, JSON body ({"text": ...} when not JSON), lower-cased response headers); errors are returned."""
    sent = {"Content-Type": "application/json"} if body is not None else {}
    if auth:
        sent.update(worker.auth)
    sent.update(headers or {})
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{worker.http_port}{path}", data=data, headers=sent, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            raw, status, got = response.read(), response.status, response.headers
    except urllib.error.HTTPError as exc:
        raw, status, got = exc.read(), exc.code, exc.headers
    try:
        parsed = json.loads(raw) if raw.strip() else {}
    except ValueError:
        parsed = {"text": raw.decode(errors="replace")}
    return status, parsed, {name.lower(): value for name, value in got.items()}


def fetch(worker: RunningServer, path: str, timeout: float = 15.0) -> tuple[int, dict, bytes]:
    """GET ``path`` raw: (status, lower-cased headers, body bytes)."""
    req = urllib.request.Request(f"http://127.0.0.1:{worker.http_port}{path}", headers=worker.auth)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def workers_of(worker: RunningServer) -> dict[str, dict]:
    status, body, _ = request(worker, "GET", "/api/cluster/workers")
    assert status == 200, body
    return {w["id"]: w for w in body["workers"]}


def record(observer: RunningServer, call_id: str) -> dict:
    status, body, _ = request(observer, "GET", f"/api/calls/{call_id}")
    assert status == 200, body
    return body


@dataclass
class Sipp:
    process: subprocess.Popen
    cwd: Path

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        try:
            output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
        return self.process.returncode, output

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def call_worker(worker: RunningServer, cwd: Path, rtp_port: int, scenario: str = "uac_until_bye.xml",
                timeout_s: int = 60) -> Sipp:
    """A SIPp caller on ``worker``'s SIP port that stays on the line until the server sends BYE."""
    sipp = require_tool("sipp")
    cwd.mkdir(parents=True, exist_ok=True)
    command = [sipp, f"127.0.0.1:{worker.sip_port}", "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1",
               "-p", str(free_port()), "-mp", str(free_udp_block(4)), "-m", "1", "-s", "demo",
               "-set", "rtp_port", str(rtp_port), "-nostdin", "-trace_err", "-trace_msg",
               "-timeout", str(timeout_s), "-timeout_error"]
    return Sipp(subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), cwd)


def callee(cwd: Path, scenario: str, port: int, timeout_s: int = 40) -> Sipp:
    """A SIPp callee (tests/interop/scenarios) listening on ``port``."""
    sipp = require_tool("sipp")
    cwd.mkdir(parents=True, exist_ok=True)
    command = [sipp, "-sf", str(INTEROP_SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port), "-m", "1",
               "-nostdin", "-trace_err", "-trace_msg", "-timeout", str(timeout_s), "-timeout_error"]
    return Sipp(subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), cwd)


def live_call_on(observer: RunningServer, worker_id: str, *, timeout: float = 15.0,
                 besides: frozenset[str] = frozenset()) -> dict:
    """An active call running on ``worker_id`` (not one of ``besides``), as ``observer``'s GET /api/calls lists it."""
    def find():
        status, body, _ = request(observer, "GET", "/api/calls?status=active")
        assert status == 200, body
        return next((c for c in body["calls"] if c.get("worker") == worker_id and c["id"] not in besides), None)

    return wait_until(find, timeout=timeout, what=f"an active call of {worker_id} listed")


class EventStream(SseClient):
    """GET /api/events of one worker; ``wait_for`` predicates take the events seen so far."""

    def __init__(self, worker: RunningServer) -> None:
        super().__init__(worker.http_port, token=worker.api_token)

    def wait_for(self, predicate, timeout: float, what: str) -> None:  # type: ignore[override]
        wait_until(lambda: predicate(self.events), timeout=timeout, what=what, interval=0.05)
