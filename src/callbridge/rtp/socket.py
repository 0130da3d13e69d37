"""Thin asyncio driver for one call's RTP/RTCP port pair, with symmetric RTP.

Plain non-blocking sockets watched with ``loop.add_reader`` rather than
asyncio datagram transports: at 25,000 packets a second the transport
machinery cost four times the CPU of reading the socket directly
(bench/rtp_echo.py). A real-time packet that cannot be sent at once is
dropped, never queued: late audio is worse than lost audio.

Which datagrams reach the call, and where media goes back to, is decided by
the sans-IO :class:`~callbridge.rtp.latch.RtpLatch`. Until the SDP's address
is confirmed (the ACK arrived, or we dial out and it is the callee's answer)
or valid RTP came from a source, nothing is sent: an unACKed INVITE must not
turn the server into an amplifier aimed at whatever ``c=`` names.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterable

from .latch import ACCEPT_RTCP, ACCEPT_RTP, RtpLatch
from .packet import RTCP_SECOND_OCTET_MAX, RTCP_SECOND_OCTET_MIN
from .ports import PortAllocator
from .srtp import SrtpContext

log = logging.getLogger("callbridge.rtp")
# How many ports we try before declaring the range unusable for this call.
MAX_BIND_ATTEMPTS = 16
# Datagrams read per wake-up: enough to drain a normal queue, few enough that
# one flooded port cannot starve every other call.
MAX_READS_PER_WAKEUP = 32
MAX_DATAGRAM = 2048  # RTP over Ethernet never comes close; bigger is junk
# Dropped datagrams are logged per call at most this often: a flood must not flood the log.
DROP_LOG_INTERVAL_S = 10.0
UNSPECIFIED_HOSTS = frozenset({"0.0.0.0", "::"})  # RFC 2543 hold or "not yet known": never a destination

Addr = tuple[str, int]


class RtpSocket:
    """RTP on an even port and RTCP on the next one (RFC 3550 §11).

    Symmetric RTP (RFC 4961): once valid media arrives, we send back to the
    address it actually came from, which is what gets audio through NAT on
    trunks; the latch keeps strangers from moving it.
    """

    def __init__(self, allocator: PortAllocator, host: str) -> None:
        self.allocator = allocator
        self.host = host
        self.port: int | None = None
        self.latch = RtpLatch()
        # SRTP (rtp/srtp.py) when the SDP keyed it: set once negotiated, before any media flows.
        self.srtp: SrtpContext | None = None
        self.confirmed = False  # the signalled address may be sent to (see confirm_remote)
        self.send_drops = 0
        self.on_rtp: Callable[[bytes, Addr], None] = lambda data, addr: None
        self.on_rtcp: Callable[[bytes, Addr], None] = lambda data, addr: None
        self._disabled = False  # port 0 in the SDP (RFC 3264 §5.1)
        self._dest: Addr | None = None
        self._rtcp_dest: Addr | None = None
        self._changes = 0
        self._drop_log_at = 0.0
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

    def _drain(self, sock: socket.socket, handler: Callable[[bytes, Addr, float], None]) -> None:
        now = time.monotonic()  # one reading per wake-up: the batch arrived together
        for _ in range(MAX_READS_PER_WAKEUP):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors surfacing on the socket
                log.debug("RTP socket error: %s", exc)
                return
            try:
                handler(data, addr[:2], now)
            except Exception:  # noqa: BLE001 - a bad packet must not kill the call
                log.exception("RTP handler failed for packet from %s", addr)

    # -- what the call layer tells us --------------------------------------------------------------

    def set_payload_types(self, audio: Iterable[int | None], events: Iterable[int | None] = ()) -> None:
        """The payload types the SDP negotiated: only these latch and reach the call."""
        self.latch.set_payload_types(frozenset(pt for pt in audio if pt is not None),
                                     frozenset(pt for pt in events if pt is not None))

    def set_remote(self, host: str, port: int, rtcp_port: int | None = None) -> None:
        """The address from SDP, used until valid RTP latches another source.

        RTCP goes to ``a=rtcp`` when the SDP has it (RFC 3605), else port + 1.
        """
        self.latch.set_signalled((host, port), (host, rtcp_port or port + 1))
        self._disabled = port == 0
        self._refresh()

    def confirm_remote(self) -> None:
        """The signalled address is the peer's own: the ACK came (RFC 3261 §13.3.1.4), or it is the
        callee's answer to our INVITE. Before this only a source that sent valid RTP gets media."""
        self.confirmed = True
        self._refresh()

    def _refresh(self) -> None:
        latch = self.latch
        self._changes = latch.changes
        if self._disabled:
            self._dest = self._rtcp_dest = None
            return
        signalled, signalled_rtcp = latch.signalled, latch.signalled_rtcp
        if not self.confirmed or (signalled is not None and signalled[0] in UNSPECIFIED_HOSTS):
            signalled = signalled_rtcp = None
        self._dest = latch.source or signalled
        self._rtcp_dest = latch.rtcp_source or signalled_rtcp

    # -- what the rest of the stack reads ---------------------------------------------------------------

    @property
    def can_send(self) -> bool:
        return self._dest is not None

    @property
    def remote(self) -> Addr | None:
        return self.latch.source or self.latch.signalled

    @property
    def remote_rtcp(self) -> Addr | None:
        return self.latch.rtcp_source or self.latch.signalled_rtcp

    @property
    def latched(self) -> bool:
        return self.latch.source is not None

    @property
    def rtcp_latched(self) -> bool:
        return self.latch.rtcp_source is not None

    # -- receiving --------------------------------------------------------------------------------------

    def _rtp_received(self, data: bytes, addr: Addr, now: float) -> None:
        srtp = self.srtp
        if srtp is not None:
            # Authenticate first (RFC 3711 §3.3): the latch sees only the keyholder's packets, so a
            # stranger who can reach the port cannot lock it however well-formed its RTP header is.
            if len(data) > 1 and RTCP_SECOND_OCTET_MIN <= data[1] <= RTCP_SECOND_OCTET_MAX:
                plain = srtp.unprotect_rtcp(data)  # SRTCP multiplexed on the RTP port (RFC 5761 §4)
            else:
                plain = srtp.unprotect(data)
            if plain is None:
                if now >= self._drop_log_at:
                    self._log_drops(addr, now)
                return
            data = plain
        latch = self.latch
        verdict = latch.rtp(data, addr, now)
        if latch.changes != self._changes:
            self._moved(addr)
        if verdict == ACCEPT_RTP:
            if latch.learning:  # the first source's packets from before it locked
                for learnt in latch.take_learnt():
                    self.on_rtp(learnt, addr)
            self.on_rtp(data, addr)
        elif verdict == ACCEPT_RTCP:
            self.on_rtcp(data, addr)
        elif now >= self._drop_log_at:
            self._log_drops(addr, now)

    def _rtcp_received(self, data: bytes, addr: Addr, now: float) -> None:
        if self.srtp is not None:
            plain = self.srtp.unprotect_rtcp(data)
            if plain is None:
                if now >= self._drop_log_at:
                    self._log_drops(addr, now)
                return
            data = plain
        latch = self.latch
        if latch.rtcp(data, addr):
            if latch.changes != self._changes:
                self._moved(addr)
            self.on_rtcp(data, addr)
        elif now >= self._drop_log_at:
            self._log_drops(addr, now)

    def _moved(self, addr: Addr) -> None:
        latch = self.latch
        if latch.source != self._dest:
            # Once per call normally; a move of an established lock is worth seeing (NAT, or an attempt).
            level = logging.INFO if latch.counters.rebinds else logging.DEBUG
            log.log(level, "RTP port %s locked to %s (SDP said %s, rebinds %d)", self.port, latch.source,
                    latch.signalled, latch.counters.rebinds)
        self._refresh()

    def _log_drops(self, addr: Addr, now: float) -> None:
        self._drop_log_at = now + DROP_LOG_INTERVAL_S
        srtp = f"; srtp {self.srtp.counters.as_dict()}" if self.srtp is not None else ""
        log.info("RTP port %s dropped datagrams (latest from %s; locked to %s): %s%s", self.port, addr,
                 self.latch.source, self.latch.counters.as_dict(), srtp)

    # -- sending ----------------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        srtp = self.srtp
        self._send(self._rtp, self._dest, data, srtp.protect if srtp is not None else None)

    def send_rtcp(self, data: bytes) -> None:
        srtp = self.srtp
        self._send(self._rtcp, self._rtcp_dest, data, srtp.protect_rtcp if srtp is not None else None)

    def _send(self, sock: socket.socket | None, remote: Addr | None, data: bytes,
              protect: Callable[[bytes], bytes | None] | None) -> None:
        if remote is None or sock is None:
            return
        if protect is not None:
            protected = protect(data)
            if protected is None:
                self.send_drops += 1
                return
            data = protected
        try:
            sock.sendto(data, remote)
        except OSError:  # buffer full (BlockingIOError) or unreachable: drop, stay real-time
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
