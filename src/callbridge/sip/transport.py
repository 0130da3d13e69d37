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

The pieces: ``transport_udp`` (the UDP socket), ``transport_stream`` (TCP/TLS
connections and their table), ``transport_limits`` (the bounds and the
per-source checks). This module starts them and routes ``send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from .address import TRANSPORTS, Address
from .transport_limits import SourceLimits, TransportLimits, log_extra, logger
from .transport_stream import StreamConnections, StreamErrorHandler
from .transport_udp import UdpSocket

# How long close() waits for graceful TCP/TLS shutdown (and the sockets to close) before aborting.
CLOSE_TIMEOUT = 2.0

DatagramHandler = Callable[[bytes, Address], None]
SendErrorHandler = Callable[[Address, BaseException], None]


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
        self._closed = False
        self._servers: dict[str, asyncio.Server] = {}
        self._local: dict[str, Address] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Made by start(), on the running loop.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sources: SourceLimits | None = None
        self._udp: UdpSocket | None = None
        self._streams: StreamConnections | None = None

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
        if self._loop is not None:
            raise RuntimeError("SipTransports.start() called twice")
        if tls_port is not None and ssl_context is None:
            raise ValueError("tls_port needs an ssl_context")
        loop = self._loop = asyncio.get_running_loop()
        sources = self._sources = SourceLimits(self._limits, loop.time)
        self._streams = StreamConnections(loop, sources, deliver=self._deliver, send_failed=self._send_failed,
                                          spawn=self._spawn, on_stream_error=self._on_stream_error,
                                          client_tls=client_ssl_context)
        try:
            if udp_port is not None:
                self._udp = UdpSocket(loop, sources, deliver=self._deliver, send_failed=self._send_failed,
                                      spawn=self._spawn)
                self._local["udp"] = await self._udp.bind(host, udp_port)
            for kind, port in (("tcp", tcp_port), ("tls", tls_port)):
                if port is None:
                    continue
                tls = ssl_context if kind == "tls" else None
                server = await loop.create_server(functools.partial(self._streams.accept, kind, tls), host, port)
                self._servers[kind] = server
                sockname = server.sockets[0].getsockname()
                self._local[kind] = Address(sockname[0], sockname[1], kind)
        except BaseException:
            await self.close()
            raise
        for address in self._local.values():
            logger.info("listening on %s", address, extra=log_extra(address))

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
        return self._streams is not None and self._streams.has_connection(destination)

    @property
    def connection_count(self) -> int:
        return len(self._streams) if self._streams is not None else 0

    def send(self, data: bytes, destination: Address, *, server_hostname: str | None = None) -> None:
        """Queue ``data`` (one whole message) for ``destination``; never blocks or raises on I/O.

        UDP: sent from the listening socket. TCP/TLS: written to the existing
        connection for ``destination`` or queued on a new outbound one.
        ``server_hostname`` is the name checked in the server certificate for a
        new outbound TLS connection (default: ``destination.host``; RFC 5922
        wants the SIP domain when the address came from DNS).
        Failures are logged and reported to ``on_send_error``.
        """
        if self._streams is None:
            raise RuntimeError("SipTransports.send() before start()")
        if self._closed:
            logger.debug("dropping %d bytes for %s: transports closed", len(data), destination,
                         extra=log_extra(destination))
            return
        if destination.transport != "udp":
            self._streams.send(data, destination, server_hostname)
        elif self._udp is not None:
            self._udp.send(data, destination)
        else:
            self._send_failed(destination, ConnectionError("no UDP socket"))

    async def close(self) -> None:
        """Stop listening, close every connection and the UDP socket, cancel our tasks."""
        if self._closed:
            return
        self._closed = True
        if self._streams is None:
            return
        self._streams.stop_accepting()
        for server in self._servers.values():
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._streams.close(CLOSE_TIMEOUT)
        closed = self._udp.close() if self._udp is not None else None
        if closed is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(closed), CLOSE_TIMEOUT)
        for server in self._servers.values():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT)
        self._servers.clear()

    async def __aenter__(self) -> SipTransports:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- shared by the UDP socket and the streams ------------------------------------

    def _deliver(self, data: bytes, source: Address) -> None:
        try:
            self._on_datagram(data, source)
        except Exception:  # noqa: BLE001 - the core's bug must not reach the event loop
            logger.exception("message handler failed for message from %s", source, extra=log_extra(source))

    def _send_failed(self, destination: Address, error: BaseException) -> None:
        assert self._sources is not None and self._loop is not None
        self._sources.warn("send", destination, "send to %s failed: %r", destination, error)
        if self._on_send_error is not None:
            self._loop.call_soon(self._notify_send_error, destination, error)

    def _notify_send_error(self, destination: Address, error: BaseException) -> None:
        if self._closed or self._on_send_error is None:
            return
        try:
            self._on_send_error(destination, error)
        except Exception:  # noqa: BLE001 - the owner's bug must not reach the event loop
            logger.exception("send error handler failed for %s", destination, extra=log_extra(destination))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover - tasks guard themselves
            logger.error("transport task failed", exc_info=task.exception())


__all__ = ["Address", "SipTransports", "TransportLimits"]
