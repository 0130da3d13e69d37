"""Thin asyncio driver for one call's RTP/RTCP port pair, with symmetric RTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .ports import PortAllocator

log = logging.getLogger("callbridge.rtp")
# How many ports we try before declaring the range unusable for this call.
MAX_BIND_ATTEMPTS = 16

Addr = tuple[str, int]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Addr], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        try:
            self.on_datagram(data, addr)
        except Exception:  # noqa: BLE001 - a bad packet must not kill the socket
            log.exception("RTP handler failed for packet from %s", addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("RTP socket error: %s", exc)


class RtpSocket:
    """RTP on an even port and RTCP on the next one (RFC 3550 §11).

    Symmetric RTP (RFC 4961): once media arrives, we send back to the address
    it actually came from, which is what gets audio through NAT on trunks.
    """

    def __init__(self, allocator: PortAllocator, host: str) -> None:
        self.allocator = allocator
        self.host = host
        self.port: int | None = None
        self.remote: Addr | None = None
        self.remote_rtcp: Addr | None = None
        self.latched = False
        self.rtcp_latched = False
        self.on_rtp: Callable[[bytes, Addr], None] = lambda data, addr: None
        self.on_rtcp: Callable[[bytes, Addr], None] = lambda data, addr: None
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None

    async def open(self) -> int:
        loop = asyncio.get_running_loop()
        for _ in range(MAX_BIND_ATTEMPTS):
            port = self.allocator.allocate()
            try:
                self._rtp, _ = await loop.create_datagram_endpoint(
                    lambda: _Protocol(self._rtp_received), local_addr=(self.host, port))
                self._rtcp, _ = await loop.create_datagram_endpoint(
                    lambda: _Protocol(self._rtcp_received), local_addr=(self.host, port + 1))
            except OSError:
                self._close_transports()
                self.allocator.mark_bad(port)
                continue
            self.port = port
            return port
        raise OSError("no free RTP port pair in the configured range")

    def set_remote(self, host: str, port: int, rtcp_port: int | None = None) -> None:
        """The address from SDP; replaced by the first real source seen.

        RTCP goes to ``a=rtcp`` when the SDP has it (RFC 3605), else port + 1.
        """
        if not self.latched:
            self.remote = (host, port)
        if not self.rtcp_latched:
            self.remote_rtcp = (host, rtcp_port or port + 1)

    def _rtp_received(self, data: bytes, addr: Addr) -> None:
        if not self.latched or addr != self.remote:
            if not self.latched:
                log.debug("RTP latched to %s (SDP said %s)", addr, self.remote)
            self.remote, self.latched = addr, True
        self.on_rtp(data, addr)

    def _rtcp_received(self, data: bytes, addr: Addr) -> None:
        if not self.rtcp_latched or addr != self.remote_rtcp:
            self.remote_rtcp, self.rtcp_latched = addr, True
        self.on_rtcp(data, addr)

    def send(self, data: bytes) -> None:
        if self._rtp is not None and self.remote is not None and self.remote[1] != 0:
            self._rtp.sendto(data, self.remote)

    def send_rtcp(self, data: bytes) -> None:
        remote = self.remote_rtcp
        if remote is None and self.remote is not None:
            remote = (self.remote[0], self.remote[1] + 1)
        if self._rtcp is not None and remote is not None and self.remote is not None and self.remote[1] != 0:
            self._rtcp.sendto(data, remote)

    def _close_transports(self) -> None:
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        self._rtp = self._rtcp = None

    def close(self) -> None:
        self._close_transports()
        if self.port is not None:
            self.allocator.release(self.port)
            self.port = None
