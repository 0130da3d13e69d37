"""Behind a trusted proxy, the caller is whom the proxy names in X-Source-IP; from anyone else the header
is ignored. Measured with SIPp and raw UDP peers against a real server.

SIPp on 127.0.0.1 plays the proxy (Kamailio appends ``X-Source-IP: $si;port=$sp;proto=$pr``);
SIPp on 127.0.0.2 plays a caller that is not one. The trunk admits only 198.51.100.0/24, an
address no loopback peer has: a call is admitted only if the server believed the header.
Before this change every call here was matched by its loopback address: the admitted call got
404, and each caller behind the proxy shared the proxy's rate budget.
"""

from __future__ import annotations

import socket
import time

import pytest

from .conftest import RunningServer
from .worker_peers import sipp_once, stored_calls

pytestmark = pytest.mark.interop

CARRIER = "198.51.100.7;port=5060;proto=udp"
# The office trunk serves one number, to the one address 127.0.0.2 (a caller that is no proxy).
TRUNKS = """
inbound_trunks:
  - name: carrier
    allowed_cidrs: ["198.51.100.0/24"]
  - name: office
    numbers: ["office"]
    allowed_cidrs: ["127.0.0.2/32"]
"""


def proxy_config(trusted: str = "127.0.0.1/32", extra: str = "") -> str:
    return f"server:\n  trusted_proxies: [\"{trusted}\"]\n{extra}{TRUNKS}"


def test_trusted_proxy_names_the_caller_the_trunk_acl_matches(server_factory, tmp_path):
    server = server_factory(proxy_config())
    code, output = sipp_once(server, tmp_path, "admitted", scenario="uac_source_header.xml",
                             extra=["-set", "source", CARRIER])
    assert code == 0, output
    code, output = sipp_once(server, tmp_path, "outside", scenario="uac_source_header_refused.xml",
                             extra=["-set", "source", "203.0.113.5;port=5060;proto=udp"])
    assert code == 0, output  # named, but outside every trunk: 404
    calls = server.calls()
    assert len(calls) == 1, calls
    call = calls[0]
    assert call["trunk"] == "carrier" and call["answered_at"] is not None
    invite = next(e for e in call["events"] if e["type"] == "invite")
    assert invite["source"].startswith("udp:198.51.100.7:5060 via udp:127.0.0.1:"), invite
    # The proxy's header never reaches the record or the agent's handoff (built from sip_headers);
    # the caller's own X- headers still do.
    assert call["sip_headers"] == {"X-Customer": "42"}, call["sip_headers"]


def test_untrusted_source_header_is_ignored_and_removed(server_factory, tmp_path):
    server = server_factory(proxy_config())
    # From 127.0.0.2, which is no proxy: naming the carrier's address gets it nothing (404, where
    # believing the header would have given it the carrier's trunk and a 200).
    code, output = sipp_once(server, tmp_path, "spoof", scenario="uac_source_header_refused.xml", bind="127.0.0.2",
                             extra=["-set", "source", CARRIER])
    assert code == 0, output
    # And naming an address outside the office trunk changes nothing for a caller the trunk admits.
    code, output = sipp_once(server, tmp_path, "office", scenario="uac_source_header.xml", bind="127.0.0.2",
                             service="office", extra=["-set", "source", "203.0.113.5;port=5060;proto=udp"])
    assert code == 0, output
    calls = server.calls()
    assert [c["trunk"] for c in calls] == ["office"], calls
    invite = next(e for e in calls[0]["events"] if e["type"] == "invite")
    assert invite["source"].startswith("udp:127.0.0.2:"), invite
    assert calls[0]["sip_headers"] == {"X-Customer": "42"}, calls[0]["sip_headers"]
    log = server.log_path.read_text(errors="replace")
    assert "ignored X-Source-IP header from udp:127.0.0.2" in log and "untrusted" in log


def invite_bytes(port: int, n: int, headers: str) -> bytes:
    sdp = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    return (f"INVITE sip:demo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-m{n};rport\r\n"
            f"From: <sip:a@127.0.0.1>;tag=m{n}\r\nTo: <sip:demo@127.0.0.1>\r\nCall-ID: malformed-{n}\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\n{headers}"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}").encode()


def final_status(sock: socket.socket, server: RunningServer, data: bytes) -> int:
    """The first final response's status (provisionals skipped)."""
    sock.sendto(data, ("127.0.0.1", server.sip_port))
    while True:
        status = int(sock.recv(65535).split(b" ", 2)[1])
        if status >= 200:
            return status


