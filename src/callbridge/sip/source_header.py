"""Who is really calling behind a trusted SIP proxy: the source header, parsed strictly. Sans-IO.

A proxy such as Kamailio relays the caller's requests, so every one of them arrives from the
proxy's address: the address RFC 3261 §18.2.1 stamps into the Via's ``received`` is the
proxy's, and the caller's own Via (RFC 3261 §16.6 step 8 puts the proxy's above it) is
whatever the caller chose to write there. The proxy names the caller's real address in a
header of its own instead, after removing any copy the caller sent::

    X-Source-IP: 203.0.113.5;port=5060;proto=udp

That header is believed only from a source inside ``trusted_proxies``; from anyone else it
is ignored (and removed all the same, so it never reaches the call's record or the agent).
A value that is not exactly one well-formed header is ignored too, and the proxy's own
address is the source: a caller must not be able to pick the address it is counted under.

Who is calling decides trunk ACLs, digest policy, the auth guard's bans and the per-source
rate limit. Responses still go back by Via to the proxy (RFC 3261 §18.2.2): nothing here
changes where we send.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .message import Request

DEFAULT_SOURCE_HEADER = "X-Source-IP"
# Kamailio writes "$si;port=$sp;proto=$pr": an IPv6 address with its params is ~70 characters.
MAX_VALUE_LENGTH = 128
MAX_PORT = 65535
# $pr in Kamailio: what the caller used to reach the proxy.
PROXY_PROTOCOLS = frozenset({"udp", "tcp", "tls", "sctp", "ws", "wss"})
# The per-host trust answers kept (a flood of spoofed sources must not grow it without bound).
MAX_CACHED_HOSTS = 4096

_PARAM = re.compile(r"([a-z]+)=([A-Za-z0-9]+)", re.ASCII)
# The parser's header-section end and line folding (sip/parser.py, RFC 3261 §7.3.1), on bytes.
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(rb"[ \t]*\r?\n[ \t]+")
_PORT = re.compile(r"[1-9][0-9]{0,4}", re.ASCII)


class SourceHeaderError(ValueError):
    """The header is there but unusable; the message says why (for the log)."""


@dataclass(frozen=True, slots=True)
class CallerAddress:
    """The caller's address as a trusted proxy saw it; ``proxy`` is where the request came from.

    Shaped like :class:`~callbridge.sip.address.Address` where the call layer reads it
    (``host``, ``port``, ``transport``), so a trunk ACL matches it unchanged.
    """

    host: str
    port: int | None
    transport: str | None  # the protocol between the caller and the proxy
    proxy: Any

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        where = f"{self.transport or 'sip'}:{host}" + (f":{self.port}" if self.port else "")
        return f"{where} via {self.proxy}"


def parse_source_value(value: str, proxy: Any = None) -> CallerAddress:
    """``203.0.113.5;port=5060;proto=udp`` (port and proto optional, each at most once).

    Strict on purpose: an IP literal (no name, no zone id, IPv6 bare or in brackets), no
    whitespace inside, no other parameters. Raises :class:`SourceHeaderError`.
    """
    text = value.strip(" \t")
    if not text or len(text) > MAX_VALUE_LENGTH:
        raise SourceHeaderError("empty" if not text else "too long")
    host_text, *params = text.split(";")
    host = _ip_literal(host_text)
    seen: dict[str, str] = {}
    for param in params:
        match = _PARAM.fullmatch(param)
        if match is None or match.group(1) not in ("port", "proto") or match.group(1) in seen:
            raise SourceHeaderError(f"bad parameter {param[:20]!r}")
        seen[match.group(1)] = match.group(2)
    port = seen.get("port")
    if port is not None and (_PORT.fullmatch(port) is None or int(port) > MAX_PORT):
        raise SourceHeaderError(f"bad port {port!r}")
    proto = seen.get("proto")
    if proto is not None:
        proto = proto.lower()
        if proto not in PROXY_PROTOCOLS:
            raise SourceHeaderError(f"unknown proto {proto!r}")
    return CallerAddress(host, int(port) if port else None, proto, proxy)


def _ip_literal(text: str) -> str:
    bracketed = text.startswith("[") and text.endswith("]")
    bare = text[1:-1] if bracketed else text
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        raise SourceHeaderError(f"not an IP address: {text[:46]!r}") from None
    if bracketed and address.version == 4:
        raise SourceHeaderError("brackets around an IPv4 address")
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            raise SourceHeaderError("zone id in the address")
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)  # ::ffff:a.b.c.d is a.b.c.d to every ACL
    return str(address)


class TrustedProxies:
    """Which sources may name the caller, and the caller they name.

    ``resolve`` works on a parsed request (it also removes the header); ``counted_host``
    peeks at raw bytes for the checks that run before the parser (bans, the rate limit)
    and agrees with ``resolve`` on every input it accepts.
    """

    def __init__(self, cidrs: Iterable[str] = (), header: str = DEFAULT_SOURCE_HEADER) -> None:
        self.networks = tuple(ipaddress.ip_network(cidr) for cidr in cidrs)
        self.header = header
        # One header field (the name is case-insensitive, RFC 3261 §7.3.1), with any folded lines.
        self._raw_field = re.compile(rb"\n" + re.escape(header.encode("ascii"))
                                     + rb"[ \t]*:([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)", re.IGNORECASE)
        self._trusted: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, host: str) -> bool:
        if not self.networks:
            return False
        known = self._trusted.get(host)
        if known is None:
            try:
                address = ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                address = None
            known = address is not None and any(address in network for network in self.networks)
            if len(self._trusted) >= MAX_CACHED_HOSTS:
                self._trusted.clear()
            self._trusted[host] = known
        return known

    def resolve(self, request: Request, source: Any) -> tuple[Any, str | None]:
        """(who is calling, why the header was ignored or None); the header is removed either way.

        Only from a trusted source is the header believed. Exactly one is expected: a proxy
        that appends without first removing the caller's copy would otherwise let the caller
        choose which one counts.
        """
        values = request.headers.get_all(self.header)
        if not values:
            return source, None
        request.headers.remove(self.header)
        if not self.trusts(getattr(source, "host", "")):
            return source, "from an untrusted source"
        if len(values) != 1 or "," in values[0]:
            return source, f"{len(values)} values" if len(values) != 1 else "a list of values"
        try:
            return parse_source_value(values[0], source), None
        except SourceHeaderError as exc:
            return source, str(exc)

    def counted_host(self, data: bytes, host: str) -> str:
        """The host a raw request counts under: the named caller's when it came through a
        trusted proxy with exactly one well-formed header, else the transport source's."""
        if not self.trusts(host):
            return host
        fields = self._raw_field.findall(_header_section(data))
        if len(fields) != 1 or b"," in fields[0]:
            return host
        try:
            return parse_source_value(_FOLD.sub(b" ", fields[0]).decode("ascii")).host
        except (UnicodeDecodeError, SourceHeaderError):
            return host


def _header_section(data: bytes) -> bytes:
    """The start line and headers, without the body (a caller writes the body, not the proxy)."""
    data = data.lstrip(b"\r\n")
    end = _HEAD_END.search(data)
    return data if end is None else data[:end.start()]
