"""SipTransports over real sockets on 127.0.0.1 with ephemeral ports."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from callbridge.sip.errors import SipParseError
from callbridge.sip.parser import parse_message
from callbridge.sip.tls import client_context, server_context
from callbridge.sip.transport import Address, SipTransports, TransportLimits
from tests.support.certs import TestCertificates, make_test_certificates

HOST = "127.0.0.1"
WAIT = 3.0  # generous upper bound for anything that should happen "now"


def options(n: int = 1, *, body: bytes = b"") -> bytes:
    head = (
        f"OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-test-{n}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:alice@127.0.0.1>;tag=a{n}\r\n"
        f"To: <sip:bob@127.0.0.1>\r\n"
        f"Call-ID: call-{n}@test\r\n"
        f"CSeq: {n} OPTIONS\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def ok(n: int = 1) -> bytes:
    return (
        f"SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-test-{n}\r\n"
        f"From: <sip:alice@127.0.0.1>;tag=a{n}\r\n"
        f"To: <sip:bob@127.0.0.1>;tag=b{n}\r\n"
        f"Call-ID: call-{n}@test\r\n"
        f"CSeq: {n} OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


class Inbox:
    """Collects what a SipTransports hands up."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, Address]] = []
        self.send_errors: list[tuple[Address, BaseException]] = []
        self.reply: Callable[[bytes, Address], None] | None = None

    def __call__(self, data: bytes, source: Address) -> None:
        self.messages.append((data, source))
        if self.reply is not None:
            self.reply(data, source)

    def on_send_error(self, destination: Address, error: BaseException) -> None:
        self.send_errors.append((destination, error))

    async def wait(self, count: int, what: str = "messages") -> None:
        await until(lambda: len(getattr(self, what)) >= count)


async def until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., SipTransports]]:
    made: list[SipTransports] = []

    def factory(inbox: Inbox, **kwargs: object) -> SipTransports:
        transports = SipTransports(inbox, on_send_error=inbox.on_send_error, **kwargs)  # type: ignore[arg-type]
        made.append(transports)
        return transports

    yield factory
    for transports in made:
        await transports.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return make_test_certificates(tmp_path_factory.mktemp("certs"))


