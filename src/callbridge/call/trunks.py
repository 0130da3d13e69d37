"""Which inbound trunk a request belongs to, and whether it must authenticate."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any

from ..sip.digest import DigestVerifier
from ..sip.message import Request
from ..sip.uri import SipUri
from ..sip.useragent import InboundAuth


@dataclass(slots=True)
class InboundTrunkPolicy:
    name: str
    numbers: list[str] = field(default_factory=list)  # empty: any called number
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)  # empty: any source
    username: str | None = None
    password: str | None = None
    realm: str = "callbridge"
    flow: str | None = None
    algorithms: tuple[str, ...] = ("MD5", "SHA-256")
    verifier: DigestVerifier | None = None

    def __post_init__(self) -> None:
        if self.username and self.password and self.verifier is None:
            self.verifier = DigestVerifier(self.realm, os.urandom(32), algorithms=self.algorithms)

    def matches(self, called: str | None, source_host: str) -> bool:
        if self.networks:
            try:
                address = ipaddress.ip_address(source_host)
            except ValueError:
                return False
            if not any(address in network for network in self.networks):
                return False
        if self.numbers and called not in self.numbers and normalise_number(called) not in self.numbers:
            return False
        return True

    def auth(self) -> InboundAuth | None:
        if self.verifier is None:
            return None
        expected = {self.username: self.password}
        return InboundAuth(self.verifier, expected.get)


def normalise_number(value: str | None) -> str | None:
    """'+1 (555) 010-0000' and '15550100000' both become '+15550100000'-like digits."""
    if value is None:
        return None
    digits = "".join(c for c in value if c.isdigit())
    return ("+" + digits) if value.strip().startswith("+") else digits


def called_user(request: Request) -> str | None:
    uri = request.uri
    if isinstance(uri, SipUri) and uri.user:
        return uri.user_decoded
    to_uri = request.to_addr.uri
    return to_uri.user_decoded if isinstance(to_uri, SipUri) else None


class TrunkTable:
    """First matching trunk wins; with no trunks configured every source is accepted."""

    def __init__(self, trunks: list[InboundTrunkPolicy]) -> None:
        self.trunks = trunks

    def match(self, request: Request, source: Any) -> InboundTrunkPolicy | None:
        called = called_user(request)
        host = getattr(source, "host", "")
        for trunk in self.trunks:
            if trunk.matches(called, host):
                return trunk
        return None

    def auth_policy(self, request: Request, source: Any) -> InboundAuth | None:
        trunk = self.match(request, source)
        return trunk.auth() if trunk is not None else None
