"""Start ``callbridge serve`` as a real process on free loopback ports, and run real peers at it."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.waiting import wait_until
import yaml

from callbridge.app.auth import TOKEN_FILE  # the API token a server generated, under its --data-dir

SCENARIOS = Path(__file__).parent / "scenarios"
# Generous: the first server on a fresh machine renders the demo's prompts with piper.
STARTUP_TIMEOUT = 90.0
# One assembled speech model for every test server, instead of 140 MB per data dir.
SHARED_MODELS = Path.home() / ".cache" / "callbridge" / "test-models"
# The built-in 440 Hz test-tone line: for tests about SIP and media rather than the IVR.
TONE_LINE = "routing:\n  default_flow: tone\n"


def require_tool(name: str) -> str:
    """Interop tests must run in CI: a missing peer is a failure, not a skip."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; .ci/run installs it (see README)")
    return path


# Where free_port looks: below the kernel's ephemeral ports (32768 up), where a client's connect() could
# take the port between the probe and the server's bind, and below every block range here.
FREE_PORT_RANGE = (2000, 10000)
# Ports this test process handed out: a probe only sees what is bound now, and a server started with a
# port may not have bound it yet when the next probe runs.
_handed_out: set[int] = set()


def free_port() -> int:
    """A port free for both UDP and TCP (SIP listens on both), never one this process handed out before."""
    low, high = FREE_PORT_RANGE
    start = random.randrange(low, high)
    for port in list(range(start, high)) + list(range(low, start)):
        if port in _handed_out:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {low}-{high}")


# Where free_udp_block looks: below the kernel's ephemeral ports (32768 up), so it does not hand them to
# clients meanwhile, and clear of the server's default RTP range (10000-20000) and baresip's (30000-30400).
UDP_BLOCK_RANGE = (21000, 30000)


def free_udp_block(count: int, *, tcp_too: bool = False, port_range: tuple[int, int] = UDP_BLOCK_RANGE) -> int:
    """An even port p with p .. p + count - 1 all free for UDP (and TCP on loopback with ``tcp_too``) right now.

    Even, because RTP takes the even port of a pair (RFC 3550 §11): a server's RTP range, SIPp's -mp.
    The search starts at a random block so concurrent test runs rarely race for the same one.
    """
    low, high = port_range
    step = count + count % 2
    blocks = list(range(low, high - step, step))
    first = random.randrange(len(blocks))
    for base in blocks[first:] + blocks[:first]:
        sockets = []
        try:
            for port in range(base, base + count):
                for kind, host in ((socket.SOCK_DGRAM, "0.0.0.0"),) + (((socket.SOCK_STREAM, "127.0.0.1"),)
                                                                        if tcp_too else ()):
                    sock = socket.socket(socket.AF_INET, kind)
                    sockets.append(sock)
                    sock.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {count} free ports in a row")


