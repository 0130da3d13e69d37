"""Dialog state and in-dialog request construction (RFC 3261 §12)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from .message import Request, Response
from .uri import NameAddr, SipUri, Uri, Via

MAX_FORWARDS = 70


def new_tag() -> str:
    # RFC 3261 §19.3: tags need at least 32 bits of randomness.
    return secrets.token_hex(6)


def new_branch() -> str:
    # RFC 3261 §8.1.1.7: unique per transaction and prefixed with the cookie.
    return "z9hG4bK" + secrets.token_hex(10)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


@dataclass(slots=True)
class Dialog:
    """One dialog's state, from either side (§12.1)."""

    call_id: str
    local_tag: str
    remote_tag: str | None
    local_uri: NameAddr  # our From (UAC) or To (UAS) address, without tag
    remote_uri: NameAddr
    remote_target: Uri  # the peer's Contact, refreshed by target-refresh requests (§12.2)
    route_set: list[NameAddr] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    is_uas: bool = True
    secure: bool = False
    confirmed: bool = False
    # Where in-dialog requests go when there is no route set: the address the
    # peer actually sent from (symmetric signalling; works through NAT and TCP).
    peer_address: Any = None

    @property
    def id(self) -> tuple[str, str, str | None]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_incoming_invite(cls, request: Request, local_tag: str, source: Any) -> "Dialog":
        """UAS side (§12.1.1): route set from Record-Route, in order."""
        contacts = request.contacts
        remote_target = contacts[0].uri if contacts else request.from_addr.uri
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_addr.tag,
            local_uri=_without_tag(request.to_addr),
            remote_uri=_without_tag(request.from_addr),
            remote_target=remote_target,
            route_set=request.record_routes,
            remote_seq=request.cseq.number,
            is_uas=True,
            secure=isinstance(request.uri, SipUri) and request.uri.scheme == "sips",
            peer_address=source,
        )

    @classmethod
    def from_outgoing_invite(cls, request: Request, response: Response, destination: Any) -> "Dialog":
        """UAC side (§12.1.2): route set from Record-Route, reversed."""
        contacts = response.contacts
        return cls(
            call_id=request.call_id,
            local_tag=request.from_addr.tag or "",
            remote_tag=response.to_addr.tag,
            local_uri=_without_tag(request.from_addr),
            remote_uri=_without_tag(response.to_addr),
            remote_target=contacts[0].uri if contacts else request.uri,  # type: ignore[arg-type]
            route_set=list(reversed(response.record_routes)),
            local_seq=request.cseq.number,
            is_uas=False,
            peer_address=destination,
        )

    def refresh_target(self, message: Request | Response) -> None:
        """§12.2.2 / RFC 3311: a target refresh replaces the remote target."""
        contacts = message.contacts
        if contacts:
            self.remote_target = contacts[0].uri

    def accept_remote_cseq(self, request: Request) -> bool:
        """§12.2.2: a lower CSeq than seen before is out of order (answer 500)."""
        number = request.cseq.number
        if self.remote_seq is not None and number < self.remote_seq and request.method != "ACK":
            return False
        if request.method not in ("ACK", "CANCEL"):
            self.remote_seq = number
        return True

    def next_cseq(self) -> int:
        self.local_seq += 1
        return self.local_seq

    def build_request(self, method: str, via: Via, contact: NameAddr, *, cseq: int | None = None) -> Request:
        """An in-dialog request (§12.2.1.1), with loose or strict routing."""
        routes = list(self.route_set)
        if routes and isinstance(routes[0].uri, SipUri) and "lr" not in routes[0].uri.params:
            # Strict router (RFC 2543): it goes in the Request-URI, and the remote target last.
            uri: Uri = routes[0].uri
            routes = routes[1:] + [NameAddr(self.remote_target)]
        else:
            uri = self.remote_target
        request = Request(method=method, uri=uri)
        request.headers.add("Via", str(via))
        for route in routes:
            request.headers.add("Route", str(route))
        request.headers.add("Max-Forwards", str(MAX_FORWARDS))
        request.headers.add("From", str(self.local_uri.with_tag(self.local_tag)))
        remote = self.remote_uri.with_tag(self.remote_tag) if self.remote_tag else self.remote_uri
        request.headers.add("To", str(remote))
        request.headers.add("Call-ID", self.call_id)
        number = self.next_cseq() if cseq is None else cseq
        request.headers.add("CSeq", f"{number} {method}")
        request.headers.add("Contact", str(contact))
        return request

    def request_destination(self) -> tuple[Uri, Any]:
        """The URI to resolve for in-dialog requests, and the symmetric peer address."""
        if self.route_set:
            return self.route_set[0].uri, None
        return self.remote_target, self.peer_address


def _without_tag(addr: NameAddr) -> NameAddr:
    params = {k: v for k, v in addr.params.items() if k != "tag"}
    return NameAddr(uri=addr.uri, display_name=addr.display_name, params=params)