MALFORMED = [
    "X-Source-IP: 198.51.100.7:5060\r\n",  # host:port is not the format
    "X-Source-IP: 198.51.100.7, 203.0.113.5\r\n",
    "X-Source-IP: 198.51.100.7\r\nX-Source-IP: 203.0.113.5\r\n",  # a proxy that appended without removing
    "X-Source-IP: 203.0.113.5\r\nX-Source-IP: 198.51.100.7\r\n",
    "X-Source-IP: carrier.example;port=5060\r\n",
    "X-Source-IP: 198.51.100.7;port=99999\r\n",
    "X-Source-IP: 198.51.100.7;port=5060;proto=udp;evil=1\r\n",
    "X-Source-IP: 198.51.100.7\r\n ;port=5060\r\n",  # folded
    "X-Source-IP: " + "9" * 5000 + "\r\n",
    "X-Source-IP: \r\n",
    "X-Source-IP: 198.51.100.7%eth0\r\n",
]


def test_malformed_source_headers_are_ignored(server_factory):
    server = server_factory(proxy_config(extra="  new_requests_per_source: 0\n"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))  # the trusted proxy's address
        sock.settimeout(5)
        port = sock.getsockname()[1]
        statuses = [final_status(sock, server, invite_bytes(port, n, headers)) for n, headers in enumerate(MALFORMED)]
        # Not one of them got the carrier's trunk: each was matched by the proxy's own address.
        assert statuses == [404] * len(MALFORMED), statuses
        # The same request with the header well formed is admitted (so 404 was the header's doing).
        good = invite_bytes(port, 99, f"X-Source-IP: {CARRIER}\r\n")
        assert final_status(sock, server, good) == 200
    lines = [line for line in server.log_path.read_text(errors="replace").splitlines() if "X-Source-IP" in line]
    assert 1 <= len(lines) <= 3, lines  # throttled: one line per source per interval, with a count
    # The admitted call is still up (never ACKed): the first SIGTERM drains, the second ends it.
    server.process.terminate()
    time.sleep(0.5)
    server.process.terminate()
    assert server.process.wait(timeout=20) == 0


def ask_options(sock: socket.socket, server: RunningServer, n: int, source_ip: str) -> int:
    port = sock.getsockname()[1]
    host = sock.getsockname()[0]
    data = (f"OPTIONS sip:demo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-r{n};rport\r\n"
            f"From: <sip:a@{host}>;tag=r{n}\r\nTo: <sip:demo@127.0.0.1>\r\nCall-ID: rate-{n}@{host}\r\n"
            f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nX-Source-IP: {source_ip};port=5060;proto=udp\r\n"
            f"Content-Length: 0\r\n\r\n").encode()
    sock.sendto(data, ("127.0.0.1", server.sip_port))
    try:
        return int(sock.recv(65535).split(b" ", 2)[1])
    except TimeoutError:
        return 0  # dropped unanswered


@pytest.mark.parametrize("bind, expected", [
    # Through the trusted proxy each named caller has its own budget (burst 2, then 480: about
    # that caller, not a 503 that would make the proxy fail the whole worker over).
    ("127.0.0.1", [200, 200, 480, 200, 200, 480]),
    # From an untrusted source the header is ignored: one budget for all six.
    ("127.0.0.2", [200, 200, 503, 503, 503, 503]),
])
def test_rate_limit_counts_the_named_caller(server_factory, bind, expected):
    server = server_factory("server:\n  trusted_proxies: [\"127.0.0.1/32\"]\n"
                            "  new_requests_per_source: 0.01\n  new_requests_burst: 2\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((bind, 0))
        sock.settimeout(3)
        statuses = [ask_options(sock, server, n, caller)
                    for n, caller in enumerate(["203.0.113.5"] * 3 + ["203.0.113.6"] * 3)]
    assert statuses == expected, statuses


def test_records_of_proxied_calls_survive_exit(server_factory, tmp_path):
    """The header stays out of what is written to the database, not only out of the API's view."""
    server = server_factory(proxy_config())
    code, output = sipp_once(server, tmp_path, "admitted", scenario="uac_source_header.xml",
                             extra=["-set", "source", CARRIER])
    assert code == 0, output
    server.process.terminate()
    assert server.process.wait(timeout=20) == 0
    records = stored_calls(server)
    assert len(records) == 1 and records[0]["sip_headers"] == {"X-Customer": "42"}, records
    assert "198.51.100.7" in str(records[0]["events"]) and "X-Source-IP" not in str(records[0])
