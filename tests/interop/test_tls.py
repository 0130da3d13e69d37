"""SIP over TLS through ``callbridge serve`` with a test CA (SIPp has no TLS, so a TLS client socket plays the peer)."""

from __future__ import annotations

import socket
import ssl

import pytest

from tests.support.certs import make_test_certificates

from .conftest import free_port

pytestmark = pytest.mark.interop


def test_options_over_tls(server_factory, tmp_path):
    certs = make_test_certificates(tmp_path / "certs")
    sips_port = free_port()
    server = server_factory(
        f"server:\n  tls: {{cert: {certs.server_cert}, key: {certs.server_key}}}\n",
        extra_args=["--sips-port", str(sips_port)],
    )
    context = ssl.create_default_context(cafile=str(certs.ca_cert))
    request = (
        f"OPTIONS sip:demo@127.0.0.1:{sips_port};transport=tls SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-tls1\r\nFrom: <sips:probe@127.0.0.1>;tag=t1\r\n"
        "To: <sips:demo@127.0.0.1>\r\nCall-ID: tls-1@probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", sips_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(request)
            reply = tls.recv(4096)
    assert reply.startswith(b"SIP/2.0 200"), reply[:200]
    assert b"Call-ID: tls-1@probe" in reply
    assert server.get("/healthz")["status"] == "ok"
