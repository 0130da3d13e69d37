"""Which inbound trunk a request belongs to, and whether it must authenticate.

A number nobody serves is challenged like one that exists (see
:meth:`TrunkTable.auth_policy`), so a scanner such as svwar cannot tell them
apart: only a caller who has authenticated learns 404.
"""

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
    transfer_targets: tuple[str, ...] = ()  # where a caller's REFER may send us (call/dial_policy.py); empty: nowhere
    srtp: str | None = None  # required/optional/off/auto (call/srtp_policy.py); None: the server's media.srtp

    def __post_init__(self) -> None:
        if self.username and self.password and self.verifier is None:
            self.verifier = DigestVerifier(self.realm, os.urandom(32), algorithms=self.algorithms)

    def matches(self, called: str | None, source_host: str) -> bool:
        return self.admits(source_host) and self.serves(called)

    def admits(self, source_host: str) -> bool:
        """Whether calls from this address may use the trunk at all."""
        if not self.networks:
            return True
        try:
            address = ipaddress.ip_address(source_host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def serves(self, called: str | None) -> bool:
        return not self.numbers or called in self.numbers or normalise_number(called) in self.numbers

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

    def carrier_source(self, source_host: str) -> bool:
        """Whether ``source_host`` is inside a trunk's ``allowed_cidrs``: a carrier we listed by
        address, whose call rate is its business, not a flood (exempt from the per-source limit)."""
        trunks = [trunk for trunk in self.trunks if trunk.networks]
        return bool(trunks) and any(trunk.admits(source_host) for trunk in trunks)

    def match(self, request: Request, source: Any) -> InboundTrunkPolicy | None:
        called = called_user(request)
        host = getattr(source, "host", "")
        for trunk in self.trunks:
            if trunk.matches(called, host):
                return trunk
        return None

    def auth_policy(self, request: Request, source: Any) -> InboundAuth | None:
        trunk = self.match(request, source)
        if trunk is not None:
            return trunk.auth()
        return self.unknown_number_auth(getattr(source, "host", ""))

    def unknown_number_auth(self, source_host: str) -> InboundAuth | None:
        """The challenge for a number no trunk serves, for callers from ``source_host``.

        Answering it with 404 at once would tell a scanner which numbers exist
        (401 for those, 404 for the rest). So when a digest trunk admits this
        source, the request is challenged exactly as that trunk's numbers are:
        same realm, same algorithms, same headers. Credentials of any digest
        trunk with that realm pass, and only then does the call layer answer 404.
        With no digest trunk open to the source, nothing is challenged and every
        unknown number gets the same 404.
        """
        candidates = [t for t in self.trunks if t.verifier is not None and t.admits(source_host)]
        if not candidates:
            return None
        first = candidates[0]
        passwords: dict[str, str] = {}
        for trunk in candidates:
            if trunk.realm == first.realm and trunk.username and trunk.password:
                passwords.setdefault(trunk.username, trunk.password)
        assert first.verifier is not None
        return InboundAuth(first.verifier, passwords.get)
