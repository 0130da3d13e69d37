"""The SIP UDP socket (RFC 3261 §18.1.1, §18.2.1): one listening socket that also sends.

Sending from the listening socket makes the source port of our requests and
responses the port we listen on (symmetric signalling, RFC 3581). Datagrams
over the size limit, CRLF keep-alives and those over the source's rate are
dropped here; the rest go to ``deliver``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from .address import Address
from .transport_limits import SourceLimits, logger

# Largest UDP payload over IPv4: 65,535 - 20 (IP header) - 8 (UDP header).
MAX_UDP_PAYLOAD = 65_507
# A datagram this short holding only whitespace is a keep-alive (RFC 5626 §4.4.1 style, RFC 3261 §7.5).
MAX_KEEPALIVE_BYTES = 8

Deliver = Callable[[bytes, Address], None]
SendFailed = Callable[[Address, BaseException], None]
Spawn = Callable[[Coroutine[Any, Any, None]], None]


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, socket_: UdpSocket) -> None:
        self._socket = socket_
        self.closed: asyncio.Future[None] = socket_.loop.create_future()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            self._socket.received(data, Address(addr[0], addr[1], "udp"))
        except Exception:  # noqa: BLE001 - belt and braces; received() guards itself  # pragma: no cover
            logger.exception("UDP receive path failed")

    def error_received(self, exc: Exception) -> None:
        # ICMP port/host unreachable for an earlier sendto (ConnectionRefusedError),
        # EMSGSIZE and the like: a hint about one datagram, not a broken socket.
        self._socket.sources.warn("udp-error", None, "UDP socket error: %r", exc, level=logging.INFO)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            logger.warning("UDP socket closed: %r", exc)
        if not self.closed.done():
            self.closed.set_result(None)


class UdpSocket:
    """The bound UDP socket: receive path with its checks, and the send path."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sources: SourceLimits, *, deliver: Deliver,
                 send_failed: SendFailed, spawn: Spawn) -> None:
        self.loop = loop
        self.sources = sources
        self._deliver = deliver
        self._send_failed = send_failed
        self._spawn = spawn
        self.transport: asyncio.DatagramTransport | None = None
        self.protocol: UdpProtocol | None = None

    async def bind(self, host: str, port: int) -> Address:
        transport, protocol = await self.loop.create_datagram_endpoint(lambda: UdpProtocol(self),
                                                                       local_addr=(host, port))
        self.transport, self.protocol = transport, protocol
        sockname = transport.get_extra_info("sockname")
        return Address(sockname[0], sockname[1], "udp")

    def received(self, data: bytes, source: Address) -> None:
        limit = self.sources.limits.max_udp_message
        if len(data) > limit:
            self.sources.warn("udp-size", source, "dropping %d-byte datagram from %s (limit %d)",
                              len(data), source, limit)
            return
        if len(data) <= MAX_KEEPALIVE_BYTES and not data.strip():
            return  # CRLF keep-alive datagram
        if self.sources.allow_message(source):
            self._deliver(data, source)

    def send(self, data: bytes, destination: Address) -> None:
        udp = self.transport
        if udp is None or udp.is_closing():
            self._send_failed(destination, ConnectionError("no UDP socket"))
            return
        if len(data) > MAX_UDP_PAYLOAD:
            self._send_failed(destination, ValueError(f"{len(data)}-byte message too large for UDP"))
            return
        if not is_ip(destination.host):
            self._spawn(self._send_resolved(data, destination))
            return
        host = destination.host
        ipv4 = ":" not in host
        if udp.get_extra_info("socket").family == socket.AF_INET:
            if not ipv4:
                self._send_failed(destination, OSError("IPv6 destination on an IPv4 UDP socket"))
                return
        elif ipv4:
            host = "::ffff:" + host  # dual-stack socket: IPv4-mapped address
        try:
            udp.sendto(data, (host, destination.port))
        except Exception as exc:  # noqa: BLE001 - asyncio reports most errors via error_received, but be sure
            self._send_failed(destination, exc)

    async def _send_resolved(self, data: bytes, destination: Address) -> None:
        udp = self.transport
        assert udp is not None
        family = udp.get_extra_info("socket").family
        try:
            infos = await self.loop.getaddrinfo(destination.host, destination.port, family=family,
                                                type=socket.SOCK_DGRAM)
            if udp.is_closing():
                raise ConnectionError("UDP socket closed")
            udp.sendto(data, infos[0][4])
        except Exception as exc:  # noqa: BLE001 - DNS and socket errors alike are a failed send
            self._send_failed(destination, exc)

    def close(self) -> asyncio.Future[None] | None:
        """Close the socket; the future completes when it is closed."""
        if self.transport is None or self.protocol is None:
            return None
        self.transport.close()
        return self.protocol.closed
