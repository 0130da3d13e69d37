"""What the worker tests (admission, drain, trusted proxy) share: SIPp runs, raw /healthz, stored records."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from callbridge.app.store import CallStore

from .conftest import SCENARIOS, RunningServer, free_port, run_sipp, start_sipp

# SIPp's own bound on a started caller: a scenario waiting for a BYE that never comes fails.
SIPP_TIMEOUT_S = 60


def sipp_args(server: RunningServer, *, scenario: str | None = None, calls: int = 1, bind: str = "127.0.0.1",
              service: str = "demo", extra: list[str] | None = None) -> list[str]:
    args = [f"127.0.0.1:{server.sip_port}", "-i", bind, "-p", str(free_port()), "-m", str(calls), "-s", service]
    args += ["-sf", str(SCENARIOS / scenario)] if scenario else ["-sn", "uac"]
    return args + (extra or [])


def workdir(tmp_path: Path, name: str) -> Path:
    """One directory per SIPp run: its logs are read back by name."""
    path = tmp_path / name
    path.mkdir(exist_ok=True)
    return path


def sipp_once(server: RunningServer, tmp_path: Path, name: str, **kwargs) -> tuple[int, str]:
    result = run_sipp(sipp_args(server, **kwargs), cwd=workdir(tmp_path, name), timeout=30)
    return result.returncode, result.output


def sipp_started(server: RunningServer, tmp_path: Path, name: str, **kwargs) -> subprocess.Popen:
    extra = list(kwargs.pop("extra", None) or []) + ["-timeout", str(SIPP_TIMEOUT_S), "-timeout_error",
                                                     "-trace_msg"]
    return start_sipp(sipp_args(server, extra=extra, **kwargs), cwd=workdir(tmp_path, name))


def finished(process: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        return -1, "SIPp did not finish:\n" + output
    return process.returncode, output


def healthz(server: RunningServer) -> tuple[int, dict, str | None]:
    """(HTTP status, body, Retry-After): 503 is an answer here, not an error."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/healthz", timeout=5) as response:
            return response.status, json.loads(response.read()), response.headers.get("Retry-After")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), exc.headers.get("Retry-After")


def stored_calls(server: RunningServer) -> list[dict]:
    """The records as the stopped server left them in its database (not what it said over HTTP)."""
    assert server.process.poll() is not None, "read the store only once the server has exited"
    store = CallStore.open(None, server.data_dir or server.workdir / "data")
    try:
        return store.list_call_records(limit=100)
    finally:
        store.close()
