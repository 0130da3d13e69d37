"""Transport addresses shared by the sans-IO core and the socket drivers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import SipParseError
from .uri import SipUri, parse_uri

TRANSPORTS = ("udp", "tcp", "tls")


@dataclass(frozen=True, slots=True)
class Address:
    """Where a message came from or goes to. ``host`` may be a DNS name until the driver resolves it."""

    host: str
    port: int
    transport: str = "udp"

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {self.transport!r}")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def is_reliable(address: Any) -> bool:
    """Streams are reliable: no retransmission timers there (RFC 3261 §17.1.1.2, §17.1.2.2)."""
    return getattr(address, "transport", "udp") != "udp"


def address_for_uri(uri: SipUri) -> Address:
    """RFC 3263 §4.1–4.2 without DNS: transport from the URI, default port per transport."""
    transport = uri.transport or ("tls" if uri.scheme == "sips" else "udp")
    if transport not in TRANSPORTS:
        transport = "udp"
    host, _ = uri.host_port()
    port = uri.port or (5061 if transport == "tls" else 5060)
    return Address(host, port, transport)


def proxy_address(text: str) -> Address:
    """Where requests for an outbound proxy URI go (RFC 3261 §8.1.2): a sip:/sips: URI naming a host.

    Raises ValueError saying what is wrong."""
    try:
        uri = parse_uri(text)
    except SipParseError as exc:
        raise ValueError(f"not a SIP URI: {exc}") from None
    if not isinstance(uri, SipUri) or uri.user:
        raise ValueError("must be a sip: or sips: URI of a host, e.g. sip:10.0.0.10:5060")
    return address_for_uri(uri)

