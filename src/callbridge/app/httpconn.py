"""Connection limits for the HTTP server: a bounded count per client and in all, and a deadline for headers.

uvicorn alone holds a connection that never sends a byte for ever, and restarts
no clock while a client dribbles its headers one byte at a time (slowloris), so
3,000 such sockets from one address were all held. This protocol, uvicorn's h11
one with three additions, closes them:

- a client (an IPv4 address, or an IPv6 /64: one host's share) holds at most
  ``api.max_connections_per_client`` connections, the server ``api.max_connections``;
  a connection over either is closed as soon as it is accepted;
- each request's headers must be complete within ``api.header_timeout_s`` of the
  connection opening or of the previous response ending.

Bodies have their own deadline in the ASGI guard (:mod:`.httpguard`).
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..sip.guard import source_key
from .httpguard import RefusalLog

if TYPE_CHECKING:
    from uvicorn.protocols.http.h11_impl import RequestResponseCycle

DEFAULT_PER_CLIENT = 32
DEFAULT_TOTAL = 512
DEFAULT_HEADER_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ConnectionLimits:
    per_client: int = DEFAULT_PER_CLIENT
    total: int = DEFAULT_TOTAL
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S


def client_key(peer: Any) -> str:
    """What one client's connections are counted under: its address, an IPv6 /64 as one."""
    host = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else "?"
    return source_key(host)


class ConnectionCounter:
    """Open connections per client, and in all; one per server."""

    def __init__(self, limits: ConnectionLimits, refusals: RefusalLog | None = None) -> None:
        self.limits = limits
        self.refusals = refusals or RefusalLog()
        self.by_client: dict[str, int] = {}
        self.total = 0
        self.refused = 0
        self.timed_out = 0

    def admit(self, key: str) -> bool:
        held = self.by_client.get(key, 0)
        if held >= self.limits.per_client or self.total >= self.limits.total:
            self.refused += 1
            which = "per-client" if held >= self.limits.per_client else "total"
            self.refusals.note("http-connection-limit", key, "HTTP connection refused: too many open",
                               limit=which, open_from_client=held, open_total=self.total)
            return False
        self.by_client[key] = held + 1
        self.total += 1
        return True

    def release(self, key: str) -> None:
        held = self.by_client.get(key, 0) - 1
        if held > 0:
            self.by_client[key] = held
        else:
            self.by_client.pop(key, None)
        self.total -= 1


class GuardedH11Protocol(H11Protocol):
    def __init__(self, *args: Any, counter: ConnectionCounter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._counter = counter
        self._client_key: str | None = None  # set once admitted: released exactly once
        self._header_timer: asyncio.TimerHandle | None = None
        self._cycle_at_arm: RequestResponseCycle | None = None

    def connection_made(self, transport) -> None:
        key = client_key(transport.get_extra_info("peername"))
        if not self._counter.admit(key):
            transport.close()
            return
        self._client_key = key
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._client_key is None:
            return  # refused in connection_made: uvicorn never knew it
        self._counter.release(self._client_key)
        self._client_key = None
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is not None and self.cycle is not self._cycle_at_arm:
            self._disarm_header_deadline()  # a request's headers arrived in time

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle is not None and self.cycle.response_complete:
            self._arm_header_deadline()  # the next request's headers get the same time

    def _unsupported_upgrade_warning(self) -> None:
        pass  # we serve no upgrades: the request is answered as plain HTTP, and a client must not fill the log

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._cycle_at_arm = self.cycle
        self._header_timer = self.loop.call_later(self._counter.limits.header_timeout_s, self._header_deadline)

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self.cycle is not self._cycle_at_arm or self.transport is None or self.transport.is_closing():
            return  # a request started meanwhile
        self._counter.timed_out += 1
        self._counter.refusals.note("http-header-timeout", self._client_key or "?",
                                    "HTTP connection closed: request headers not complete in time",
                                    seconds=self._counter.limits.header_timeout_s)
        if self.conn.our_state != h11.ERROR:
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass
        self.transport.close()


def guarded_protocol(counter: ConnectionCounter) -> Any:
    """For ``uvicorn.Config(http=...)``: the h11 protocol (whatever else is installed) with these limits."""
    return functools.partial(GuardedH11Protocol, counter=counter)


__all__ = ["ConnectionCounter", "ConnectionLimits", "GuardedH11Protocol", "client_key", "guarded_protocol"]
