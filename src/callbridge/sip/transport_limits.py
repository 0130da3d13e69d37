"""Resource bounds of the SIP transports, and the per-source checks that enforce them.

:class:`TransportLimits` holds the numbers (defaults below, with where they
come from). :class:`SourceLimits` applies the per-source ones: messages per
second per IP, connections per IP and in all, and at most one log line per
source and reason per interval, with a count of what it kept quiet about.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .address import Address
from .framing import MAX_HEADER_BYTES
from .ratelimit import LogThrottle, TokenBuckets

# Every transport module logs here, so one logger name covers the socket layer.
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
# Per-source-IP message rate. One carrier trunk (or a Kamailio in front of us)
# brings every call from one IP: 300 calls/s is ~1,500 msg/s with provisional
# and in-dialog traffic. 5,000/s with a 10,000 burst still stops floods.
RATE_LIMIT = 5000.0
RATE_BURST = 10000.0
# Bounds the rate limiter's (and log throttle's) memory under spoofed-source UDP floods.
MAX_TRACKED_SOURCES = 10_000
# At most one warning per source and reason in this many seconds.
DROP_LOG_INTERVAL = 10.0


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


def log_extra(address: Address | None) -> dict[str, Any]:
    """The peer, as structured fields on a log record."""
    if address is None:
        return {"sip_peer": None}
    return {
        "sip_peer": str(address),
        "sip_peer_host": address.host,
        "sip_peer_port": address.port,
        "sip_transport": address.transport,
    }


class SourceLimits:
    """Per-source-IP admission of messages and connections, and throttled reports of what was refused."""

    def __init__(self, limits: TransportLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        rate = limits.rate_limit
        self._buckets = TokenBuckets(rate, limits.rate_burst, limits.max_tracked_sources) if rate else None
        self._throttle = LogThrottle(limits.drop_log_interval, limits.max_tracked_sources)
        self._per_ip: dict[str, int] = {}

    def allow_message(self, source: Address) -> bool:
        """Whether one more message from ``source`` fits its IP's rate; logs the refusal."""
        if self._buckets is None or self._buckets.allow(source.host, self._clock()):
            return True
        self.warn("rate", source, "rate limit exceeded by %s; dropping", source)
        return False

    def admit_connection(self, peer: Address, open_connections: int) -> bool:
        """Count a new inbound connection from ``peer``; False (logged) if it is over a limit."""
        if open_connections >= self.limits.max_connections:
            self.warn("conn-limit", peer, "refusing %s: %d connections open", peer, open_connections)
            return False
        count = self._per_ip.get(peer.host, 0)
        if count >= self.limits.max_connections_per_ip:
            self.warn("ip-conn-limit", peer, "refusing %s: %d connections from this IP", peer, count)
            return False
        self._per_ip[peer.host] = count + 1
        return True

    def release_connection(self, host: str) -> None:
        left = self._per_ip.get(host, 1) - 1
        if left > 0:
            self._per_ip[host] = left
        else:
            self._per_ip.pop(host, None)

    def clear(self) -> None:
        self._per_ip.clear()

    def warn(self, reason: str, source: Address | None, msg: str, *args: object, level: int = logging.WARNING) -> None:
        """Log once per source IP and reason per interval, saying how many similar lines were kept back."""
        key = (reason, source.host if source is not None else "")
        suppressed = self._throttle.check(key, self._clock())
        if suppressed is None:
            return
        if suppressed:
            msg += " (%d similar suppressed)"
            args = (*args, suppressed)
        logger.log(level, msg, *args, extra={**log_extra(source), "sip_drop_reason": reason})
