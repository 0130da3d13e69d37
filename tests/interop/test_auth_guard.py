"""Online password guessing and number enumeration, attacked with the real SIPVicious tools.

Every attack is bounded in count and time and aims at a real server on loopback;
what counts is what the attacker's side received.
"""

from __future__ import annotations

import json
import re
import secrets
import select
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.sip_guess import authorization, first_challenge, guess_passwords, invite

from .conftest import SCENARIOS, free_port, run_sipp

pytestmark = pytest.mark.interop

PASSWORD = "s3cret"
TOKEN = "guard-test-token-0123456789abcdef"
NUMBERS = ("1001", "1002")
CONFIG = f"""
api: {{token: {TOKEN}}}
inbound_trunks:
  - name: office
    numbers: ["1001", "1002"]
    auth: {{username: alice, password: {PASSWORD}, realm: callbridge}}
"""
SCAN_RANGE = "1000-1010"  # the two configured numbers among nine that do not exist
# Longest any one SIPVicious run may take; it is killed then.
TOOL_TIMEOUT = 20.0


def sipvicious(tool: str) -> list[str]:
    """``sipvicious_svwar`` etc. from the venv (pyproject test extras), else on PATH."""
    local = Path(sys.executable).parent / f"sipvicious_{tool}"
    path = str(local) if local.exists() else shutil.which(f"sipvicious_{tool}")
    if path is None:
        pytest.fail("sipvicious is not installed; pip install -e '.[test]' installs it")
    return [path]