async def open_raw(address: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(address.host, address.port)


async def read_message(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(WAIT):
        head = await reader.readuntil(b"\r\n\r\n")
        match = re.search(rb"(?im)^content-length:[ \t]*(\d+)", head)
        body = await reader.readexactly(int(match.group(1))) if match else b""
    return head + body


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    try:
        async with asyncio.timeout(WAIT):
            return await reader.read(65536) == b""
    except ConnectionResetError:
        return True


# -- UDP -----------------------------------------------------------------


async def test_udp_round_trip(make: Callable[..., SipTransports]) -> None:
    inbox_a, inbox_b = Inbox(), Inbox()
    a, b = make(inbox_a), make(inbox_b)
    await a.start(HOST, udp_port=0)
    await b.start(HOST, udp_port=0)
    b_addr, a_addr = b.local_address("udp"), a.local_address("udp")
    assert b_addr.port != 0 and b_addr.transport == "udp"
    inbox_b.reply = lambda data, source: b.send(ok(), source)

    a.send(options(), b_addr)
    await inbox_a.wait(1)

    assert inbox_b.messages == [(options(), a_addr)]  # sent from the listening socket (RFC 3581)
    assert inbox_a.messages == [(ok(), b_addr)]
    assert parse_message(inbox_a.messages[0][0]).headers.get("CSeq") == "1 OPTIONS"


async def test_udp_oversize_datagram_dropped(make: Callable[..., SipTransports],
                                             caplog: pytest.LogCaptureFixture) -> None:
    inbox = Inbox()
    server = make(inbox, limits=TransportLimits(max_udp_message=1024))
    await server.start(HOST, udp_port=0)
    addr = server.local_address("udp")
    caplog.set_level(logging.WARNING, "callbridge.sip.transport")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(options(1, body=b"x" * 2000), (addr.host, addr.port))
        sock.sendto(b"\r\n\r\n", (addr.host, addr.port))  # keep-alive datagram: ignored silently
        sock.sendto(options(2), (addr.host, addr.port))
        await inbox.wait(1)
        await asyncio.sleep(0.05)
    assert [data for data, _ in inbox.messages] == [options(2)]
    drops = [r for r in caplog.records if getattr(r, "sip_drop_reason", None) == "udp-size"]
    assert len(drops) == 1 and drops[0].sip_peer_host == HOST  # type: ignore[attr-defined]


async def test_udp_icmp_unreachable_is_not_fatal(make: Callable[..., SipTransports]) -> None:
    inbox_a, inbox_b = Inbox(), Inbox()
    a, b = make(inbox_a), make(inbox_b)
    await a.start(HOST, udp_port=0)
    await b.start(HOST, udp_port=0)
    dead = Address(HOST, free_port(socket.SOCK_DGRAM), "udp")
    for _ in range(3):
        a.send(options(), dead)  # loopback answers with ICMP port unreachable
        await asyncio.sleep(0.01)
    # Linux only reports ICMP errors to connected UDP sockets; feed one in directly.
    a._udp.protocol.error_received(ConnectionRefusedError(111, "Connection refused"))  # type: ignore[union-attr]
    a.send(options(2), b.local_address("udp"))
    await inbox_b.wait(1)
    assert inbox_b.messages[0][0] == options(2)


async def test_rate_limiter_drops_excess(make: Callable[..., SipTransports], caplog: pytest.LogCaptureFixture) -> None:
    inbox = Inbox()
    server = make(inbox, limits=TransportLimits(rate_limit=1.0, rate_burst=5))
    await server.start(HOST, udp_port=0)
    addr = server.local_address("udp")
    caplog.set_level(logging.WARNING, "callbridge.sip.transport")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for n in range(20):
            sock.sendto(options(n), (addr.host, addr.port))
        await inbox.wait(5)
        await asyncio.sleep(0.1)
    assert [data for data, _ in inbox.messages] == [options(n) for n in range(5)]
    # The drops are logged, but only once per interval and source.
    assert len([r for r in caplog.records if getattr(r, "sip_drop_reason", None) == "rate"]) == 1


async def test_callback_exception_does_not_kill_transport(
    make: Callable[..., SipTransports], caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[bytes] = []

    def handler(data: bytes, source: Address) -> None:
        seen.append(data)
        if len(seen) == 1:
            raise RuntimeError("boom")

    server = SipTransports(handler)
    sender = make(Inbox())
    try:
        await server.start(HOST, udp_port=0, tcp_port=0)
        await sender.start(HOST, udp_port=0)
        caplog.set_level(logging.ERROR, "callbridge.sip.transport")
        sender.send(options(1), server.local_address("udp"))
        sender.send(options(2), server.local_address("udp"))
        reader, writer = await open_raw(server.local_address("tcp"))
        writer.write(options(3))
        await until(lambda: len(seen) == 3)
        writer.close()
    finally:
        await server.close()
    assert seen == [options(1), options(2), options(3)]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert failures[0].sip_peer == str(sender.local_address("udp"))  # type: ignore[attr-defined]


# -- TCP -----------------------------------------------------------------


async def test_tcp_split_and_batched_messages(make: Callable[..., SipTransports]) -> None:
    inbox = Inbox()
    server = make(inbox)
    await server.start(HOST, tcp_port=0)
    reader, writer = await open_raw(server.local_address("tcp"))
    local = writer.get_extra_info("sockname")
    with_body = options(1, body=b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n")
    for piece in (with_body[:10], with_body[10:200], with_body[200:]):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.01)
    writer.write(options(2) + options(3) + options(4))
    await inbox.wait(4)
    writer.close()
    assert [data for data, _ in inbox.messages] == [with_body, options(2), options(3), options(4)]
    assert {source for _, source in inbox.messages} == {Address(local[0], local[1], "tcp")}


async def test_tcp_response_reuses_inbound_connection(make: Callable[..., SipTransports]) -> None:
    inbox = Inbox()
    server = make(inbox)
    await server.start(HOST, tcp_port=0)
    inbox.reply = lambda data, source: server.send(ok(), source)
    reader, writer = await open_raw(server.local_address("tcp"))
    writer.write(options())
    assert await read_message(reader) == ok()
    assert server.connection_count == 1
    assert server.has_connection(inbox.messages[0][1])
    writer.close()
    await until(lambda: server.connection_count == 0)


async def test_tcp_outbound_connection_is_opened_once_and_reused(make: Callable[..., SipTransports]) -> None:
    inbox_a, inbox_b = Inbox(), Inbox()
    a, b = make(inbox_a), make(inbox_b)
    await a.start(HOST, tcp_port=0)
    await b.start(HOST, tcp_port=0)
    inbox_b.reply = lambda data, source: b.send(ok(), source)
    target = b.local_address("tcp")
    # Two sends before the connection exists: both queue on one new connection, in order.
    a.send(options(1), target)
    a.send(options(2), target)
    assert a.has_connection(target)
    await inbox_a.wait(2)
    a.send(options(3), target)
    await inbox_a.wait(3)
    assert [data for data, _ in inbox_b.messages] == [options(1), options(2), options(3)]
    assert a.connection_count == 1 and b.connection_count == 1
    # The responses came back on the same connection, from the address we dialled.
    assert {source for _, source in inbox_a.messages} == {target}


async def test_tcp_connect_failure_reported(make: Callable[..., SipTransports]) -> None:
    inbox = Inbox()
    client = make(inbox)
    await client.start(HOST, tcp_port=0)
    dead = Address(HOST, free_port(), "tcp")
    client.send(options(), dead)
    await inbox.wait(1, "send_errors")
    assert inbox.send_errors[0][0] == dead
    assert isinstance(inbox.send_errors[0][1], OSError)
    assert client.connection_count == 0 and not client.has_connection(dead)


async def test_unframeable_stream_closes_only_that_connection(make: Callable[..., SipTransports]) -> None:
    inbox = Inbox()
    errors: list[tuple[Address, SipParseError]] = []

    def on_stream_error(source: Address, error: SipParseError) -> None:
        errors.append((source, error))
        # Still connected: the owner may answer 400 before the transport closes.
        server.send(b"SIP/2.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n", source)

    server = make(inbox, on_stream_error=on_stream_error)
    await server.start(HOST, tcp_port=0)
    good_reader, good_writer = await open_raw(server.local_address("tcp"))
    bad_reader, bad_writer = await open_raw(server.local_address("tcp"))
    good_writer.write(options(1))
    await inbox.wait(1)

    bad_writer.write(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n")  # no Content-Length
    assert await read_message(bad_reader) == b"SIP/2.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    assert await closed_by_peer(bad_reader)
    assert len(errors) == 1 and errors[0][0].transport == "tcp"

    good_writer.write(options(2))
    await inbox.wait(2)
    assert [data for data, _ in inbox.messages] == [options(1), options(2)]
    await until(lambda: server.connection_count == 1)
    good_writer.close()
    bad_writer.close()


async def test_messages_ahead_of_an_unframeable_one_are_delivered(make: Callable[..., SipTransports]) -> None:
    # Found by fuzzing (tests/fuzz, sip_parser): a whole message and a broken one in the
    # same segment lost the whole one; in separate segments it was delivered.
    inbox = Inbox()
    errors: list[SipParseError] = []
    server = make(inbox, on_stream_error=lambda source, error: errors.append(error))
    await server.start(HOST, tcp_port=0)
    reader, writer = await open_raw(server.local_address("tcp"))
    writer.write(options(1) + b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n")  # no Content-Length
    assert await closed_by_peer(reader)
    assert [data for data, _ in inbox.messages] == [options(1)]
    assert len(errors) == 1
    writer.close()


async def test_header_flood_closes_connection(make: Callable[..., SipTransports]) -> None:
    inbox = Inbox()
    server = make(inbox, limits=TransportLimits(max_header_bytes=1024))
    await server.start(HOST, tcp_port=0)
    reader, writer = await open_raw(server.local_address("tcp"))
    writer.write(b"OPTIONS sip:x SIP/2.0\r\n" + b"X-Junk: " + b"a" * 4096)
    assert await closed_by_peer(reader)
    writer.close()
    assert inbox.messages == []


@pytest.mark.parametrize(
    "limits",
    [TransportLimits(max_connections_per_ip=2), TransportLimits(max_connections=2)],
    ids=["per-ip", "total"],
)
async def test_connection_limits(make: Callable[..., SipTransports], limits: TransportLimits) -> None:
    inbox = Inbox()
    server = make(inbox, limits=limits)
    await server.start(HOST, tcp_port=0)
    addr = server.local_address("tcp")
    first, second = await open_raw(addr), await open_raw(addr)
    await until(lambda: server.connection_count == 2)
    third_reader, third_writer = await open_raw(addr)
    assert await closed_by_peer(third_reader)
    for n, (_, writer) in enumerate((first, second)):
        writer.write(options(n))
    await inbox.wait(2)
    assert server.connection_count == 2
    # A slot frees up once a connection goes away.
    first[1].close()
    await until(lambda: server.connection_count == 1)
    fourth_reader, fourth_writer = await open_raw(addr)
    fourth_writer.write(options(9))
    await inbox.wait(3)
    for writer in (second[1], third_writer, fourth_writer):
        writer.close()


async def test_peer_that_does_not_read_is_dropped(
    make: Callable[..., SipTransports], caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Inbox()
    server = make(inbox, limits=TransportLimits(max_write_buffer=64 * 1024))
    await server.start(HOST, tcp_port=0)
    addr = server.local_address("tcp")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (addr.host, addr.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(options())
    await inbox.wait(1)
    source = inbox.messages[0][1]
    caplog.set_level(logging.WARNING, "callbridge.sip.transport")
    big = options(2, body=b"x" * 32 * 1024)
    for _ in range(1000):  # the client never reads
        if not server.has_connection(source):
            break
        server.send(big, source)
        await asyncio.sleep(0)
    await until(lambda: server.connection_count == 0)
    assert [r for r in caplog.records if getattr(r, "sip_drop_reason", None) == "write-buffer"]
    writer.close()


async def test_crlf_ping_gets_pong(make: Callable[..., SipTransports]) -> None:
    inbox = Inbox()
    server = make(inbox)
    await server.start(HOST, tcp_port=0)
    reader, writer = await open_raw(server.local_address("tcp"))

    writer.write(b"\r\n\r\n")
    async with asyncio.timeout(WAIT):
        assert await reader.readexactly(2) == b"\r\n"

    writer.write(b"\r\n")  # a ping split across segments
    await writer.drain()
    await asyncio.sleep(0.02)
    writer.write(b"\r\n")
    async with asyncio.timeout(WAIT):
        assert await reader.readexactly(2) == b"\r\n"

    writer.write(options(1) + b"\r\n\r\n" + options(2))  # a ping between messages
    async with asyncio.timeout(WAIT):
        assert await reader.readexactly(2) == b"\r\n"
    await inbox.wait(2)
    assert [data for data, _ in inbox.messages] == [options(1), options(2)]
    writer.close()


async def test_idle_connection_closed(make: Callable[..., SipTransports]) -> None:
    inbox = Inbox()
    server = make(inbox, limits=TransportLimits(idle_timeout=0.2))
    await server.start(HOST, tcp_port=0)
    reader, writer = await open_raw(server.local_address("tcp"))
    await asyncio.sleep(0.1)
    writer.write(options())  # activity pushes the deadline out
    await inbox.wait(1)
    await asyncio.sleep(0.15)
    assert server.connection_count == 1
    assert await closed_by_peer(reader)
    assert server.connection_count == 0
    writer.close()


# -- TLS -----------------------------------------------------------------


def tls_server_context(certs: TestCertificates) -> ssl.SSLContext:
    return server_context(certs.server_cert, certs.server_key)


async def test_tls_round_trip_with_test_ca(make: Callable[..., SipTransports], certs: TestCertificates) -> None:
    inbox_server, inbox_client = Inbox(), Inbox()
    server = make(inbox_server)
    client = make(inbox_client)
    await server.start(HOST, tls_port=0, ssl_context=tls_server_context(certs))
    await client.start(HOST, client_ssl_context=client_context(cafile=certs.ca_cert))
    inbox_server.reply = lambda data, source: server.send(ok(), source)
    target = server.local_address("tls")

    client.send(options(1), target)  # verifies the IP SAN 127.0.0.1
    client.send(options(2), Address("localhost", target.port, "tls"))  # the DNS SAN, second connection
    await inbox_client.wait(2)
    assert sorted(data for data, _ in inbox_server.messages) == [options(1), options(2)]
    assert all(source.transport == "tls" for _, source in inbox_server.messages)
    assert server.connection_count == 2 and client.connection_count == 2
    assert inbox_client.send_errors == []


async def test_tls_client_rejects_unknown_ca(
    make: Callable[..., SipTransports], certs: TestCertificates, tmp_path: Path
) -> None:
    other = make_test_certificates(tmp_path / "other")
    inbox_server, inbox_client = Inbox(), Inbox()
    server = make(inbox_server)
    client = make(inbox_client)
    await server.start(HOST, tls_port=0, ssl_context=tls_server_context(certs))
    await client.start(HOST, client_ssl_context=client_context(cafile=other.ca_cert))
    target = server.local_address("tls")
    client.send(options(), target)
    await inbox_client.wait(1, "send_errors")
    assert isinstance(inbox_client.send_errors[0][1], ssl.SSLCertVerificationError)
    await until(lambda: server.connection_count == 0)
    assert inbox_server.messages == []

    # A plain-text client on the TLS port fails the handshake; the server keeps serving.
    reader, writer = await open_raw(target)
    writer.write(options())
    assert await closed_by_peer(reader)
    writer.close()
    good = make(Inbox())
    await good.start(HOST, client_ssl_context=client_context(cafile=certs.ca_cert))
    good.send(options(7), target)
    await inbox_server.wait(1)
    assert inbox_server.messages[0][0] == options(7)


async def test_tls_ping_pong(make: Callable[..., SipTransports], certs: TestCertificates) -> None:
    server = make(Inbox())
    await server.start(HOST, tls_port=0, ssl_context=tls_server_context(certs))
    target = server.local_address("tls")
    reader, writer = await asyncio.open_connection(
        target.host, target.port, ssl=client_context(cafile=certs.ca_cert), server_hostname="localhost"
    )
    writer.write(b"\r\n\r\n")
    async with asyncio.timeout(WAIT):
        assert await reader.readexactly(2) == b"\r\n"
    writer.close()


# -- shutdown --------------------------------------------------------------


async def test_close_leaves_no_tasks_or_sockets(certs: TestCertificates) -> None:
    inbox = Inbox()
    server = SipTransports(inbox)
    client = SipTransports(Inbox())
    await server.start(HOST, udp_port=0, tcp_port=0, tls_port=0, ssl_context=tls_server_context(certs))
    await client.start(HOST, udp_port=0, client_ssl_context=client_context(cafile=certs.ca_cert))
    udp, tcp, tls = (server.local_address(kind) for kind in ("udp", "tcp", "tls"))
    assert server.transports == ("udp", "tcp", "tls")

    client.send(options(1), udp)
    client.send(options(2), tcp)
    client.send(options(3), tls)
    raw_reader, raw_writer = await open_raw(tcp)
    raw_writer.write(options(4)[:20])  # half a message buffered
    handshaking_reader, handshaking_writer = await open_raw(tls)  # never starts the handshake
    await inbox.wait(3)
    await until(lambda: server.connection_count == 4)
    dead_port = free_port()
    client.send(options(5), Address("192.0.2.1", 5061, "tls"))  # connect pending (TEST-NET-1)
    client.send(options(6), Address(HOST, dead_port, "tcp"))

    await server.close()
    await client.close()
    await server.close()  # idempotent

    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert server.connection_count == 0 and client.connection_count == 0
    assert await closed_by_peer(raw_reader)
    assert await closed_by_peer(handshaking_reader)
    raw_writer.close()
    handshaking_writer.close()
    # Every port is free again.
    for address, kind in ((udp, socket.SOCK_DGRAM), (tcp, socket.SOCK_STREAM), (tls, socket.SOCK_STREAM)):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address.host, address.port))
            if kind == socket.SOCK_STREAM:
                sock.listen()
    server.send(options(), udp)  # after close: dropped, no error


async def test_misuse_is_reported_early() -> None:
    transports = SipTransports(Inbox())
    with pytest.raises(RuntimeError):
        transports.send(options(), Address(HOST, 5060, "udp"))
    with pytest.raises(ValueError):
        await transports.start(HOST, tls_port=0)
    with pytest.raises(ValueError):
        Address(HOST, 5060, "sctp")
    fresh = SipTransports(Inbox())
    await fresh.start(HOST, tcp_port=0)
    with pytest.raises(LookupError):
        fresh.local_address("udp")
    await fresh.close()


# -- slow-drip deadlines (issue 15) --------------------------------------


async def test_slow_drip_message_is_cut_off_by_its_deadline(make: Callable[..., SipTransports]) -> None:
    # One byte every 50 ms keeps the idle timer happy for ever; the message deadline does not.
    inbox = Inbox()
    server = make(inbox, limits=TransportLimits(idle_timeout=1.0, message_timeout=0.4, first_message_timeout=None))
    await server.start(HOST, tcp_port=0)
    reader, writer = await open_raw(server.local_address("tcp"))
    started = asyncio.get_running_loop().time()
    closed = False
    for byte in options()[:40]:
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            closed = True
            break
        await asyncio.sleep(0.05)
        if reader.at_eof() or server.connection_count == 0:
            closed = True
            break
    assert closed, "a message dripped byte by byte was never cut off"
    assert 0.35 <= asyncio.get_running_loop().time() - started <= 1.0
    assert inbox.messages == []
    writer.close()


async def test_message_deadline_restarts_with_each_message(make: Callable[..., SipTransports]) -> None:
    inbox = Inbox()
    server = make(inbox, limits=TransportLimits(message_timeout=0.3, first_message_timeout=None))
    await server.start(HOST, tcp_port=0)
    _, writer = await open_raw(server.local_address("tcp"))
    for n in range(1, 6):  # five whole messages over 1 s, each sent in two halves 100 ms apart
        message = options(n)
        writer.write(message[:50])
        await asyncio.sleep(0.1)
        writer.write(message[50:])
        await inbox.wait(n)
        await asyncio.sleep(0.1)
    assert server.connection_count == 1
    writer.close()


async def test_connection_without_a_first_message_is_closed(make: Callable[..., SipTransports]) -> None:
    inbox = Inbox()
    server = make(inbox, limits=TransportLimits(idle_timeout=5.0, first_message_timeout=0.3))
    await server.start(HOST, tcp_port=0)
    silent, silent_writer = await open_raw(server.local_address("tcp"))
    talking, talking_writer = await open_raw(server.local_address("tcp"))
    talking_writer.write(options())
    await inbox.wait(1)
    assert await closed_by_peer(silent)
    await asyncio.sleep(0.2)
    assert server.connection_count == 1  # the one that sent a message stays
    silent_writer.close()
    talking_writer.close()
