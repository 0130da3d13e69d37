"""A throwaway PostgreSQL server for the store tests, started once per test session.

The cluster lives in a temp dir, listens on 127.0.0.1 on a free port (its unix
socket stays in the temp dir too), trusts every local connection, and is stopped
and deleted when the session ends. PostgreSQL refuses to run as root, so under
root initdb/pg_ctl run as the `postgres` system user.

Use it by importing the fixtures into a test module:

    from tests.support.postgres import database_url, postgres_cluster  # noqa: F401

`database_url` is parametrised: None (SQLite, CallStore's default) and a fresh
PostgreSQL database per test.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
MISSING = ("PostgreSQL server binaries (initdb, pg_ctl under /usr/lib/postgresql/*/bin) not found: "
           "install postgresql (scripts/setup.sh does)")
SUPERUSER = "postgres"
START_TIMEOUT_S = 30
PORT_ATTEMPTS = 3
# Test data is disposable: skip the fsyncs that make a real server slow to write.
SERVER_OPTIONS = "-c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=200"


def find_pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin dir, or None."""
    candidates = [Path(p) for p in glob.glob(PG_BIN_GLOB)
                  if (Path(p) / "initdb").exists() and (Path(p) / "pg_ctl").exists()]

    def major(path: Path) -> float:
        try:
            return float(path.parent.name)
        except ValueError:
            return 0.0

    return max(candidates, key=major, default=None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresCluster:
    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="callbridge-pg-"))
        self.data_dir = self.root / "data"
        self.log_file = self.root / "server.log"
        self.port = 0
        self._names = itertools.count(1)
        self._running = False
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(SUPERUSER)
            except KeyError:
                pytest.fail(f"running as root but there is no '{SUPERUSER}' system user to run PostgreSQL as: "
                            f"{MISSING}")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._run_as = ["runuser", "-u", SUPERUSER, "--"]

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._run_as, *args], capture_output=True, text=True, cwd=self.root,
                              timeout=START_TIMEOUT_S + 10)

    def _fail(self, what: str, result: subprocess.CompletedProcess[str]) -> None:
        log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
        self.stop()
        pytest.fail(f"PostgreSQL {what} failed ({result.returncode}): {result.stdout}{result.stderr}\n{log}")

    def start(self) -> None:
        result = self._run(str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                           "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
        if result.returncode != 0:
            self._fail("initdb", result)
        for _ in range(PORT_ATTEMPTS):  # the free port can be taken between probe and bind
            self.port = _free_port()
            options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} {SERVER_OPTIONS}"
            result = self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                               "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start")
            if result.returncode == 0:
                self._running = True
                return
        self._fail("start", result)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its postgresql:// URL."""
        import psycopg

        name = f"test_{os.getpid()}_{next(self._names)}"
        dsn = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


_cluster: PostgresCluster | None = None
_users = 0


def _shared_cluster() -> PostgresCluster:
    """One cluster per test process, whichever modules ask for it."""
    global _cluster
    if _cluster is None:
        bin_dir = find_pg_bin()
        if bin_dir is None:
            pytest.fail(MISSING)
        cluster = PostgresCluster(bin_dir)
        atexit.register(cluster.stop)  # an interrupted session still cleans up
        cluster.start()
        _cluster = cluster
    return _cluster


@pytest.fixture(scope="session")
def postgres_cluster():
    """The running throwaway cluster; stopped when the last module using it finishes with the session."""
    global _cluster, _users
    cluster = _shared_cluster()
    _users += 1
    yield cluster
    _users -= 1
    if _users == 0 and _cluster is cluster:
        cluster.stop()
        _cluster = None


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str | None:
    """CallStore.open's url: None for SQLite in the test's data dir, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_cluster").create_database()