def run_tool(args: list[str], tmp_path: Path, timeout: float = TOOL_TIMEOUT) -> str:
    """Run to completion or ``timeout``, whichever is first; the output either way."""
    log = tmp_path / f"tool-{secrets.token_hex(3)}.log"
    with log.open("w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return log.read_text(errors="replace")


def api(server, path: str) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


def metric(server, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", api(server, "/metrics"), re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


def exchange(server, build: Callable[[tuple[str, int]], bytes], *, bind_host: str = "127.0.0.1",
             wait: float = 1.0) -> list[bytes]:
    """Send one request (built for our local address), collect the distinct responses for ``wait`` seconds."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((bind_host, 0))
        sock.sendto(build(sock.getsockname()), ("127.0.0.1", server.sip_port))
        responses = []
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if ready:
                responses.append(sock.recv(65535))
    return list(dict.fromkeys(responses))  # a final response is retransmitted until ACKed: count it once


def options(server, bind_host: str = "127.0.0.1") -> list[bytes]:
    return exchange(server, lambda local: (
        f"OPTIONS sip:1001@127.0.0.1:{server.sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        f"From: <sip:probe@{local[0]}>;tag={secrets.token_hex(4)}\r\nTo: <sip:1001@127.0.0.1>\r\n"
        f"Call-ID: {secrets.token_hex(8)}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode(), bind_host=bind_host)


def call(server, number: str, auth: str | None = None) -> list[bytes]:
    """An INVITE for ``number``, with credentials if given; every response to it."""
    target = ("127.0.0.1", server.sip_port)
    return exchange(server, lambda local: invite(target, local, number, authorization=auth), wait=0.7)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def scanner_view(response: bytes) -> tuple:
    """What a scanner can compare: status line, header names in order, challenges less their nonces."""
    head = response.split(b"\r\n\r\n", 1)[0].decode()
    lines = head.split("\r\n")
    names = [line.split(":", 1)[0].lower() for line in lines[1:]]
    challenges = [re.sub(r'nonce="[^"]*"', 'nonce="..."', line)
                  for line in lines if line.lower().startswith("www-auth")]
    return lines[0], names, challenges


def test_online_guessing_is_throttled_within_a_few_answers(server_factory):
    server = server_factory(CONFIG)
    run = guess_passwords(("127.0.0.1", server.sip_port), number="1001", username="alice", seconds=3.0)
    assert run.challenge is not None, "no 401 challenge to guess against"
    print(f"guesses sent {run.sent}, answered {run.answered} ({dict(run.answers)}), "
          f"{run.answers_per_second:.1f} answers/s over {run.elapsed:.1f} s")
    assert run.sent >= 100  # the guesser kept trying for the whole run
    assert run.answered < 100, f"{run.answered} guesses answered ({run.answers_per_second:.0f}/s)"
    assert set(run.answers) == {403}
    assert json.loads(api(server, "/healthz"))["status"] == "ok"


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("method", ["INVITE", "REGISTER"])
def test_svwar_cannot_tell_the_numbers_that_exist(server_factory, tmp_path, method, force):
    server = server_factory(CONFIG)
    args = sipvicious("svwar") + ["-m", method, "-e", SCAN_RANGE, "-b", "127.0.0.1", "-p", str(server.sip_port),
                                  "--maximumtime", "5"] + (["--force"] if force else []) + ["127.0.0.1"]
    output = run_tool(args, tmp_path)
    found = dict(re.findall(r"^\|\s*(\d+)\s*\|\s*(\S+)\s*\|", output, re.MULTILINE))
    print(output[-1500:])
    # Nothing listed, or every extension listed alike: either way the real ones do not stand out.
    assert not found or (len(found) == 11 and len(set(found.values())) == 1), f"svwar told them apart: {found}"


def test_known_and_unknown_numbers_get_the_same_challenge_and_only_auth_reveals_404(server_factory):
    server = server_factory(CONFIG)
    known, unknown = call(server, "1001"), call(server, "1009")
    assert [status_of(r) for r in known] == [401], known
    assert [scanner_view(r) for r in known] == [scanner_view(r) for r in unknown]
    challenge = first_challenge(unknown[0])
    uri = f"sip:1009@127.0.0.1:{server.sip_port}"
    answered = call(server, "1009", authorization(challenge, username="alice", password=PASSWORD, uri=uri, nc=1))
    assert [status_of(r) for r in answered if status_of(r) >= 200] == [404]


def test_svcrack_does_not_find_the_password(server_factory, tmp_path):
    server = server_factory(CONFIG)
    words = tmp_path / "words.txt"
    guesses = [f"guess{i}" for i in range(40)] + [PASSWORD] + [f"guess{i}" for i in range(40, 60)]
    words.write_text("\n".join(guesses) + "\n")
    # -n reuses one nonce: the fastest mode, and the one servers without a guard fall to.
    args = sipvicious("svcrack") + ["-v", "-v", "-m", "INVITE", "-u", "alice", "-e", "1001", "-d", str(words), "-n",
                                    "--maximumtime", "3", "-b", "127.0.0.1", "-p", str(server.sip_port), "127.0.0.1"]
    output = run_tool(args, tmp_path, timeout=12.0)
    statuses = re.findall(r"Received response: SIP/2\.0 (\d{3})", output)
    print(f"svcrack tried {output.count('trying ')} passwords; answers: "
          f"{ {s: statuses.count(s) for s in set(statuses)} }")
    assert f"trying {PASSWORD}" in output  # the password was sent...
    assert "The password for" not in output
    # ...and never answered otherwise than a wrong one (any other status marks the right guess).
    assert set(statuses) <= {"401", "403"}, f"svcrack saw {sorted(set(statuses))}"


def test_a_ban_shows_in_the_api_and_metrics_spares_other_sources_and_expires(server_factory, tmp_path):
    ban_seconds = 6
    server = server_factory(CONFIG + f"security: {{ban_seconds: {ban_seconds}}}\n")

    def phone_call() -> None:
        # alice's phone on 127.0.0.2: SIPp answers the 401 with the right password.
        result = run_sipp([f"127.0.0.1:{server.sip_port}", "-i", "127.0.0.2", "-p", str(free_port()), "-m", "1",
                           "-s", "1001", "-sf", str(SCENARIOS / "uac_auth.xml"), "-au", "alice", "-ap", PASSWORD],
                          cwd=tmp_path, timeout=20)
        assert result.returncode == 0, result.output

    phone_call()  # it has logged in before the attack
    run = guess_passwords(("127.0.0.1", server.sip_port), number="1001", username="alice", seconds=1.0)
    assert run.answered < 100
    bans = json.loads(api(server, "/api/security/bans"))["bans"]
    source_bans = [b for b in bans if b["kind"] == "source"]
    assert [b["key"] for b in source_bans] == ["127.0.0.1"], bans
    assert 0 < source_bans[0]["expires_in_s"] <= ban_seconds
    assert metric(server, "callbridge_banned_sources") == 1
    assert metric(server, "callbridge_auth_failures_total") >= 10
    assert options(server) == []  # banned: not even OPTIONS is answered
    phone_call()  # another address, and a device that logged in before: still through
    calls = [c for c in json.loads(api(server, "/api/calls"))["calls"] if c.get("answered_at")]
    assert len(calls) == 2
    deadline = time.monotonic() + ban_seconds + 5
    while json.loads(api(server, "/api/security/bans"))["bans"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert json.loads(api(server, "/api/security/bans"))["bans"] == []
    assert metric(server, "callbridge_banned_sources") == 0
    assert [status_of(r) for r in options(server)] == [200]


def test_server_headers_carry_no_version(server_factory):
    server = server_factory(CONFIG)
    responses = options(server) + call(server, "1001")
    assert [status_of(r) for r in responses] == [200, 401]
    products = re.findall(rb"\r\n(?:Server|User-Agent):\s*([^\r\n]*)", b"".join(responses), re.IGNORECASE)
    assert products, "no Server header"
    assert all(not re.search(rb"\d", value) for value in products), products
