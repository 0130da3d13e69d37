"""`callbridge cluster` as a real process (Redis, Kamailio, workers), and SIPp callers through it.

The launcher's tests (test_proxy_*.py) import from here; conftest.py belongs to the shared-state tests.

A cluster is started through the CLI exactly as an operator would, on free loopback ports, with
PostgreSQL (tests/support/postgres.py) as the shared store. Everything it started is found in the
cluster.json it writes once ready, and every pid there is checked gone when it stops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.interop.conftest import SHARED_MODELS, free_port, free_udp_block, require_tool, run_sipp, start_sipp
from tests.support.waiting import wait_until

SCENARIOS = Path(__file__).parent / "scenarios"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
# SIP, HTTP and RTP ports of these tests: below the kernel's ephemeral range, clear of the default RTP
# range (10000-20000), free_udp_block's 21000-30000 and baresip's 30000-30400.
PORT_RANGE = (30500, 32700)
RTP_PER_WORKER = 100


def free_port_block(count: int, *, udp_only: bool = False) -> int:
    """An even port p with p .. p + count - 1 free for UDP (and TCP unless ``udp_only``) right now."""
    return free_udp_block(count, tcp_too=not udp_only, port_range=PORT_RANGE)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Every process whose command line contains ``text`` (a test's own data dir): what a launch left."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command and pid_alive(int(entry.name)):
            found.append((int(entry.name), command))
    return found


@dataclass
class ClusterRun:
    process: subprocess.Popen
    workdir: Path
    data_dir: Path
    sip_port: int
    http_port: int
    out_path: Path
    err_path: Path
    state: dict = field(default_factory=dict)

    @property
    def token(self) -> str:
        return (self.data_dir / "api_token").read_text().strip()

    @property
    def workers(self) -> list[dict]:
        return self.state["workers"]

    def worker(self, worker_id: str) -> dict:
        return next(w for w in self.workers if w["worker_id"] == worker_id)

    def pids(self) -> list[int]:
        return [self.state["redis_pid"], self.state["kamailio_pid"], *(w["pid"] for w in self.workers)]

    def request(self, api_url: str, path: str, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        request = urllib.request.Request(f"{api_url}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def calls(self, worker_id: str = "w1") -> list[dict]:
        """Every call record (the store is shared: any worker's API lists all workers' calls)."""
        status, body = self.request(self.worker(worker_id)["api_url"], "/api/calls?limit=500")
        assert status == 200, body
        return body["calls"]

    def wait_for(self, predicate, timeout: float, what: str):
        return wait_until(predicate, timeout=timeout, what=what, detail=self.logs)

    def kamcmd(self, *args: str) -> str:
        result = subprocess.run([require_tool("kamcmd"), "-s", f"unix:{self.state['ctl_socket']}", *args],
                                capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def dispatcher_flags(self) -> dict[str, str]:
        from callbridge.app.cluster.kamailio import parse_dispatcher_states

        return parse_dispatcher_states(self.kamcmd("dispatcher.list"))

    def logs(self, lines: int = 30) -> str:
        parts = []
        for path in [self.out_path, self.err_path, *sorted(self.data_dir.glob("workers/*/worker.log")),
                     self.data_dir / "kamailio" / "kamailio.log"]:
            if path.exists():
                tail = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                parts.append(f"--- {path}\n{tail}")
        return "\n".join(parts)

    def stop(self, sig: int = signal.SIGINT, *, insist_after: float | None = None) -> int:
        """Signal the launcher and wait; the exit status. Every pid it started must be gone.

        ``insist_after``: repeat the signal after that many seconds, as an operator would, so a call a
        failed test left up is hung up instead of holding the drain to its deadline.
        """
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            if insist_after is not None:
                try:
                    self.process.wait(timeout=insist_after)
                except subprocess.TimeoutExpired:
                    self.process.send_signal(sig)
            returncode = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the launcher did not stop in {STOP_TIMEOUT_S} s\n{self.logs()}") from None
        return returncode

    def leftovers(self) -> list[int]:
        return [pid for pid in self.pids() if pid_alive(pid)]

    def kill_leftovers(self) -> None:
        for pid in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def cluster_config(database_url: str | None, *, rtp_base: int, workers: int = 2, server: dict | None = None,
                   cluster: dict | None = None, **sections) -> str:
    """The tone line (no prompts, no models: quick to start) on a shared database (None: the launcher's
    shared SQLite file)."""
    document: dict = {
        "routing": {"default_flow": "tone"},
        "media": {"record": False, "rtp_port_min": rtp_base, "rtp_port_max": rtp_base + workers * RTP_PER_WORKER - 1},
        "database": {"url": database_url} if database_url else {},
        "server": {"drain_deadline_s": 60, **(server or {})},
        "cluster": {"rtp_ports_per_worker": RTP_PER_WORKER, "heartbeat_s": 0.5, "worker_timeout_s": 2.0,
                    **(cluster or {})},
        **sections,
    }
    return yaml.safe_dump(document, sort_keys=False)


def launch(workdir: Path, config_text: str, *, workers: int = 2, wait: bool = True,
           ports: tuple[int, int] | None = None, env: dict[str, str] | None = None) -> ClusterRun:
    """``callbridge cluster`` as a subprocess; with ``wait``, returns once it has written cluster.json."""
    for tool in ("kamailio", "kamcmd", "redis-server"):
        require_tool(tool)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "cluster.yaml"
    config.write_text(config_text)
    if ports is None:
        block = free_port_block(2 * workers + 2)  # Kamailio + workers' SIP, then the APIs and Redis
        ports = (block, block + workers + 1)
    sip_port, http_port = ports
    data_dir = workdir / "data"
    out_path, err_path = workdir / "cluster.out", workdir / "cluster.err"
    args = [sys.executable, "-m", "callbridge.app.cli", "cluster", "--workers", str(workers), "--config", str(config),
            "--host", "127.0.0.1", "--sip-port", str(sip_port), "--http-port", str(http_port),
            "--data-dir", str(data_dir)]
    process = subprocess.Popen(args, stdout=out_path.open("w"), stderr=err_path.open("w"), cwd=workdir,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", "CALLBRIDGE_MODEL_DIR": str(SHARED_MODELS),
                                    **(env or {})})
    run = ClusterRun(process, workdir, data_dir, sip_port, http_port, out_path, err_path)
    if not wait:
        return run
    state = data_dir / "cluster.json"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"callbridge cluster exited with {process.returncode}\n{run.logs()}")
        if state.exists() and "ready" in out_path.read_text():
            run.state = json.loads(state.read_text())
            return run
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"callbridge cluster was not ready in {START_TIMEOUT_S} s\n{run.logs()}")


def finish(run: ClusterRun) -> None:
    """Stop a cluster a test left running; nothing it started may outlive it."""
    try:
        if run.process.poll() is None:
            run.stop(insist_after=10.0)
        left = run.leftovers()
        assert not left, f"processes left running after the launcher exited: {left}"
    finally:
        run.kill_leftovers()
    for path in run.data_dir.glob("workers/*/worker.log"):
        text = path.read_text(errors="replace")
        assert "Traceback" not in text, f"{path} has a traceback:\n{text[-4000:]}"


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory, request) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


def rtp_block(workers: int = 2) -> int:
    """RTP for every worker, from this module's own range (other suites use free_udp_block's)."""
    return free_port_block(workers * RTP_PER_WORKER, udp_only=True)


def _caller_args(run: ClusterRun, *, calls: int, rate: float, duration_ms: int, limit: int, local_ip: str,
                 transport: str = "u1") -> list[str]:
    return [f"127.0.0.1:{run.sip_port}", "-sf", str(SCENARIOS / "uac_proxied.xml"), "-s", "service",
            "-i", local_ip, "-p", str(free_port()), "-t", transport, "-m", str(calls), "-r", str(rate),
            "-l", str(limit), "-d", str(duration_ms), "-trace_shortmsg"]


def sipp_calls(run: ClusterRun, cwd: Path, *, calls: int, rate: float = 5, duration_ms: int = 300,
               limit: int = 10, local_ip: str = "127.0.0.1", timeout: float = 60, transport: str = "u1"):
    """``calls`` calls through Kamailio with the record-routing caller scenario; SIPp's result."""
    cwd.mkdir(parents=True, exist_ok=True)
    args = _caller_args(run, calls=calls, rate=rate, duration_ms=duration_ms, limit=limit, local_ip=local_ip,
                        transport=transport)
    return run_sipp(args, cwd=cwd, timeout=timeout)


