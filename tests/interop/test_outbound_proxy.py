"""An outbound trunk with ``outbound_proxy`` sends its INVITE to the proxy, with a pre-loaded Route.

The carrier's own address is a UDP socket the test holds and counts: nothing may reach it. A SIPp UAS
stands in for the proxy (RFC 3261 §16: it would route on the Request-URI); its trace shows the
INVITE it received: the carrier's Request-URI and our ``Route: <proxy;lr>`` (§8.1.2).
"""

from __future__ import annotations

import re
import socket
import time

import pytest

from .conftest import free_port, sipp_messages, start_sipp
from .test_outbound import dispatch_body, finish

pytestmark = pytest.mark.interop


def proxied_config(carrier_port: int, proxy_port: int) -> str:
    return f"""
outbound_trunks:
  - name: carrier
    host: 127.0.0.1
    port: {carrier_port}
    numbers: ["+15550001111"]
    outbound_proxy: sip:127.0.0.1:{proxy_port}
"""


def test_outbound_calls_go_through_the_trunks_outbound_proxy(server_factory, tmp_path):
    carrier = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    carrier.bind(("127.0.0.1", 0))
    carrier.setblocking(False)
    carrier_port = carrier.getsockname()[1]
    proxy_port = free_port()
    server = server_factory(proxied_config(carrier_port, proxy_port))
    proxy = start_sipp(["-sn", "uas", "-i", "127.0.0.1", "-p", str(proxy_port), "-m", "1", "-trace_msg",
                        "-timeout", "30", "-timeout_error"], cwd=tmp_path)
    try:
        time.sleep(0.5)  # let SIPp bind
        status, body = server.post("/api/dispatch", dispatch_body(0))
        assert status == 201, body
        call_id = body["call_id"]
        server.wait_for(lambda: server.get(f"/api/calls/{call_id}")["status"] == "active", timeout=15,
                        what="the call through the proxy to be answered")
        status, _ = server.post(f"/api/calls/{call_id}/hangup", {})
        assert status == 200
        output = finish(proxy)
    finally:
        if proxy.poll() is None:
            proxy.kill()
    assert proxy.returncode == 0, output
    trace = sipp_messages(tmp_path)
    invite = trace[trace.index("INVITE sip:"):]
    invite = invite[:invite.index("\n\n")] if "\n\n" in invite else invite
    assert invite.startswith(f"INVITE sip:+15550102030@127.0.0.1:{carrier_port} SIP/2.0"), invite
    routes = re.findall(r"^Route:\s*(.+?)\r?$", invite, re.MULTILINE | re.IGNORECASE)
    assert routes == [f"<sip:127.0.0.1:{proxy_port};lr>"], invite
    assert "BYE sip:" in trace  # the hang-up reached the callee too
    received = 0
    while True:
        try:
            carrier.recv(65535)
        except BlockingIOError:
            break
        received += 1
    carrier.close()
    assert received == 0, "the carrier's address got datagrams directly, past the proxy"
    record = server.get(f"/api/calls/{call_id}")
    assert record["trunk"] == "carrier" and record["status"] == "hangup"


def test_an_outbound_proxy_that_is_not_a_sip_host_uri_is_refused(server_factory):
    with pytest.raises(Exception, match="outbound_proxy"):
        server_factory(proxied_config(5999, 5998).replace("sip:127.0.0.1:5998", "sip:someone@127.0.0.1"))
