"""``callbridge serve`` as a person first meets it: the ready banner, readable logs, and a taken port.

What must hold: the banner names the console (with a one-click sign-in link only on a terminal or for a
token just generated), the browser phone and a SIP URI that reaches the line; the token never reaches
the logs; logs are text on a terminal and JSON otherwise (either forced by --log-format); a port in use
stops start-up with exit status 2 and one line naming the port and what it was for, no traceback.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import SHARED_MODELS, TONE_LINE, free_port

pytestmark = pytest.mark.interop

TOKEN = "first-run-token-0123456789abcdef"
START_TIMEOUT_S = 60.0
TEXT_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR)\s+callbridge\.\S+  ", re.MULTILINE)
BANNER_END = "a second Ctrl-C ends them now."


def serve_args(workdir: Path, config_text: str, sip_port: int, http_port: int, *extra: str) -> list[str]:
    config = workdir / "callbridge.yaml"
    config.write_text(config_text)
    return [sys.executable, "-m", "callbridge.app.cli", "serve", "--host", "127.0.0.1", "--sip-port", str(sip_port),
            "--http-port", str(http_port), "--data-dir", str(workdir / "data"), "--config", str(config), *extra]


ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "CALLBRIDGE_MODEL_DIR": str(SHARED_MODELS)}


def run_until_banner(args: list[str], workdir: Path, *, tty: bool) -> tuple[str, str]:
    """Start, read stdout and stderr until the banner has printed, then stop: (stdout, stderr)."""
    if tty:
        out_master, out_slave = pty.openpty()
        err_master, err_slave = pty.openpty()
        process = subprocess.Popen(args, stdout=out_slave, stderr=err_slave, stdin=subprocess.DEVNULL, cwd=workdir,
                                   env=ENV)
        os.close(out_slave)
        os.close(err_slave)
        readers = {out_master: b"", err_master: b""}
    else:
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                   cwd=workdir, env=ENV)
        assert process.stdout is not None and process.stderr is not None
        out_master, err_master = process.stdout.fileno(), process.stderr.fileno()
        readers = {out_master: b"", err_master: b""}
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while BANNER_END.encode() not in readers[out_master]:
            assert time.monotonic() < deadline, f"no banner in time:\n{readers}"
            assert process.poll() is None, f"server exited with {process.returncode}:\n{readers}"
            ready, _, _ = select.select(list(readers), [], [], 0.5)
            for fd in ready:
                try:
                    readers[fd] += os.read(fd, 65536)
                except OSError:  # a pty whose other end closed
                    pass
        time.sleep(0.3)  # the log lines written just after the banner
        ready, _, _ = select.select(list(readers), [], [], 0.1)
        for fd in ready:
            readers[fd] += os.read(fd, 65536)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if tty:
            os.close(out_master)
            os.close(err_master)
        else:
            assert process.stdout is not None and process.stderr is not None
            process.stdout.close()
            process.stderr.close()
    return (readers[out_master].decode(errors="replace").replace("\r\n", "\n"),
            readers[err_master].decode(errors="replace").replace("\r\n", "\n"))


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_on_a_terminal_the_banner_has_the_sign_in_link_and_the_logs_are_text(tmp_path):
    sip_port, http_port = free_port(), free_port()
    stdout, stderr = run_until_banner(serve_args(tmp_path, TONE_LINE + f"api:\n  token: {TOKEN}\n", sip_port,
                                                 http_port), tmp_path, tty=True)
    console = f"http://127.0.0.1:{http_port}"
    assert f"{console}/login#token={TOKEN}" in stdout, stdout
    assert f"{console}/phone" in stdout and f"sip:tone@127.0.0.1:{sip_port}" in stdout, stdout
    assert TEXT_LINE.search(stderr), stderr[:2000]
    assert not json_lines(stderr) and "Traceback" not in stderr
    assert TOKEN not in stderr  # the logs never carry it


def test_into_a_pipe_the_banner_holds_no_token_and_the_logs_are_json(tmp_path):
    sip_port, http_port = free_port(), free_port()
    stdout, stderr = run_until_banner(serve_args(tmp_path, TONE_LINE + f"api:\n  token: {TOKEN}\n", sip_port,
                                                 http_port), tmp_path, tty=False)
    assert TOKEN not in stdout + stderr
    assert f"http://127.0.0.1:{http_port}/login   (the API token is api.token in the config)" in stdout, stdout
    logs = json_lines(stderr)
    assert logs and all({"ts", "level", "logger", "msg"} <= set(entry) for entry in logs)
    assert any(entry["msg"] == "ready" for entry in logs)


def test_a_token_just_generated_is_linked_once_then_only_its_file_is_named(tmp_path):
    config = TONE_LINE
    first_out, first_err = run_until_banner(serve_args(tmp_path, config, free_port(), free_port()), tmp_path,
                                            tty=False)
    token = (tmp_path / "data" / "api_token").read_text().strip()
    assert f"/login#token={token}" in first_out and token not in first_err  # stdout once; never the logs
    second_out, second_err = run_until_banner(serve_args(tmp_path, config, free_port(), free_port()), tmp_path,
                                              tty=False)
    assert token not in second_out + second_err
    assert f"(the API token is in {tmp_path / 'data' / 'api_token'})" in second_out, second_out


@pytest.mark.parametrize("forced, tty, text", [("json", True, False), ("text", False, True)])
def test_log_format_forces_either_format(tmp_path, forced, tty, text):
    _, stderr = run_until_banner(serve_args(tmp_path, TONE_LINE, free_port(), free_port(), "--log-format", forced),
                                 tmp_path, tty=tty)
    assert bool(TEXT_LINE.search(stderr)) is text and bool(json_lines(stderr)) is not text, stderr[:2000]


def test_an_unknown_log_format_is_a_usage_error(tmp_path):
    run = subprocess.run([sys.executable, "-m", "callbridge.app.cli", "serve", "--log-format", "xml;rm -rf /"],
                         capture_output=True, text=True, timeout=30, cwd=tmp_path, env=ENV)
    assert run.returncode == 2 and "invalid choice" in run.stderr and "Traceback" not in run.stderr


def held_socket(kind: int, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", port))
    if kind == socket.SOCK_STREAM:
        sock.listen()
    return sock


@pytest.mark.parametrize("held, purpose, option", [
    ("sip-udp", "SIP UDP", "--sip-port"), ("sip-tcp", "SIP TCP", "--sip-port"), ("http", "HTTP", "--http-port"),
])
def test_a_port_in_use_stops_start_up_with_one_line_and_status_2(tmp_path, held, purpose, option):
    sip_port, http_port = free_port(), free_port()
    kind, port = {"sip-udp": (socket.SOCK_DGRAM, sip_port), "sip-tcp": (socket.SOCK_STREAM, sip_port),
                  "http": (socket.SOCK_STREAM, http_port)}[held]
    with held_socket(kind, port):
        run = subprocess.run(serve_args(tmp_path, TONE_LINE, sip_port, http_port), capture_output=True, text=True,
                             timeout=START_TIMEOUT_S, cwd=tmp_path, env=ENV, stdin=subprocess.DEVNULL)
    assert run.returncode == 2, run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last == (f"callbridge: cannot start: {purpose} port {port} on 127.0.0.1 is already in use (another "
                    f"callbridge, or another server, listens there); choose another with {option}"), last
    assert "Traceback" not in run.stderr + run.stdout
    assert "callbridge ready" not in run.stdout
