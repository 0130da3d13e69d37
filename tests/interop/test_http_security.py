"""Attacks on the HTTP API of a real ``callbridge serve``, over loopback sockets (docs/SECURITY.md).

What must hold: a token on loopback too; CSRF-shaped requests (text/plain, a foreign Origin) place no
call, token or not, as a UDP socket standing in for the callee shows; a foreign Host is refused (DNS
rebinding); big bodies get 413 without being read; deep JSON gets a short 400; JSON bodies decode off
the event loop, so a call's RTP keeps flowing; one address holds a bounded number of connections, and
headers dribbled past the deadline close the connection.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import stat
import subprocess
import threading
import time

import pytest

from .conftest import SCENARIOS, TONE_LINE, free_port, require_tool, start_server, stop_server

pytestmark = pytest.mark.interop

EVIL_ORIGIN = "http://evil.example"
HEADER_TIMEOUT_S = 2.0
PER_CLIENT = 32
ROUNDS = 25  # of big bodies posted while RTP is measured  # api.max_connections_per_client's default
# The test's "attackers" use other loopback addresses than its honest client (127.0.0.1).
ATTACKER, DRIBBLER = "127.0.0.2", "127.0.0.3"
SECURE_TONE_LINE = TONE_LINE + f"api:\n  header_timeout_s: {HEADER_TIMEOUT_S}\n"


@pytest.fixture
def server(tmp_path):
    running = start_server(tmp_path, SECURE_TONE_LINE)
    yield running
    stop_server(running)


def request(server, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None,
            token: bool = True, source: str = "127.0.0.1") -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10, source_address=(source, 0))
    try:
        connection.request(method, path, body=body, headers={**(server.auth if token else {}), **(headers or {})})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


class UdpCallee:
    """Stands in for the callee's SIP port: records every datagram (an INVITE, if one is ever sent)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def received(self, wait: float) -> list[bytes]:
        got, deadline = [], time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self.sock], [], [], left)[0]:
                got.append(self.sock.recv(65535))
        return got

    def close(self) -> None:
        self.sock.close()


def test_a_token_is_generated_once_stored_0600_required_on_loopback_and_reused(tmp_path):
    server = start_server(tmp_path, SECURE_TONE_LINE)
    try:
        path = tmp_path / "data" / "api_token"
        token = path.read_text().strip()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(token) >= 40
        first_log = server.log_path.read_text()
        assert token in first_log and str(path) in first_log  # printed, with where it lives
        for method, where in (("GET", "/api/calls"), ("GET", "/api/media"), ("GET", "/metrics"),
                              ("GET", "/api/events"), ("GET", "/api/trunks"), ("POST", "/api/calls")):
            status, headers, _ = request(server, method, where, token=False)
            assert status == 401 and headers["www-authenticate"].startswith("Bearer"), (where, status)
        status, _, _ = request(server, "GET", "/api/calls", token=False, headers={"Authorization": "Bearer x" * 8})
        assert status == 401
        assert request(server, "GET", "/healthz", token=False)[0] == 200  # probes need no secret
        assert request(server, "GET", "/api/calls")[0] == 200
        assert request(server, "GET", "/metrics")[0] == 200
    finally:
        stop_server(server)
    restarted = start_server(tmp_path, SECURE_TONE_LINE)
    try:
        assert path.read_text().strip() == token
        assert token not in restarted.log_path.read_text()  # announced on the first start only
        status, _, body = request(restarted, "GET", "/api/calls")
        assert status == 200 and json.loads(body)["calls"] == [] and json.loads(body)["total"] == 0
    finally:
        stop_server(restarted)


def test_csrf_shaped_requests_place_no_call_with_or_without_the_token(server):
    callee = UdpCallee()
    try:
        dial = json.dumps({"to": f"sip:callee@127.0.0.1:{callee.port}"}).encode()
        attempts = [
            ({"Content-Type": "text/plain", "Origin": EVIL_ORIGIN}, False, 403),  # what a web page can send
            ({"Content-Type": "text/plain", "Origin": EVIL_ORIGIN}, True, 403),  # Origin refused before the token
            ({"Content-Type": "application/json", "Origin": EVIL_ORIGIN}, True, 403),
            ({"Content-Type": "application/json", "Origin": "null"}, True, 403),  # sandboxed frame, file://
            ({"Content-Type": "text/plain"}, True, 415),
            ({"Content-Type": "application/x-www-form-urlencoded"}, True, 415),
            ({"Content-Type": "application/json"}, False, 401),
        ]
        for headers, with_token, expected in attempts:
            status, reply_headers, body = request(server, "POST", "/api/calls", body=dial, headers=headers,
                                                  token=with_token)
            assert status == expected, (headers, with_token, status, body)
            assert reply_headers.get("access-control-allow-origin") is None
        assert callee.received(wait=1.5) == [], "a refused request still dialled"
        assert server.calls() == []
        # The same request, as the API's own client sends it: the callee hears the INVITE.
        status, _, body = request(server, "POST", "/api/calls", body=dial,
                                  headers={"Content-Type": "application/json", "Origin": f"http://localhost:{server.http_port}"})
        assert status == 201, body
        invites = [d for d in callee.received(wait=3.0) if d.startswith(b"INVITE ")]
        assert invites, "the control request did not reach the callee"
    finally:
        callee.close()