@dataclass
class RunningServer:
    process: subprocess.Popen
    sip_port: int
    http_port: int
    workdir: Path
    log_path: Path
    token: str | None = None  # api.token from the config, else read from the data dir once started
    data_dir: Path | None = None  # default: workdir/data

    @property
    def api_token(self) -> str:
        return self.token or ((self.data_dir or self.workdir / "data") / TOKEN_FILE).read_text().strip()

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization header every request but GET /healthz needs."""
        return {"Authorization": f"Bearer {self.api_token}"}

    def get(self, path: str) -> dict:
        headers = {} if path == "/healthz" else self.auth
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json", **self.auth}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def calls(self) -> list[dict]:
        return self.get("/api/calls")["calls"]

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition"):
        return wait_until(predicate, timeout=timeout, what=what, interval=0.05,
                          detail=lambda: f"server log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def start_server(tmp_path: Path, config_text: str | None = None, extra_args: list[str] | None = None) -> RunningServer:
    sip_port, http_port = free_port(), free_port()
    args = [sys.executable, "-m", "callbridge.app.cli", "serve", "--host", "127.0.0.1", "--sip-port", str(sip_port),
            "--http-port", str(http_port), "--data-dir", str(tmp_path / "data")]
    if config_text is not None:
        config = tmp_path / "callbridge.yaml"
        config.write_text(config_text)
        args += ["--config", str(config)]
    args += extra_args or []
    log_path = tmp_path / "server.log"
    process = subprocess.Popen(args, stdout=log_path.open("w"), stderr=subprocess.STDOUT, cwd=tmp_path,
                               env={**os.environ, "PYTHONUNBUFFERED": "1", "CALLBRIDGE_MODEL_DIR": str(SHARED_MODELS)})
    data_dirs = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--data-dir"]
    data_dir = tmp_path / data_dirs[-1]  # the last one wins, as with argparse; relative to the server's cwd
    server = RunningServer(process, sip_port, http_port, tmp_path, log_path, configured_token(config_text), data_dir)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if server.get("/healthz")["status"] == "ok":
                return server
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(f"server did not become healthy:\n{server.log_tail()}")


def configured_token(config_text: str | None) -> str | None:
    if not config_text:
        return None
    api = (yaml.safe_load(config_text) or {}).get("api") or {}
    return api.get("token")


def stop_server(server: RunningServer) -> None:
    if server.process.poll() is None:
        # The first SIGTERM drains (live calls run on); a second ends what is left with BYE.
        for signals_sent, wait_s in ((1, 1.0), (2, 10.0)):
            server.process.terminate()
            try:
                server.process.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                if signals_sent == 2:
                    server.process.kill()
                    server.process.wait()
    text = server.log_path.read_text(errors="replace")
    # No exception may ever escape into the logs as a crash.
    assert "Traceback" not in text, f"server logged a traceback:\n{text[-4000:]}"


@pytest.fixture
def server(tmp_path):
    running = start_server(tmp_path, TONE_LINE)
    yield running
    stop_server(running)


@pytest.fixture
def server_factory(tmp_path):
    """Start servers; the tone line unless ``ivr=True`` (then the config decides, demo by default)."""
    started: list[RunningServer] = []

    def factory(config_text: str | None = None, extra_args: list[str] | None = None, *,
                ivr: bool = False) -> RunningServer:
        workdir = tmp_path / f"server{len(started)}"
        workdir.mkdir()
        if not ivr:
            config_text = TONE_LINE + (config_text or "")
        running = start_server(workdir, config_text, extra_args)
        started.append(running)
        return running

    yield factory
    for running in started:
        stop_server(running)


@dataclass
class SippResult:
    returncode: int
    output: str


def run_sipp(args: list[str], *, cwd: Path, timeout: float = 60.0) -> SippResult:
    sipp = require_tool("sipp")
    # SIPp looks for the built-in scenarios' pcap files under ./pcap.
    pcap = cwd / "pcap"
    if not pcap.exists():
        pcap.symlink_to("/usr/share/sip-tester")
    command = [sipp, *args, "-nostdin", "-trace_err", "-timeout", str(int(timeout)), "-timeout_error"]
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout + 15)
    output = completed.stdout + completed.stderr
    for error_log in cwd.glob("*_errors.log"):
        output += "\n--- " + error_log.name + "\n" + error_log.read_text(errors="replace")
        error_log.unlink()
    return SippResult(completed.returncode, output)


def sipp_messages(cwd: Path) -> str:
    """SIPp's -trace_msg log: every SIP message as SIPp sent and received it (it flushes message by message)."""
    logs = sorted(cwd.glob("*_messages.log"))
    return logs[0].read_text(errors="replace") if logs else ""


def sipp_log(cwd: Path) -> str:
    """SIPp's screen (``sipp.out``, where the test sent it) and error logs: a failed check says which regexp."""
    screen = cwd / "sipp.out"
    output = screen.read_text(errors="replace") if screen.exists() else ""
    for error_log in sorted(cwd.glob("*_errors.log")):
        output += "\n--- " + error_log.name + "\n" + error_log.read_text(errors="replace")
    return output


def start_sipp(args: list[str], *, cwd: Path) -> subprocess.Popen:
    sipp = require_tool("sipp")
    return subprocess.Popen([sipp, *args, "-nostdin", "-trace_err"], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def http_get(server: RunningServer, path: str, timeout: float = 10.0) -> tuple[int, str, bytes]:
    """GET any path, raw: (status, Content-Type, body); HTTP errors are returned, not raised."""
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", headers=server.auth)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()
