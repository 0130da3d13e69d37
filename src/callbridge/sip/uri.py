"""SIP and SIPS URIs (RFC 3261 §19.1, §25.1), name-addr / addr-spec, and Via values."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from urllib.parse import unquote as percent_decode

from .errors import SipParseError
from .grammar import (
    WS,
    format_params,
    is_token,
    is_valid_host,
    parse_params,
    quote,
    split_quoted,
    unquote,
)

SIP_SCHEMES = ("sip", "sips")
DEFAULT_PORTS = {"sip": 5060, "sips": 5061}
MAX_PORT = 65535


@dataclass(slots=True)
class SipUri:
    """``sip:user:password@host:port;params?headers``.

    ``user`` keeps its %-escapes as received so the URI serialises back to the
    same text; ``user_decoded`` gives the unescaped form for routing.
    """

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    scheme: str = "sip"
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def user_decoded(self) -> str | None:
        return None if self.user is None else percent_decode(self.user)

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    def host_port(self) -> tuple[str, int]:
        """Host (without IPv6 brackets) and port, defaulting per scheme (RFC 3263 §4.2)."""
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        return host, self.port or DEFAULT_PORTS[self.scheme]

    def with_params(self, **params: str | None) -> "SipUri":
        merged = dict(self.params)
        merged.update(params)
        return replace(self, params=merged)

    def without_headers(self) -> "SipUri":
        return replace(self, headers={})

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)


@dataclass(slots=True, frozen=True)
class AbsoluteUri:
    """Any other scheme (tel:, urn:, http:...): kept opaque (RFC 3261 §19.1.6)."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | AbsoluteUri


def _is_scheme(text: str) -> bool:
    # RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
    return bool(text) and text[0].isalpha() and all(c.isalnum() or c in "+-." for c in text) and text.isascii()


def parse_uri(text: str) -> Uri:
    """Parse a Request-URI or the URI inside a name-addr."""
    if not text or any(c in text for c in " \t\r\n<>"):
        raise SipParseError(f"bad URI: {text!r}")
    scheme, colon, rest = text.partition(":")
    if not colon or not _is_scheme(scheme):
        raise SipParseError(f"URI without a scheme: {text!r}")
    scheme = scheme.lower()
    if scheme not in SIP_SCHEMES:
        if not rest:
            raise SipParseError(f"empty {scheme} URI")
        return AbsoluteUri(scheme, rest)
    return _parse_sip_uri(scheme, rest)


def _parse_sip_uri(scheme: str, rest: str) -> SipUri:
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        if not user:
            raise SipParseError("empty user part in SIP URI")
        password = pw if colon else None
    # hostport ends at the first ';' (parameters) or '?' (headers).
    end = len(rest)
    for sep in ";?":
        idx = rest.find(sep)
        if 0 <= idx < end:
            end = idx
    hostport, tail = rest[:end], rest[end:]
    host, port = _split_hostport(hostport)
    params_text, _, headers_text = tail.partition("?")
    params = parse_params(params_text)
    headers: dict[str, str] = {}
    if headers_text:
        for item in headers_text.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                raise SipParseError(f"bad URI header: {item!r}")
            headers[name] = value
    return SipUri(host=host, user=user, password=password, port=port, scheme=scheme, params=params, headers=headers)


def _split_hostport(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise SipParseError(f"unterminated IPv6 reference: {hostport!r}")
        host, after = hostport[: close + 1], hostport[close + 1 :]
        port_text = after[1:] if after.startswith(":") else None
        if after and port_text is None:
            raise SipParseError(f"junk after IPv6 host: {hostport!r}")
    else:
        host, colon, port_text = hostport.partition(":")
        if not colon:
            port_text = None
    if not is_valid_host(host):
        raise SipParseError(f"bad host: {host!r}")
    port = None
    if port_text is not None:
        if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > MAX_PORT:
            raise SipParseError(f"bad port: {port_text!r}")
        port = int(port_text)
    return host.lower(), port


@dataclass(slots=True)
class NameAddr:
    """A From/To/Contact/Route value: optional display name, URI, header params.

    ``params`` are the *header* parameters (tag, expires, q...), which in
    addr-spec form follow the URI directly (RFC 3261 §20.10).
    """

    uri: Uri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> "NameAddr":
        params = dict(self.params)
        params["tag"] = tag
        return replace(self, params=params)

    def __str__(self) -> str:
        display = f"{quote(self.display_name)} " if self.display_name else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(text: str) -> NameAddr:
    text = text.strip(WS)
    if not text:
        raise SipParseError("empty address")
    display: str | None = None
    if text[0] == '"':
        end = _closing_quote(text)
        display = unquote(text[: end + 1])
        text = text[end + 1 :].lstrip(WS)
        if not text.startswith("<"):
            raise SipParseError("quoted display name must be followed by <URI>")
    lt = text.find("<")
    if lt >= 0:
        if display is None and lt > 0:
            raw = text[:lt].strip(WS)
            # RFC 3261 §25.1: an unquoted display-name is a series of tokens.
            if raw and not all(is_token(word) for word in raw.split()):
                raise SipParseError(f"bad display name: {raw!r}")
            display = " ".join(raw.split()) or None
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError("unterminated <URI>")
        uri = parse_uri(text[lt + 1 : gt])
        params = parse_params(text[gt + 1 :])
    else:
        uri_text, semi, param_text = text.partition(";")
        if "?" in uri_text or "," in uri_text:
            # RFC 3261 §20.10: such URIs must be in name-addr form.
            raise SipParseError(f"URI needs <> brackets: {text!r}")
        uri = parse_uri(uri_text.strip(WS))
        params = parse_params(semi + param_text)
    return NameAddr(uri=uri, display_name=display, params=params)


def _closing_quote(text: str) -> int:
    index = 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == '"':
            return index
        index += 1
    raise SipParseError("unterminated quoted display name")


def parse_name_addr_list(value: str) -> list[NameAddr]:
    return [parse_name_addr(part) for part in split_quoted(value, ",")]


@dataclass(slots=True)
class Via:
    """One Via hop (RFC 3261 §20.42): ``SIP/2.0/UDP host:port;branch=...``."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"


def parse_via(value: str) -> Via:
    value = value.strip(WS)
    # sent-protocol allows LWS around the slashes (RFC 3261 §25.1 SLASH = SWS "/" SWS).
    parts = value.split("/", 2)
    if len(parts) != 3:
        raise SipParseError(f"bad Via: {value!r}")
    name, version, rest = (p.strip(WS) for p in parts)
    if name.upper() != "SIP" or version != "2.0":
        raise SipParseError(f"bad Via protocol: {value!r}")
    transport, _, rest = rest.partition(" ")
    if not rest:
        transport, _, rest = transport.partition("\t")
    if not is_token(transport):
        raise SipParseError(f"bad Via transport: {value!r}")
    rest = rest.strip(WS)
    semi = rest.find(";")
    sent_by, params_text = (rest, "") if semi < 0 else (rest[:semi], rest[semi:])
    host, port = _split_hostport(sent_by.strip(WS).replace(" ", ""))
    return Via(transport=transport.upper(), host=host, port=port, params=parse_params(params_text))


def parse_via_list(value: str) -> list[Via]:
    return [parse_via(part) for part in split_quoted(value, ",")]
