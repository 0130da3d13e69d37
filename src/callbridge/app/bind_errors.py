""""Address already in use" at start-up, said in one line that names the port and what it was for.

The listeners bind in a fixed order (SIP UDP, SIP TCP, SIP TLS, then HTTP) and the errors they
raise do not say which one failed, so after a failure each candidate is probed with a throw-away
socket: the first that cannot bind is the one in use.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass


class PortInUse(OSError):
    """A listening port is taken: the CLI prints this one line and exits with status 2."""

    def __init__(self, purpose: str, host: str, port: int, option: str) -> None:
        super().__init__(errno.EADDRINUSE, "address already in use")
        self.purpose, self.host, self.port, self.option = purpose, host, port, option

    def __str__(self) -> str:
        return (f"{self.purpose} port {self.port} on {self.host or '*'} is already in use (another callbridge, "
                f"or another server, listens there); choose another with {self.option}")


@dataclass(frozen=True)
class Listener:
    purpose: str  # "SIP UDP", "HTTP", ...
    kind: int  # socket.SOCK_DGRAM or socket.SOCK_STREAM
    port: int
    option: str  # the command-line option that moves it


def port_taken(host: str, port: int, kind: int) -> bool:
    """Whether binding ``host:port`` fails with EADDRINUSE right now (port 0 never does)."""
    if port == 0:
        return False
    try:
        addresses = socket.getaddrinfo(host or None, port, type=kind, flags=socket.AI_PASSIVE)
    except OSError:
        return False
    for family, socktype, proto, _, address in addresses:
        with socket.socket(family, socktype, proto) as probe:
            if kind == socket.SOCK_STREAM:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's listeners do
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def sip_listeners(sip_port: int, sips_port: int | None) -> list[Listener]:
    listeners = [Listener("SIP UDP", socket.SOCK_DGRAM, sip_port, "--sip-port"),
                 Listener("SIP TCP", socket.SOCK_STREAM, sip_port, "--sip-port")]
    if sips_port is not None:
        listeners.append(Listener("SIP TLS", socket.SOCK_STREAM, sips_port, "--sips-port"))
    return listeners


def http_listener(http_port: int) -> Listener:
    return Listener("HTTP", socket.SOCK_STREAM, http_port, "--http-port")


def which_in_use(exc: BaseException, host: str, listeners: list[Listener]) -> PortInUse | None:
    """The PortInUse naming the first listener whose port is taken, when ``exc`` was "address in use"."""
    if isinstance(exc, OSError) and exc.errno not in (errno.EADDRINUSE, None):
        return None
    for listener in listeners:
        if port_taken(host, listener.port, listener.kind):
            return PortInUse(listener.purpose, host, listener.port, listener.option)
    return None


__all__ = ["Listener", "PortInUse", "http_listener", "port_taken", "sip_listeners", "which_in_use"]
