"""asyncio UDP, TCP and TLS transports for SIP (RFC 3261 §18), bytes only.

This is the thin driver under the sans-IO SIP core: it moves whole messages in
and out and knows nothing of SIP beyond framing (Content-Length on streams,
RFC 3261 §18.3) and CRLF keep-alives (RFC 5626 §3.5.1). Every received message
is handed to ``on_datagram(data, source)``; the core answers with
``send(data, destination)``.

Rules the core can rely on:

* UDP is sent from the listening socket, so the source port of our requests
  and responses is the port we listen on (symmetric signalling, RFC 3581).
* A TCP/TLS ``send`` to an address that has a live connection (inbound or
  outbound) uses that connection; responses therefore go back on the
  connection the request came in on (RFC 3261 §18.2.2) as long as the core
  replies to the ``source`` it was given. Otherwise a new connection is opened
  and the data is queued until it is up.
* Nothing raised inside the transport (callback errors, malformed streams,
  ICMP errors, failed connects) escapes into the event loop; it is logged to
  ``callbridge.sip.transport`` with the peer in ``extra``.

Everything here runs on one event loop and is not thread-safe: call ``send``
and ``close`` from the loop that ran ``start``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .address import TRANSPORTS, Address
from .errors import SipParseError
from .framing import MAX_HEADER_BYTES, FramingError, StreamFramer
from .ratelimit import LogThrottle as _LogThrottle
from .ratelimit import TokenBuckets as _TokenBuckets
from .tls import client_context

logger = logging.getLogger("callbridge.sip.transport")


# RFC 3261 §18.1.1: a UDP receiver MUST accept messages up to the largest
# datagram (65,535 bytes), so the default cap only rejects what cannot be IP.
# Deployments that want to spare the parser can lower it (e.g. 16 KiB).
MAX_UDP_MESSAGE = 65_535
# A header section of 64 KiB is what Kamailio/OpenSIPS accept per message.
MAX_STREAM_HEADER_BYTES = MAX_HEADER_BYTES
# SDP bodies are a few KiB; 64 KiB leaves room for multipart bodies and bounds
# buffered input per connection to ~128 KiB (x MAX_CONNECTIONS ≈ 128 MiB worst case).
MAX_STREAM_BODY_BYTES = 64 * 1024
# Output queued for a peer that does not read. SIP responses are small; a peer
# that lets 1 MiB pile up is dead or hostile, so the connection is dropped.
MAX_WRITE_BUFFER = 1 << 20
# A phone or PBX trunk uses one or two connections; 32 allows a NATed office.
MAX_CONNECTIONS_PER_IP = 32
# Well below the usual 1024/4096 file descriptor soft limits.
MAX_CONNECTIONS = 1024
# RFC 5626 §4.4.1 clients ping every 95-120 s on streams; 300 s of silence
# means the peer is gone. (Connections used by a long call without pings or
# session timers will be closed too; the peer reconnects on its next request.)
IDLE_TIMEOUT = 300.0
# A message must be complete this long after its first byte arrived, and an inbound connection
# must bring its first complete message this long after it opened: Kamailio's tcp_msg_read_timeout
# and tcp_msg_data_timeout (both 20 s by default). Without them a peer sending one byte every
# 100 s holds a connection (and its buffer) forever, since each byte resets the idle timer.
MESSAGE_TIMEOUT = 20.0
FIRST_MESSAGE_TIMEOUT = 20.0
# Outbound connects and TLS handshakes; shorter than Timer B/F (32 s) so the
# transaction still has time to report the failure (RFC 3261 §17.1.1.2).
CONNECT_TIMEOUT = 10.0
TLS_HANDSHAKE_TIMEOUT = 10.0
# How long close() waits for graceful TCP/TLS shutdown before aborting.
CLOSE_TIMEOUT = 2.0
# Per-source-IP message rate. One carrier trunk (or a Kamailio in front of us)
# brings every call from one IP: 300 calls/s is ~1,500 msg/s with provisional
# and in-dialog traffic. 5,000/s with a 10,000 burst still stops floods.
RATE_LIMIT = 5000.0
RATE_BURST = 10000.0
# Bounds the rate limiter's (and log throttle's) memory under spoofed-source UDP floods.
MAX_TRACKED_SOURCES = 10_000
# At most one warning per source and reason in this many seconds.
DROP_LOG_INTERVAL = 10.0
# Bytes an inbound TLS peer may send before our side of the handshake finished.
_MAX_EARLY_DATA = 64 * 1024
# Largest UDP payload over IPv4: 65,535 - 20 (IP header) - 8 (UDP header).
_MAX_UDP_PAYLOAD = 65_507

DatagramHandler = Callable[[bytes, "Address"], None]
StreamErrorHandler = Callable[["Address", SipParseError], None]
SendErrorHandler = Callable[["Address", BaseException], None]




@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Resource bounds; the defaults are the module constants above."""

    max_udp_message: int = MAX_UDP_MESSAGE
    max_header_bytes: int = MAX_STREAM_HEADER_BYTES
    max_body_bytes: int = MAX_STREAM_BODY_BYTES
    max_write_buffer: int = MAX_WRITE_BUFFER
    max_connections_per_ip: int = MAX_CONNECTIONS_PER_IP
    max_connections: int = MAX_CONNECTIONS
    idle_timeout: float | None = IDLE_TIMEOUT  # None or 0 disables
    message_timeout: float | None = MESSAGE_TIMEOUT  # None or 0 disables
    first_message_timeout: float | None = FIRST_MESSAGE_TIMEOUT  # inbound only; None or 0 disables
    connect_timeout: float = CONNECT_TIMEOUT
    tls_handshake_timeout: float = TLS_HANDSHAKE_TIMEOUT
    rate_limit: float | None = RATE_LIMIT  # messages/s per source IP; None or 0 disables
    rate_burst: float = RATE_BURST
    max_tracked_sources: int = MAX_TRACKED_SOURCES
    drop_log_interval: float = DROP_LOG_INTERVAL


