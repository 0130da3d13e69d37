"""Helpers shared by the benchmarks that drive a real ``callbridge serve``.

Scripts in bench/ import this as ``harness`` (bench/ is on sys.path when a
script there runs).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port that is free for both TCP and UDP on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))
    return port


def start_server(workdir: Path, *, config: Path | None = None, host: str | None = None,
                 log_level: str = "warning", timeout: float = 10.0,
                 source: Path | None = None,
                 ports: tuple[int, int] | None = None) -> tuple[subprocess.Popen, int, int]:
    """Start ``callbridge serve`` on free ports; return (process, sip_port, http_port) once /healthz answers.

    stderr goes to ``workdir/server.log``. If the server exits early (a config
    error, say), RuntimeError carries the end of that log. ``source`` runs the
    package from another tree (a directory holding ``callbridge/``, put first
    on PYTHONPATH), e.g. ``git archive HEAD src`` unpacked elsewhere. ``ports`` (SIP, HTTP) are best
    below the kernel's ephemeral range: a port picked there can be taken by any client before we bind it.
    """
    sip, http = ports if ports is not None else (free_port(), free_port())
    command = [sys.executable, "-m", "callbridge.app.cli", "serve"]
    if host is not None:
        command += ["--host", host]
    command += ["--sip-port", str(sip), "--http-port", str(http), "--log-level", log_level,
                "--data-dir", str(workdir / "data")]
    if config is not None:
        command += ["--config", str(config)]
    env = None
    if source is not None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    log_path = workdir / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:].strip()
            raise RuntimeError(f"server exited with status {process.returncode}: {tail}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=1)
            return process, sip, http
        except OSError:
            time.sleep(0.05)
    stop_process(process)
    raise RuntimeError("server did not start")


def stop_process(process: subprocess.Popen | None, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Signal a child, wait a bounded time, then kill it. Safe to call twice."""
    if process is None:
        return None
    if process.poll() is None:
        try:
            process.send_signal(sig)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def api_token(workdir: Path) -> str | None:
    """The API token a server started by start_server() generated in its data dir (None: an older server)."""
    path = workdir / "data" / "api_token"
    return path.read_text().strip() if path.exists() else None


def get_json(url: str, timeout: float = 10.0, token: str | None = None) -> object:
    """GET and decode; every API path but /healthz needs the server's token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
        return json.load(response)