def test_a_host_that_is_not_ours_is_refused(server):
    port = server.http_port
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.nip.example:{port}", f"127.0.0.1:{port + 1}"):
        status, _, body = request(server, "GET", "/api/calls", headers={"Host": host})
        assert status == 421 and b"allowed_hosts" in body, (host, status)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert request(server, "GET", "/api/calls", headers={"Host": host})[0] == 200, host


def send_headers(sock: socket.socket, server, length: int | None) -> None:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    sock.sendall((f"POST /api/dispatch HTTP/1.1\r\nHost: 127.0.0.1:{server.http_port}\r\n"
                  f"Authorization: Bearer {server.api_token}\r\nContent-Type: application/json\r\n"
                  f"{framing}\r\n\r\n").encode())


def read_status(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return int(head.split(b" ", 2)[1])


def push_until_answered(sock: socket.socket, framed_chunk: bytes, limit_bytes: int) -> int:
    """Send until the server answers (or closes); return how many body bytes went out before that."""
    sent = 0
    sock.setblocking(False)
    try:
        while sent < limit_bytes:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sent += sock.send(framed_chunk)
            except BlockingIOError:
                select.select([sock], [sock], [], 0.5)
            except (BrokenPipeError, ConnectionResetError):
                break
    finally:
        sock.setblocking(True)
    return sent


def test_big_bodies_get_413_without_being_read(server):
    eight_mb = 8 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        started = time.monotonic()
        send_headers(sock, server, eight_mb)
        pushed = push_until_answered(sock, b"[" + b"0," * 32_767 + b"0", eight_mb)
        assert read_status(sock) == 413
        sized_s = time.monotonic() - started
        assert sized_s < 2.0
    chunk = b"[" * 65_536
    framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        send_headers(sock, server, None)
        pushed = push_until_answered(sock, framed, 64 * 1024 * 1024)
        assert read_status(sock) == 413
    # Counted while reading: the server stopped at 1 MB; what else went out sat in socket buffers.
    print(f"8 MB sized body: 413 after {sized_s * 1000:.0f} ms; chunked: 413 after {pushed / 1e6:.1f} MB pushed")
    assert pushed < 16 * 1024 * 1024, pushed
    assert request(server, "GET", "/api/calls")[0] == 200


def test_deep_nesting_gets_a_short_400_and_no_traceback(server):
    for body in (b"[" * 200_000, b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        status, _, reply = request(server, "POST", "/api/dispatch", body=body,
                                   headers={"Content-Type": "application/json"})
        assert status == 400 and json.loads(reply) == {"error": "JSON nested deeper than 64 levels"}, reply[:200]
    status, _, reply = request(server, "POST", "/api/calls", body=b"[" * 64 + b"]" * 64,
                               headers={"Content-Type": "application/json"})
    assert status == 422, reply  # 64 deep is allowed: the handler says what is wrong with it
    log = server.log_path.read_text()
    assert "Traceback" not in log and "RecursionError" not in log


def rtp_gaps(sock: socket.socket, until: float) -> list[tuple[float, float]]:
    """(arrival, gap since the previous packet) for every RTP packet until ``until``."""
    arrivals = []
    while (left := until - time.monotonic()) > 0:
        if select.select([sock], [], [], left)[0]:
            sock.recv(2048)
            arrivals.append(time.monotonic())
    return [(b, b - a) for a, b in zip(arrivals, arrivals[1:], strict=False)]


def test_rtp_keeps_flowing_while_big_bodies_are_posted(server, tmp_path):
    """A live call's RTP, counted where it lands, while the API is fed a 60 MB body, 1 MB of 64-deep arrays
    (500,000 lists: ~200 ms to decode and ~60 ms to free, GIL held, were it decoded) and 1 MB objects of
    20,000 keys (the most the guard decodes)."""
    sipp = require_tool("sipp")
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    (tmp_path / "caller").mkdir()
    caller = subprocess.Popen(
        [sipp, f"127.0.0.1:{server.sip_port}", "-sf", str(SCENARIOS / "uac_listen.xml"), "-i", "127.0.0.1",
         "-p", str(free_port()), "-m", "1", "-d", "14000", "-set", "rtp_port", str(rtp.getsockname()[1]),
         "-nostdin", "-timeout", "40", "-timeout_error"],
        cwd=tmp_path / "caller", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert select.select([rtp], [], [], 10)[0], "no RTP from the tone line"
        quiet = rtp_gaps(rtp, time.monotonic() + 2.0)
        unit = b"[" * 63 + b"]" * 63  # 64 deep with the outer array
        nested = b"[" + b",".join([unit] * 7800) + b"]"
        keys = b"{" + b",".join(b'"k%05d":"%s"' % (i, b"v" * 38) for i in range(19_999)) + b"}"
        assert len(nested) < 1024 * 1024 and len(keys) < 1024 * 1024
        window_start = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
            send_headers(sock, server, 60 * 1024 * 1024)
            push_until_answered(sock, b" " * 65_536, 60 * 1024 * 1024)
            assert read_status(sock) == 413
        decoded = 0
        done = threading.Event()

        def post_big_bodies():
            nonlocal decoded
            try:
                for _ in range(ROUNDS):
                    status, _, reply = request(server, "POST", "/api/dispatch", body=nested,
                                               headers={"Content-Type": "application/json"})
                    assert status == 400 and b"more than 20000 values" in reply, (status, reply)
                    status, _, _ = request(server, "POST", "/api/dispatch", body=keys,
                                           headers={"Content-Type": "application/json"})
                    decoded += status == 422  # decoded in full, then refused as a dispatch
            finally:
                done.set()

        poster = threading.Thread(target=post_big_bodies, daemon=True)
        poster.start()
        gaps = rtp_gaps(rtp, time.monotonic() + 0.2)
        while not done.is_set():
            gaps += rtp_gaps(rtp, time.monotonic() + 0.2)
        poster.join(timeout=30)
        window = time.monotonic() - window_start
    finally:
        output, _ = caller.communicate(timeout=40)
        rtp.close()
    assert decoded == ROUNDS, "the 1 MB bodies were not decoded"
    worst_quiet = max(g for _, g in quiet)
    worst = max(g for _, g in gaps)
    print(f"RTP gaps: quiet max {worst_quiet * 1000:.0f} ms; while posting ({window:.1f} s) "
          f"max {worst * 1000:.0f} ms over {len(gaps)} packets")
    assert len(gaps) >= window * 50 * 0.7, "RTP stopped flowing"
    # Decoding the 64-deep body would stall every call ~260 ms; what the guard decodes costs a few ms.
    assert worst < max(0.1, worst_quiet + 0.05), f"RTP stalled {worst * 1000:.0f} ms while bodies were posted"
    assert caller.returncode == 0, output


def is_closed(sock: socket.socket) -> bool:
    """Has the server closed it? (EOF or reset waiting to be read; nothing to read means still open.)"""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_one_address_holds_a_bounded_number_of_half_open_connections(server):
    sockets = []
    try:
        for _ in range(3000):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((ATTACKER, 0))
            sock.settimeout(5)
            try:
                sock.connect(("127.0.0.1", server.http_port))
            except OSError:
                sock.close()
                continue
            sock.send(b"GET /api/calls HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the end of the headers
            sockets.append(sock)
        assert len(sockets) > 2000, "could not even open the connections"
        time.sleep(0.5)
        held = [s for s in sockets if not is_closed(s)]
        print(f"{len(sockets)} half-open connections opened from {ATTACKER}; {len(held)} held by the server")
        assert 0 < len(held) <= PER_CLIENT
        # Another address is still served meanwhile.
        assert request(server, "GET", "/api/calls")[0] == 200
        # And the held ones go at the header deadline.
        deadline = time.monotonic() + HEADER_TIMEOUT_S + 3
        while any(not is_closed(s) for s in held) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(is_closed(s) for s in held)
    finally:
        for sock in sockets:
            sock.close()


def test_headers_dribbled_past_the_deadline_close_the_connection(server):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((DRIBBLER, 0))
        sock.connect(("127.0.0.1", server.http_port))
        started = time.monotonic()
        sock.sendall(b"GET /api/calls HTTP/1.1\r\n")
        closed_after = None
        for index in range(40):  # 0.25 s apart: 10 s at most
            try:
                sock.sendall(b"X-Slow-%d: y\r\n" % index)
            except OSError:
                closed_after = time.monotonic() - started
                break
            time.sleep(0.25)
            if is_closed(sock):
                closed_after = time.monotonic() - started
                break
    assert closed_after is not None, "the dribbling connection was never closed"
    assert HEADER_TIMEOUT_S - 0.3 <= closed_after <= HEADER_TIMEOUT_S + 2.0, closed_after
    assert request(server, "GET", "/api/calls")[0] == 200
