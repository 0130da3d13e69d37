"""The worker registry as any worker's API shows it, and joining: Redis down at start, the same id twice."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.interop.conftest import free_port

from tests.support import cluster_workers
from tests.support.cluster_workers import HEARTBEAT_S, request, wait_until, worker_config, workers_of

cluster, redis_server, postgres_cluster = (cluster_workers.cluster, cluster_workers.redis_server,  # fixtures
                                           cluster_workers.postgres_cluster)

pytestmark = pytest.mark.interop


def test_every_worker_lists_every_worker_with_its_entry(cluster):
    a = cluster.start_worker("A", max_calls=3)
    b = cluster.start_worker("B", max_calls=5)
    for observer in (a, b):
        listed = wait_until(lambda o=observer: (w := workers_of(o)).keys() == {"A", "B"} and w, timeout=5,
                            what="A and B listed")
        now = time.time()
        for name, worker, capacity in (("A", a, 3), ("B", b, 5)):
            entry = listed[name]
            assert entry["pid"] == worker.process.pid
            assert entry["api_url"] == f"http://127.0.0.1:{worker.http_port}"
            assert entry["sip_uri"] == f"sip:127.0.0.1:{worker.sip_port}"
            assert (entry["state"], entry["alive"], entry["draining"]) == ("up", True, False), entry
            assert (entry["active_calls"], entry["capacity"]) == (0, capacity), entry
            assert now - 3 < entry["last_heartbeat"] <= now + 1, entry
            assert entry["self"] is (worker is observer)

    # The heartbeat moves on.
    first = workers_of(a)["B"]["last_heartbeat"]
    wait_until(lambda: workers_of(a)["B"]["last_heartbeat"] > first, timeout=HEARTBEAT_S * 10, what="a newer beat")

    # A clean stop leaves the list marked stopped, not lost.
    b.process.terminate()
    b.process.wait(timeout=15)
    entry = wait_until(lambda: (e := workers_of(a)["B"])["state"] == "stopped" and e, timeout=5,
                       what="B listed as stopped")
    assert entry["alive"] is False


def test_the_registry_needs_the_token(cluster):
    a = cluster.start_worker("A")
    status, body, _ = request(a, "GET", "/api/cluster/workers", auth=False)
    assert status == 401, body


def test_redis_down_at_start_is_a_clear_error(tmp_path):
    closed = free_port()  # nothing listens there
    config = tmp_path / "callbridge.yaml"
    config.write_text(worker_config("A", redis_url=f"redis://:hunter2@127.0.0.1:{closed}/0", database_url="sqlite:///"
                                    + str(tmp_path / "db.sqlite"), token="t" * 24))
    completed = subprocess.run([sys.executable, "-m", "callbridge.app.cli", "serve", "--config", str(config),
                                "--host", "127.0.0.1", "--sip-port", str(free_port()), "--http-port", str(free_port()),
                                "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert f"cannot reach the cluster's Redis at redis://:***@127.0.0.1:{closed}/0" in completed.stderr, \
        completed.stderr
    assert "hunter2" not in completed.stdout + completed.stderr  # the password is never printed
    assert "Traceback" not in completed.stdout + completed.stderr


def test_a_second_worker_with_a_running_workers_id_is_refused(cluster, tmp_path):
    cluster.start_worker("A")
    workdir = tmp_path / "impostor"
    workdir.mkdir()
    config = workdir / "callbridge.yaml"
    config.write_text(worker_config("A", redis_url=cluster.redis.url, database_url=cluster.database_url,
                                    token=cluster.token))
    completed = subprocess.run([sys.executable, "-m", "callbridge.app.cli", "serve", "--config", str(config),
                                "--host", "127.0.0.1", "--sip-port", str(free_port()), "--http-port", str(free_port()),
                                "--data-dir", str(workdir / "data")], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "cluster.worker_id 'A' is in use by a running worker" in completed.stderr, completed.stderr
