"""A throwaway redis-server for the cluster tests: loopback only, a free port, no persistence.

    from tests.support.redis import RedisServer
    server = RedisServer.start(tmp_dir); ...; server.stop()

The tests/cluster fixtures start one per test (a cluster's state must not leak into the next test).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

START_TIMEOUT_S = 10.0
MISSING = "redis-server is not installed; scripts/setup.sh installs it"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, process: subprocess.Popen, port: int, workdir: Path) -> None:
        self.process = process
        self.port = port
        self.workdir = workdir

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, workdir: Path, port: int | None = None) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(MISSING)  # a missing peer is a failure, never a skip
        workdir.mkdir(parents=True, exist_ok=True)
        port = port or _free_port()
        log = (workdir / "redis.log").open("w")
        process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", str(workdir), "--protected-mode", "yes"],
                                   stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"redis-server exited: {(workdir / 'redis.log').read_text()}")
            if _ping(port):
                return cls(process, port, workdir)
            time.sleep(0.05)
        process.kill()
        pytest.fail(f"redis-server did not answer PING: {(workdir / 'redis.log').read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module", name="redis_server")
def module_redis_server(tmp_path_factory):
    """``redis_server``: one redis-server for a test module (its tests flush it themselves)."""
    server = RedisServer.start(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()