def _extra(address: Address | None) -> dict[str, Any]:
    if address is None:
        return {"sip_peer": None}
    return {
        "sip_peer": str(address),
        "sip_peer_host": address.host,
        "sip_peer_port": address.port,
        "sip_transport": address.transport,
    }


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransports) -> None:
        self._owner = owner
        self.closed: asyncio.Future[None] = owner._loop.create_future()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            self._owner._udp_received(data, Address(addr[0], addr[1], "udp"))
        except Exception:  # pragma: no cover - belt and braces; _udp_received guards itself
            logger.exception("UDP receive path failed")

    def error_received(self, exc: Exception) -> None:
        # ICMP port/host unreachable for an earlier sendto (ConnectionRefusedError),
        # EMSGSIZE and the like: a hint about one datagram, not a broken socket.
        self._owner._warn("udp-error", None, "UDP socket error: %r", exc, level=logging.INFO)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            logger.warning("UDP socket closed: %r", exc)
        if not self.closed.done():
            self.closed.set_result(None)


class _Stream(asyncio.Protocol):
    """One TCP or TLS connection, inbound or outbound."""

    def __init__(
        self,
        owner: SipTransports,
        kind: str,
        *,
        inbound: bool,
        destination: Address | None = None,
        server_tls: ssl.SSLContext | None = None,
    ) -> None:
        self._owner = owner
        self._loop = owner._loop
        self._limits = owner._limits
        self.kind = kind
        self.inbound = inbound
        self.peer: Address | None = destination
        self.keys: set[Address] = set()
        self.counted_ip: str | None = None
        # "connecting" (TCP connect or TLS handshake), "open", "closing", "closed".
        self.state = "connecting"
        self.transport: asyncio.Transport | None = None
        self._raw: asyncio.BaseTransport | None = None
        self._server_tls = server_tls
        self._framer = StreamFramer(self._limits.max_header_bytes, self._limits.max_body_bytes)
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._early: list[bytes] = []
        self._early_size = 0
        self._crlf_pairs = 0
        self._last_activity = self._loop.time()
        self._idle_handle: asyncio.TimerHandle | None = None
        # When the first byte of the message being framed arrived (None: between messages), and
        # whether any complete message arrived yet: the slow-drip deadlines.
        self._message_started: float | None = None
        self._delivered_any = False
        self._deadline_handle: asyncio.TimerHandle | None = None
        self._open_time: float | None = None
        self.done: asyncio.Future[None] = self._loop.create_future()

    # -- asyncio callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.inbound:
            self._raw = transport
            peer = transport.get_extra_info("peername")
            if not peer:
                transport.abort()
                self._finish()
                return
            self.peer = Address(peer[0], peer[1], self.kind)
            if not self._owner._admit(self):
                transport.abort()
                self._finish()
                return
            if self._server_tls is not None:
                # Raw TLS records must not reach data_received; start_tls resumes reading.
                assert isinstance(transport, asyncio.Transport)
                transport.pause_reading()
                self._owner._spawn(self._upgrade(transport, self._server_tls))
                return
        else:
            peer = transport.get_extra_info("peername")
            if peer:
                self._owner._alias(self, Address(peer[0], peer[1], self.kind), replace=False)
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._opened()

    def data_received(self, data: bytes) -> None:
        try:
            self._data_received(data)
        except Exception:  # never let anything escape into the loop
            logger.exception("stream receive path failed for %s", self.peer, extra=_extra(self.peer))
            self.abort()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.state == "open":
            logger.info("connection %s lost: %r", self.peer, exc, extra=_extra(self.peer))
        else:
            logger.debug("connection %s closed", self.peer, extra=_extra(self.peer))
        self._finish()

    # -- lifecycle ---------------------------------------------------------

    async def _upgrade(self, raw: asyncio.BaseTransport, context: ssl.SSLContext) -> None:
        """Server-side TLS handshake, after the connection was counted against the limits."""
        assert isinstance(raw, asyncio.Transport)
        try:
            tls = await self._loop.start_tls(
                raw, self, context, server_side=True, ssl_handshake_timeout=self._limits.tls_handshake_timeout
            )
        except asyncio.CancelledError:
            raw.abort()
            self._finish()
            raise
        except Exception as exc:
            self._owner._warn("tls-handshake", self.peer, "TLS handshake with %s failed: %r", self.peer, exc)
            raw.abort()
            self._finish()
            return
        if self.state != "connecting" or tls is None:
            if tls is not None:
                tls.abort()
            return
        self.transport = tls
        self._opened()
        early, self._early = self._early, []
        for chunk in early:
            if self.state != "open":
                break
            self.data_received(chunk)

    def _opened(self) -> None:
        self.state = "open"
        self._open_time = self._loop.time()
        self._touch()
        timeout = self._limits.idle_timeout
        if timeout:
            self._idle_handle = self._loop.call_later(timeout, self._check_idle)
        first = self._limits.first_message_timeout
        if self.inbound and first:
            self._deadline_handle = self._loop.call_later(first, self._check_deadline)
        pending, self._pending, self._pending_size = self._pending, [], 0
        for chunk in pending:
            if self.state != "open":
                break
            self.write(chunk)

    def _check_idle(self) -> None:
        self._idle_handle = None
        if self.state != "open":
            return
        timeout = self._limits.idle_timeout or 0.0
        remaining = self._last_activity + timeout - self._loop.time()
        if remaining > 0:
            self._idle_handle = self._loop.call_later(remaining, self._check_idle)
            return
        logger.info("closing idle connection %s", self.peer, extra=_extra(self.peer))
        self.close()

    def _check_deadline(self) -> None:
        """Close a connection whose message (or first message) is overdue: a slow-drip peer."""
        self._deadline_handle = None
        if self.state != "open":
            return
        now = self._loop.time()
        due: float | None = None
        if self._message_started is not None and self._limits.message_timeout:
            due = self._message_started + self._limits.message_timeout
        first = self._limits.first_message_timeout
        if self.inbound and not self._delivered_any and first and self._open_time is not None:
            first_due = self._open_time + first
            due = first_due if due is None else min(due, first_due)
        if due is None:
            return
        if now < due:
            self._deadline_handle = self._loop.call_later(due - now, self._check_deadline)
            return
        self._owner._warn("slow-message", self.peer, "closing %s: no complete message in time (%d bytes buffered)",
                          self.peer, self._framer.buffered)
        self.abort()

    def _track_message(self) -> None:
        """Start (or stop) the message deadline as a partial message appears in (or leaves) the buffer."""
        if self._framer.buffered == 0:
            self._message_started = None
            return
        if self._message_started is None:
            self._message_started = self._loop.time()
            if self._limits.message_timeout and self._deadline_handle is None:
                self._deadline_handle = self._loop.call_later(self._limits.message_timeout, self._check_deadline)

    @property
    def usable(self) -> bool:
        """Still able to carry data (open, or connecting with a queue)."""
        if self.state == "connecting":
            return True
        return self.state == "open" and self.transport is not None and not self.transport.is_closing()

    def _touch(self) -> None:
        self._last_activity = self._loop.time()

    def close(self) -> None:
        """Graceful close: queued output is flushed first."""
        if self.state in ("closing", "closed"):
            return
        if self.transport is None:
            self.abort()
            return
        self.state = "closing"
        self.transport.close()

    def abort(self) -> None:
        if self.state == "closed":
            return
        self.state = "closing"
        for transport in (self.transport, self._raw):
            if transport is not None:
                transport.abort()
        if self.transport is None and self._raw is None:
            self._finish()

    def _finish(self) -> None:
        if self.state == "closed":
            return
        self.state = "closed"
        for handle in (self._idle_handle, self._deadline_handle):
            if handle is not None:
                handle.cancel()
        self._idle_handle = self._deadline_handle = None
        self._pending.clear()
        self._early.clear()
        self._owner._forget(self)
        if not self.done.done():
            self.done.set_result(None)

    # -- data --------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        """Send or queue ``data``; False if the connection cannot take it."""
        if self.state == "connecting":
            if self._pending_size + len(data) > self._limits.max_write_buffer:
                return False
            self._pending.append(data)
            self._pending_size += len(data)
            return True
        if not self.usable or self.transport is None:
            return False
        try:
            self.transport.write(data)
        except Exception as exc:  # asyncio reports most write errors via connection_lost
            self._owner._warn("write", self.peer, "write to %s failed: %r", self.peer, exc)
            self.abort()
            return False
        self._touch()
        if self.transport.get_write_buffer_size() > self._limits.max_write_buffer:
            self._owner._warn("write-buffer", self.peer, "peer %s is not reading; dropping connection", self.peer)
            self.abort()
        return True

    def _data_received(self, data: bytes) -> None:
        if self.state == "connecting":
            # TLS records that arrived with the end of the handshake, before
            # start_tls() handed us the TLS transport.
            self._early_size += len(data)
            if self._early_size > _MAX_EARLY_DATA:
                self._owner._warn("early-data", self.peer, "too much early data from %s", self.peer)
                self.abort()
                return
            self._early.append(data)
            return
        if self.state != "open":
            return
        self._touch()
        before = self._framer.buffered
        try:
            messages = self._framer.feed(data)
        except FramingError as exc:
            self._pass_up(exc.messages)  # framed intact ahead of the broken part
            if self.state == "open":
                self._owner._stream_error(self, exc)
            return
        # The framer silently drops CRLF pairs between messages. Count them:
        # each "\r\n\r\n" is an RFC 5626 §3.5.1 ping that wants a "\r\n" pong.
        skipped = before + len(data) - self._framer.buffered - sum(len(m) for m in messages)
        if skipped:
            self._crlf_pairs += skipped // 2
            while self._crlf_pairs >= 2 and self.state == "open":
                self._crlf_pairs -= 2
                assert self.peer is not None
                if self._owner._allow(self.peer):
                    self.write(b"\r\n")
        if messages:
            self._delivered_any = True
            self._message_started = None  # what is left (if anything) is a new message
        self._track_message()
        self._pass_up(messages)

    def _pass_up(self, messages: list[bytes]) -> None:
        for message in messages:
            if self.state != "open":  # the owner closed us from a callback
                break
            self._owner._received(message, self.peer)


