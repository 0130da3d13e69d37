"""SIP over TCP and TLS (RFC 3261 §18.3, RFC 5630): stream connections and the table that finds them.

:class:`StreamConnection` is one connection: it frames messages by
Content-Length, answers CRLF pings (RFC 5626 §3.5.1), closes idle and
slow-drip peers, and bounds what it queues. :class:`StreamConnections` keeps
every connection by peer address, so a response goes back on the connection
its request came in on (RFC 3261 §18.2.2) and a request reuses a live one;
otherwise it opens a new connection and queues the message until it is up.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from .address import Address
from .errors import SipParseError
from .framing import FramingError, StreamFramer
from .tls import client_context
from .transport_limits import SourceLimits, log_extra, logger
from .transport_udp import Deliver, SendFailed, Spawn

# Bytes an inbound TLS peer may send before our side of the handshake finished.
MAX_EARLY_DATA = 64 * 1024

StreamErrorHandler = Callable[[Address, SipParseError], None]


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection, inbound or outbound: framing, keep-alive pongs, timeouts, output queue."""

    def __init__(
        self,
        owner: StreamConnections,
        kind: str,
        *,
        inbound: bool,
        destination: Address | None = None,
        server_tls: ssl.SSLContext | None = None,
    ) -> None:
        self._owner = owner
        self._loop = owner.loop
        self._limits = owner.limits
        self.kind = kind
        self.inbound = inbound
        self.peer: Address | None = destination
        self.keys: set[Address] = set()
        self.counted_ip: str | None = None
        # "connecting" (TCP connect or TLS handshake), "open", "closing", "closed".
        self.state = "connecting"
        self.transport: asyncio.Transport | None = None
        self._raw: asyncio.Transport | None = None
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
        assert isinstance(transport, asyncio.Transport)  # a stream protocol gets a stream transport
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
                transport.pause_reading()
                self._owner.spawn(self._upgrade(transport, self._server_tls))
                return
        else:
            peer = transport.get_extra_info("peername")
            if peer:
                self._owner._alias(self, Address(peer[0], peer[1], self.kind), replace=False)
        self.transport = transport
        self._opened()

    def data_received(self, data: bytes) -> None:
        try:
            self._data_received(data)
        except Exception:  # noqa: BLE001 - never let anything escape into the loop
            logger.exception("stream receive path failed for %s", self.peer, extra=log_extra(self.peer))
            self.abort()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.state == "open":
            logger.info("connection %s lost: %r", self.peer, exc, extra=log_extra(self.peer))
        else:
            logger.debug("connection %s closed", self.peer, extra=log_extra(self.peer))
        self._finish()

    # -- lifecycle ---------------------------------------------------------

    async def _upgrade(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        """Server-side TLS handshake, after the connection was counted against the limits."""
        try:
            tls = await self._loop.start_tls(
                raw, self, context, server_side=True, ssl_handshake_timeout=self._limits.tls_handshake_timeout
            )
        except asyncio.CancelledError:
            raw.abort()
            self._finish()
            raise
        except Exception as exc:  # noqa: BLE001 - any handshake failure just ends this connection
            self._owner.sources.warn("tls-handshake", self.peer, "TLS handshake with %s failed: %r", self.peer, exc)
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
        logger.info("closing idle connection %s", self.peer, extra=log_extra(self.peer))
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
        self._owner.sources.warn("slow-message", self.peer,
                                 "closing %s: no complete message in time (%d bytes buffered)",
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
        except Exception as exc:  # noqa: BLE001 - asyncio reports most write errors via connection_lost
            self._owner.sources.warn("write", self.peer, "write to %s failed: %r", self.peer, exc)
            self.abort()
            return False
        self._touch()
        if self.transport.get_write_buffer_size() > self._limits.max_write_buffer:
            self._owner.sources.warn("write-buffer", self.peer, "peer %s is not reading; dropping connection",
                                     self.peer)
            self.abort()
        return True

    def _data_received(self, data: bytes) -> None:
        if self.state == "connecting":
            # TLS records that arrived with the end of the handshake, before
            # start_tls() handed us the TLS transport.
            self._early_size += len(data)
            if self._early_size > MAX_EARLY_DATA:
                self._owner.sources.warn("early-data", self.peer, "too much early data from %s", self.peer)
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
                if self._owner.sources.allow_message(self.peer):
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


class StreamConnections:
    """Every TCP and TLS connection, inbound and outbound, by peer address; counted against the limits."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sources: SourceLimits, *, deliver: Deliver,
                 send_failed: SendFailed, spawn: Spawn, on_stream_error: StreamErrorHandler | None = None,
                 client_tls: ssl.SSLContext | None = None) -> None:
        self.loop = loop
        self.sources = sources
        self.limits = sources.limits
        self.spawn = spawn
        self._deliver = deliver
        self._send_failed = send_failed
        self._on_stream_error = on_stream_error
        self._client_tls = client_tls
        self._connections: set[StreamConnection] = set()
        self._by_address: dict[Address, StreamConnection] = {}
        self._closing = False

    def __len__(self) -> int:
        return len(self._connections)

    def accept(self, kind: str, server_tls: ssl.SSLContext | None) -> StreamConnection:
        """A protocol for a new inbound connection (the listener's factory)."""
        return StreamConnection(self, kind, inbound=True, server_tls=server_tls)

    def has_connection(self, destination: Address) -> bool:
        conn = self._by_address.get(destination)
        return conn is not None and conn.usable

    def send(self, data: bytes, destination: Address, server_hostname: str | None) -> None:
        """Write to the live connection for ``destination``, or open one and queue ``data`` on it."""
        conn = self._by_address.get(destination)
        if conn is not None and conn.usable:
            if not conn.write(data):
                self._send_failed(destination, ConnectionError("connection output buffer full"))
            return
        if len(self._connections) >= self.limits.max_connections:
            self._send_failed(destination, ConnectionError("too many connections"))
            return
        conn = StreamConnection(self, destination.transport, inbound=False, destination=destination)
        self._connections.add(conn)
        self._alias(conn, destination)
        if not conn.write(data):
            conn._finish()
            self._send_failed(destination, ValueError("message larger than the write buffer"))
            return
        self.spawn(self._open(conn, destination, server_hostname))

    def stop_accepting(self) -> None:
        """Refuse inbound connections from now on (shutdown has begun)."""
        self._closing = True

    async def close(self, timeout: float) -> None:
        """Close every connection gracefully, aborting those still open after ``timeout``."""
        self._closing = True
        connections = list(self._connections)
        for conn in connections:
            conn.close()
        waiters = [conn.done for conn in connections]
        if waiters:
            _, stuck = await asyncio.wait(waiters, timeout=timeout)
            if stuck:
                for conn in list(self._connections):
                    conn.abort()
                await asyncio.wait(waiters, timeout=timeout)
        self._by_address.clear()
        self.sources.clear()

    async def _open(self, conn: StreamConnection, destination: Address, server_hostname: str | None) -> None:
        context: ssl.SSLContext | None = None
        if destination.transport == "tls":
            if self._client_tls is None:
                self._client_tls = client_context()
            context = self._client_tls
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                await self.loop.create_connection(
                    lambda: conn,
                    destination.host,
                    destination.port,
                    ssl=context,
                    server_hostname=(server_hostname or destination.host) if context else None,
                    ssl_handshake_timeout=self.limits.tls_handshake_timeout if context else None,
                )
        except asyncio.CancelledError:
            conn.abort()
            conn._finish()
            raise
        except Exception as exc:  # noqa: BLE001 - refused, unreachable, DNS, TLS: all a failed send
            conn.abort()
            conn._finish()
            self._send_failed(destination, exc)

    # -- called by the connections -------------------------------------------------

    def _admit(self, conn: StreamConnection) -> bool:
        """Count an inbound connection against the limits; False to refuse it."""
        peer = conn.peer
        assert peer is not None
        if self._closing or not self.sources.admit_connection(peer, len(self._connections)):
            return False
        conn.counted_ip = peer.host
        self._connections.add(conn)
        self._alias(conn, peer)
        return True

    def _alias(self, conn: StreamConnection, address: Address, *, replace: bool = True) -> None:
        current = self._by_address.get(address)
        if not replace and current is not None and current is not conn and current.usable:
            return  # e.g. "localhost" and "127.0.0.1" dialled separately: keep both keys apart
        conn.keys.add(address)
        self._by_address[address] = conn

    def _forget(self, conn: StreamConnection) -> None:
        self._connections.discard(conn)
        for key in conn.keys:
            if self._by_address.get(key) is conn:
                del self._by_address[key]
        if conn.counted_ip is not None:
            self.sources.release_connection(conn.counted_ip)
            conn.counted_ip = None

    def _received(self, message: bytes, source: Address | None) -> None:
        assert source is not None
        if self.sources.allow_message(source):
            self._deliver(message, source)

    def _stream_error(self, conn: StreamConnection, error: SipParseError) -> None:
        source = conn.peer
        self.sources.warn("unframeable", source, "closing %s: unframeable stream (%s)", source, error.reason)
        if self._on_stream_error is not None and source is not None:
            try:
                self._on_stream_error(source, error)
            except Exception:  # noqa: BLE001 - the owner's bug must not keep a broken stream open
                logger.exception("stream error handler failed for %s", source, extra=log_extra(source))
        conn.close()
