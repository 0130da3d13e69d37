"""`callbridge cluster` start-up failures, and the in-process hook benchmarks use (running_cluster).

These clusters use the launcher's default store: one SQLite file in the cluster's data dir.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import httpx
import pytest
import yaml

from callbridge.app.cli import main as cli_main
from callbridge.app.cluster.launcher import running_cluster
from callbridge.app.cluster.procs import StartError, find_binary
from callbridge.app.config import Config

from .launch import (cluster_config, free_port_block, launch, pid_alive, processes_mentioning, rtp_block,
                     sipp_call_log, sipp_calls)

pytestmark = pytest.mark.interop

EXIT_TIMEOUT_S = 60


@pytest.mark.parametrize("taken", ["worker SIP (UDP)", "worker HTTP API (TCP)"])
def test_a_port_in_use_is_named_and_nothing_is_started(tmp_path, taken):
    block = free_port_block(6)
    sip_port, http_port = block, block + 3
    kind, port = ((socket.SOCK_DGRAM, sip_port + 2) if "UDP" in taken else (socket.SOCK_STREAM, http_port + 1))
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", port))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        run = launch(tmp_path, cluster_config(None, rtp_base=rtp_block()), ports=(sip_port, http_port), wait=False)
        returncode = run.process.wait(timeout=EXIT_TIMEOUT_S)
    error = run.err_path.read_text()
    assert returncode == 1, error
    proto, what = ("UDP", "worker w2 SIP (UDP)") if "UDP" in taken else ("TCP", "worker w2 HTTP API")
    assert f"port {port}/{proto} on 127.0.0.1 is in use: needed for {what}" in error, error
    assert processes_mentioning(str(run.data_dir)) == []
    assert not (run.data_dir / "cluster.json").exists()


def test_a_worker_that_cannot_start_is_reported_and_what_started_is_stopped(tmp_path):
    # A key for secrets at rest that is not base64: Redis and Kamailio start, the workers refuse to.
    run = launch(tmp_path, cluster_config(None, rtp_base=rtp_block()), wait=False,
                 env={"CALLBRIDGE_SECRET_KEY": "not base64!"})
    returncode = run.process.wait(timeout=EXIT_TIMEOUT_S)
    error = run.err_path.read_text()
    assert returncode == 1, error
    assert "cannot start the cluster: worker w" in error and "exited during start-up (exit code 1)" in error, error
    assert "CALLBRIDGE_SECRET_KEY: not base64" in error, error  # the worker's own words, from its log
    assert (run.data_dir / "redis" / "redis.log").exists()  # Redis had started...
    assert processes_mentioning(str(run.data_dir)) == []  # ...and nothing is left


def test_ctrl_c_during_start_up_stops_what_had_started(tmp_path):
    run = launch(tmp_path, cluster_config(None, rtp_base=rtp_block()), wait=False)
    run.wait_for(lambda: (run.data_dir / "redis" / "redis.log").exists(), timeout=30, what="Redis started")
    run.process.send_signal(signal.SIGINT)
    assert run.process.wait(timeout=EXIT_TIMEOUT_S) == 130, run.logs()
    assert processes_mentioning(str(run.data_dir)) == []


def test_when_kamailio_dies_the_workers_drain_and_the_launcher_exits_1(tmp_path):
    run = launch(tmp_path, cluster_config(None, rtp_base=rtp_block()))
    os.kill(run.state["kamailio_pid"], signal.SIGKILL)
    returncode = run.process.wait(timeout=EXIT_TIMEOUT_S)
    error = run.err_path.read_text()
    assert returncode == 1, error
    assert f"the cluster stopped: kamailio (pid {run.state['kamailio_pid']}) exited unexpectedly: killed by SIGKILL" \
        in error, error
    assert run.leftovers() == [] and processes_mentioning(str(run.data_dir)) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "0"], "--workers 0: between 1 and 64"),
    (["--host", "localhost"], "--host 'localhost' must be an IP address"),
    (["--host", "0.0.0.0"], "--host '0.0.0.0' is a wildcard"),
    (["--sip-port", "0"], "--sip-port 0: a port from 1 to 65535"),
    (["--workers", "3"], "3 workers x cluster.rtp_ports_per_worker 4000 = 12000 RTP ports"),
])
def test_bad_arguments_are_clear_errors(tmp_path, capsys, args, message):
    returncode = cli_main(["cluster", "--data-dir", str(tmp_path / "data"), *args])
    assert returncode == 1
    assert message in capsys.readouterr().err
    assert processes_mentioning(str(tmp_path)) == []


def test_a_missing_program_says_to_run_setup():
    with pytest.raises(StartError, match=r"callbridge-no-such-program is not installed: run scripts/setup.sh"):
        find_binary("callbridge-no-such-program")


def test_a_data_dir_kamailio_cannot_take_is_refused(tmp_path, capsys):
    quoted = tmp_path / 'a"b'
    block = free_port_block(6)
    returncode = cli_main(["cluster", "--data-dir", str(quoted), "--sip-port", str(block),
                           "--http-port", str(block + 3)])
    assert returncode == 1
    assert "choose a --data-dir without spaces or quotes" in capsys.readouterr().err


async def test_running_cluster_hands_a_benchmark_the_addresses_and_pids(tmp_path):
    config = Config.model_validate(yaml.safe_load(cluster_config(None, rtp_base=rtp_block(1), workers=1)))
    block = free_port_block(4)
    async with running_cluster(config, workers=1, host="127.0.0.1", sip_port=block, http_port=block + 2,
                               data_dir=tmp_path / "data") as cluster:
        (worker,) = cluster.workers
        assert cluster.sip_address == f"127.0.0.1:{block}"
        assert cluster.call_uri("100") == f"sip:100@127.0.0.1:{block}"
        assert (worker.worker_id, worker.api_url, worker.sip_uri) == (
            "w1", f"http://127.0.0.1:{block + 2}", f"sip:127.0.0.1:{block + 1}")
        pids = [worker.pid, cluster.kamailio_pid, cluster.redis_pid]
        assert all(pid_alive(pid) for pid in pids)
        assert await cluster.dispatcher_states() == {worker.sip_uri: "AP"}

        class Sip:  # what sipp_calls needs of a cluster
            sip_port = block

        result = await asyncio.to_thread(sipp_calls, Sip, tmp_path / "sipp", calls=1, rate=1, limit=1,
                                         duration_ms=200)
        assert result.returncode == 0, result.output
        (call_id,) = sipp_call_log(tmp_path / "sipp")
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{worker.api_url}/api/calls", headers=cluster.auth)
        assert [(c["sip_call_id"], c["worker"]) for c in response.json()["calls"]] == [(call_id, "w1")]
    assert not [pid for pid in pids if pid_alive(pid)]

