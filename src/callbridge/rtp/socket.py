"""Thin asyncio driver for one call's RTP/RTCP port pair, with symmetric RTP.

Plain non-blocking sockets watched with ``loop.add_reader`` rather than
asyncio datagram transports: at 25,000 packets a second the transport
machinery cost four times the CPU of reading the socket directly
(bench/rtp_echo.py). A real-time packet that cannot be sent at once is
dropped, never queued: late audio is worse than lost audio.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from .ports import PortAllocator

log = logging.getLogger("callbridge.rtp")
# How many ports we try before declaring the range unusable for this call.
MAX_BIND_ATTEMPTS = 16
# Datagrams read per wake-up: enough to drain a normal queue, few enough that
# one flooded port cannot starve every other call.
MAX_READS_PER_WAKEUP = 32
MAX_DATAGRAM = 2048  # RTP over Ethernet never comes close; bigger is junk

Addr = tuple[str, int]


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
        self.send_drops = 0
        self.on_rtp: Callable[[bytes, Addr], None] = lambda data, addr: None
        self.on_rtcp: Callable[[bytes, Addr], None] = lambda data, addr: None
        self._rtp: socket.socket | None = None
        self._rtcp: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> int:
        self._loop = asyncio.get_running_loop()
        for _ in range(MAX_BIND_ATTEMPTS):
            port = self.allocator.allocate()
            try:
                self._rtp = self._bind(port)
                self._rtcp = self._bind(port + 1)
            except OSError:
                self._close_sockets()
                self.allocator.mark_bad(port)
                continue
            self._loop.add_reader(self._rtp.fileno(), self._drain, self._rtp, self._rtp_received)
            self._loop.add_reader(self._rtcp.fileno(), self._drain, self._rtcp, self._rtcp_received)
            self.port = port
            return port
        raise OSError("no free RTP port pair in the configured range")

    def _bind(self, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            raise
        return sock

    def _drain(self, sock: socket.socket, handler: Callable[[bytes, Addr], None]) -> None:
        for _ in range(MAX_READS_PER_WAKEUP):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors surfacing on the socket
                log.debug("RTP socket error: %s", exc)
                return
            try:
                handler(data, addr[:2])
            except Exception:  # noqa: BLE001 - a bad packet must not kill the call
                log.exception("RTP handler failed for packet from %s", addr)

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
        remote = self.remote
        if self._rtp is None or remote is None or remote[1] == 0:
            return  # port 0 in SDP: the stream is disabled (RFC 3264 §5.1)
        try:
            self._rtp.sendto(data, remote)
        except OSError:  # buffer full (BlockingIOError) or unreachable: drop, stay real-time
            self.send_drops += 1

    def send_rtcp(self, data: bytes) -> None:
        remote = self.remote_rtcp
        if remote is None and self.remote is not None:
            remote = (self.remote[0], self.remote[1] + 1)
        if self._rtcp is None or remote is None or self.remote is None or self.remote[1] == 0:
            return
        try:
            self._rtcp.sendto(data, remote)
        except OSError:
            self.send_drops += 1

    def _close_sockets(self) -> None:
        for sock in (self._rtp, self._rtcp):
            if sock is None:
                continue
            if self._loop is not None and sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._rtp = self._rtcp = None

    def close(self) -> None:
        self._close_sockets()
        if self.port is not None:
            self.allocator.release(self.port)
            self.port = None