def start_sipp_calls(run: ClusterRun, cwd: Path, *, calls: int, rate: float, duration_ms: int, limit: int = 50,
                     local_ip: str = "127.0.0.1", timeout: float = 60) -> subprocess.Popen:
    """The same in the background (bounded by ``timeout``); the test waits for it."""
    cwd.mkdir(parents=True, exist_ok=True)
    args = _caller_args(run, calls=calls, rate=rate, duration_ms=duration_ms, limit=limit, local_ip=local_ip)
    return start_sipp(args + ["-timeout", str(int(timeout)), "-timeout_error"], cwd=cwd)


@dataclass
class SippCall:
    call_id: str
    started: float  # when SIPp sent the call's first request (unix s)
    responses: list[tuple[str, int]] = field(default_factory=list)  # (CSeq method, status) as received
    ack_target: str | None = None  # the worker Contact the ACK went to (through the proxy's route)

    def final(self, method: str) -> int | None:
        return next((status for m, status in self.responses if m == method and status >= 200), None)

    @property
    def invite_final(self) -> int | None:
        return self.final("INVITE")

    @property
    def succeeded(self) -> bool:
        """Answered, and the BYE through the route set was answered 200."""
        return self.invite_final == 200 and self.final("BYE") == 200


def sipp_call_log(cwd: Path) -> dict[str, SippCall]:
    """Each call as SIPp's -trace_shortmsg saw it: date, time, unix time, S/R, Call-ID, CSeq, first line."""
    calls: dict[str, SippCall] = {}
    for path in cwd.glob("*_shortmessages.log"):
        for line in path.read_text(errors="replace").splitlines():
            fields = line.split("\t")
            if len(fields) < 7:
                continue
            at, direction, call_id, cseq, first = float(fields[2]), fields[3], fields[4], fields[5], fields[6]
            call = calls.setdefault(call_id, SippCall(call_id, at))
            if direction == "S" and first.startswith("ACK "):
                call.ack_target = first.split()[1]
            elif direction == "R" and first.startswith("SIP/2.0 "):
                call.responses.append((cseq.split()[-1], int(first.split()[1])))
    return calls