class SipTransports:
    """UDP, TCP and TLS listeners plus outbound connections, for one SIP endpoint.

    ``on_datagram(data, source)`` gets every complete message: each UDP
    datagram, each Content-Length-framed message of a stream. It runs inside
    the event loop callback, so it must not block; exceptions are logged.

    ``on_stream_error(source, error)`` (optional) is called, synchronously,
    when a stream can no longer be framed, *before* the connection is closed:
    a ``send`` to ``source`` from inside it still goes out (e.g. a 400).

    ``on_send_error(destination, error)`` (optional) is called, from a later
    loop iteration, when queued stream data could not be delivered (connect or
    handshake failure, too many connections, no UDP socket) so the transaction
    layer can treat it as a transport error (RFC 3261 §8.1.3.1).
    """

    def __init__(
        self,
        on_datagram: DatagramHandler,
        *,
        on_stream_error: StreamErrorHandler | None = None,
        on_send_error: SendErrorHandler | None = None,
        limits: TransportLimits | None = None,
    ) -> None:
        self._on_datagram = on_datagram
        self._on_stream_error = on_stream_error
        self._on_send_error = on_send_error
        self._limits = limits or TransportLimits()
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set by start()
        self._started = False
        self._closed = False
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_protocol: _UdpProtocol | None = None
        self._servers: dict[str, asyncio.Server] = {}
        self._local: dict[str, Address] = {}
        self._server_tls: ssl.SSLContext | None = None
        self._client_tls: ssl.SSLContext | None = None
        self._connections: set[_Stream] = set()
        self._by_address: dict[Address, _Stream] = {}
        self._per_ip: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        rate = self._limits.rate_limit
        self._buckets = (
            _TokenBuckets(rate, self._limits.rate_burst, self._limits.max_tracked_sources) if rate else None
        )
        self._throttle = _LogThrottle(self._limits.drop_log_interval, self._limits.max_tracked_sources)

    # -- public API --------------------------------------------------------

    async def start(
        self,
        host: str,
        *,
        udp_port: int | None = None,
        tcp_port: int | None = None,
        tls_port: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        client_ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Bind the listeners whose port is given (0 = any free port).

        ``ssl_context`` is the server context for ``tls_port``;
        ``client_ssl_context`` is used for outbound TLS (default: system trust
        store, host name checked). ``host`` should be an IP literal.
        """
        if self._started:
            raise RuntimeError("SipTransports.start() called twice")
        if tls_port is not None and ssl_context is None:
            raise ValueError("tls_port needs an ssl_context")
        self._loop = asyncio.get_running_loop()
        self._started = True
        self._server_tls = ssl_context
        self._client_tls = client_ssl_context
        try:
            if udp_port is not None:
                transport, protocol = await self._loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self), local_addr=(host, udp_port)
                )
                self._udp, self._udp_protocol = transport, protocol
                self._local["udp"] = self._bound(transport.get_extra_info("sockname"), "udp")
            for kind, port in (("tcp", tcp_port), ("tls", tls_port)):
                if port is None:
                    continue
                tls = ssl_context if kind == "tls" else None
                server = await self._loop.create_server(
                    lambda kind=kind, tls=tls: _Stream(self, kind, inbound=True, server_tls=tls),
                    host,
                    port,
                )
                self._servers[kind] = server
                self._local[kind] = self._bound(server.sockets[0].getsockname(), kind)
        except BaseException:
            await self.close()
            raise
        for address in self._local.values():
            logger.info("listening on %s", address, extra=_extra(address))

    @property
    def transports(self) -> tuple[str, ...]:
        """The transports we listen on, in ("udp", "tcp", "tls") order."""
        return tuple(kind for kind in TRANSPORTS if kind in self._local)

    def local_address(self, transport: str) -> Address:
        """The bound address of a listener (actual port when 0 was asked for)."""
        try:
            return self._local[transport]
        except KeyError:
            raise LookupError(f"not listening on {transport!r}") from None

    def has_connection(self, destination: Address) -> bool:
        """True if a TCP/TLS connection to ``destination`` is open or being opened."""
        conn = self._by_address.get(destination)
        return conn is not None and conn.usable

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def send(self, data: bytes, destination: Address, *, server_hostname: str | None = None) -> None:
        """Queue ``data`` (one whole message) for ``destination``; never blocks or raises on I/O.

        UDP: sent from the listening socket. TCP/TLS: written to the existing
        connection for ``destination`` or queued on a new outbound one.
        ``server_hostname`` is the name checked in the server certificate for a
        new outbound TLS connection (default: ``destination.host``; RFC 5922
        wants the SIP domain when the address came from DNS).
        Failures are logged and reported to ``on_send_error``.
        """
        if not self._started:
            raise RuntimeError("SipTransports.send() before start()")
        if self._closed:
            logger.debug("dropping %d bytes for %s: transports closed", len(data), destination, extra=_extra(destination))
            return
        if destination.transport == "udp":
            self._send_udp(data, destination)
            return
        conn = self._by_address.get(destination)
        if conn is not None and conn.usable:
            if not conn.write(data):
                self._send_failed(destination, ConnectionError("connection output buffer full"))
            return
        self._connect(data, destination, server_hostname)

    async def close(self) -> None:
        """Stop listening, close every connection and the UDP socket, cancel our tasks."""
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return
        for server in self._servers.values():
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        connections = list(self._connections)
        for conn in connections:
            conn.close()
        waiters = [conn.done for conn in connections]
        if waiters:
            _, stuck = await asyncio.wait(waiters, timeout=CLOSE_TIMEOUT)
            if stuck:
                for conn in list(self._connections):
                    conn.abort()
                await asyncio.wait(waiters, timeout=CLOSE_TIMEOUT)
        if self._udp is not None and self._udp_protocol is not None:
            self._udp.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._udp_protocol.closed), CLOSE_TIMEOUT)
        for server in self._servers.values():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT)
        self._servers.clear()
        self._by_address.clear()
        self._per_ip.clear()

    async def __aenter__(self) -> SipTransports:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- receive path ------------------------------------------------------

    def _udp_received(self, data: bytes, source: Address) -> None:
        if len(data) > self._limits.max_udp_message:
            self._warn("udp-size", source, "dropping %d-byte datagram from %s (limit %d)",
                       len(data), source, self._limits.max_udp_message)
            return
        if len(data) <= 8 and not data.strip():
            return  # CRLF keep-alive datagram (RFC 5626 §4.4.1 style, RFC 3261 §7.5)
        if not self._allow(source):
            return
        self._deliver(data, source)

    def _received(self, data: bytes, source: Address | None) -> None:
        assert source is not None
        if self._allow(source):
            self._deliver(data, source)

    def _deliver(self, data: bytes, source: Address) -> None:
        try:
            self._on_datagram(data, source)
        except Exception:
            logger.exception("message handler failed for message from %s", source, extra=_extra(source))

    def _allow(self, source: Address) -> bool:
        if self._buckets is None or self._buckets.allow(source.host, self._loop.time()):
            return True
        self._warn("rate", source, "rate limit exceeded by %s; dropping", source)
        return False

    def _stream_error(self, conn: _Stream, error: SipParseError) -> None:
        source = conn.peer
        self._warn("unframeable", source, "closing %s: unframeable stream (%s)", source, error.reason)
        if self._on_stream_error is not None and source is not None:
            try:
                self._on_stream_error(source, error)
            except Exception:
                logger.exception("stream error handler failed for %s", source, extra=_extra(source))
        conn.close()

    # -- send path ---------------------------------------------------------

    def _send_udp(self, data: bytes, destination: Address) -> None:
        if self._udp is None or self._udp.is_closing():
            self._send_failed(destination, ConnectionError("no UDP socket"))
            return
        if len(data) > _MAX_UDP_PAYLOAD:
            self._send_failed(destination, ValueError(f"{len(data)}-byte message too large for UDP"))
            return
        if not _is_ip(destination.host):
            self._spawn(self._send_udp_resolved(data, destination))
            return
        host = destination.host
        ipv4 = ":" not in host
        if self._udp.get_extra_info("socket").family == socket.AF_INET:
            if not ipv4:
                self._send_failed(destination, OSError("IPv6 destination on an IPv4 UDP socket"))
                return
        elif ipv4:
            host = "::ffff:" + host  # dual-stack socket: IPv4-mapped address
        try:
            self._udp.sendto(data, (host, destination.port))
        except Exception as exc:  # asyncio reports most errors via error_received, but be sure
            self._send_failed(destination, exc)

    async def _send_udp_resolved(self, data: bytes, destination: Address) -> None:
        assert self._udp is not None
        family = self._udp.get_extra_info("socket").family
        try:
            infos = await self._loop.getaddrinfo(
                destination.host, destination.port, family=family, type=socket.SOCK_DGRAM
            )
            if self._udp.is_closing():
                raise ConnectionError("UDP socket closed")
            self._udp.sendto(data, infos[0][4])
        except Exception as exc:
            self._send_failed(destination, exc)

    def _connect(self, data: bytes, destination: Address, server_hostname: str | None) -> None:
        if len(self._connections) >= self._limits.max_connections:
            self._send_failed(destination, ConnectionError("too many connections"))
            return
        conn = _Stream(self, destination.transport, inbound=False, destination=destination)
        self._connections.add(conn)
        self._alias(conn, destination)
        if not conn.write(data):
            conn._finish()
            self._send_failed(destination, ValueError("message larger than the write buffer"))
            return
        self._spawn(self._open(conn, destination, server_hostname))

    async def _open(self, conn: _Stream, destination: Address, server_hostname: str | None) -> None:
        context: ssl.SSLContext | None = None
        if destination.transport == "tls":
            if self._client_tls is None:
                self._client_tls = client_context()
            context = self._client_tls
        try:
            async with asyncio.timeout(self._limits.connect_timeout):
                await self._loop.create_connection(
                    lambda: conn,
                    destination.host,
                    destination.port,
                    ssl=context,
                    server_hostname=(server_hostname or destination.host) if context else None,
                    ssl_handshake_timeout=self._limits.tls_handshake_timeout if context else None,
                )
        except asyncio.CancelledError:
            conn.abort()
            conn._finish()
            raise
        except Exception as exc:
            conn.abort()
            conn._finish()
            self._send_failed(destination, exc)

    def _send_failed(self, destination: Address, error: BaseException) -> None:
        self._warn("send", destination, "send to %s failed: %r", destination, error)
        if self._on_send_error is not None:
            self._loop.call_soon(self._notify_send_error, destination, error)

    def _notify_send_error(self, destination: Address, error: BaseException) -> None:
        if self._closed or self._on_send_error is None:
            return
        try:
            self._on_send_error(destination, error)
        except Exception:
            logger.exception("send error handler failed for %s", destination, extra=_extra(destination))

    # -- bookkeeping -------------------------------------------------------

    def _admit(self, conn: _Stream) -> bool:
        """Count an inbound connection against the limits; False to refuse it."""
        peer = conn.peer
        assert peer is not None
        if self._closed:
            return False
        if len(self._connections) >= self._limits.max_connections:
            self._warn("conn-limit", peer, "refusing %s: %d connections open", peer, len(self._connections))
            return False
        count = self._per_ip.get(peer.host, 0)
        if count >= self._limits.max_connections_per_ip:
            self._warn("ip-conn-limit", peer, "refusing %s: %d connections from this IP", peer, count)
            return False
        self._per_ip[peer.host] = count + 1
        conn.counted_ip = peer.host
        self._connections.add(conn)
        self._alias(conn, peer)
        return True

    def _alias(self, conn: _Stream, address: Address, *, replace: bool = True) -> None:
        current = self._by_address.get(address)
        if not replace and current is not None and current is not conn and current.usable:
            return  # e.g. "localhost" and "127.0.0.1" dialled separately: keep both keys apart
        conn.keys.add(address)
        self._by_address[address] = conn

    def _forget(self, conn: _Stream) -> None:
        self._connections.discard(conn)
        for key in conn.keys:
            if self._by_address.get(key) is conn:
                del self._by_address[key]
        if conn.counted_ip is not None:
            left = self._per_ip.get(conn.counted_ip, 1) - 1
            if left > 0:
                self._per_ip[conn.counted_ip] = left
            else:
                self._per_ip.pop(conn.counted_ip, None)
            conn.counted_ip = None

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover - tasks guard themselves
            logger.error("transport task failed", exc_info=task.exception())

    def _warn(
        self, reason: str, source: Address | None, msg: str, *args: object, level: int = logging.WARNING
    ) -> None:
        key = (reason, source.host if source is not None else "")
        suppressed = self._throttle.check(key, self._loop.time())
        if suppressed is None:
            return
        if suppressed:
            msg += " (%d similar suppressed)"
            args = (*args, suppressed)
        logger.log(level, msg, *args, extra={**_extra(source), "sip_drop_reason": reason})

    @staticmethod
    def _bound(sockname: tuple[Any, ...], kind: str) -> Address:
        return Address(sockname[0], sockname[1], kind)
