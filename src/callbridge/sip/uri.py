"""SIP and SIPS URIs (RFC 3261 §19.1, §25.1), name-addr / addr-spec, and Via values."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from urllib.parse import unquote as percent_decode

from .errors import SipParseError
from .grammar import (
    LWS_RUN,
    PASSWORD,
    USER,
    WS,
    format_params,
    is_token,
    is_valid_host,
    parse_params,
    parse_uint,
    quote,
    split_quoted,
    unquote,
)

_TOKEN = r"A-Za-z0-9\-.!%*_+`'~"  # RFC 3261 §25.1 token characters
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
    return _SCHEME.fullmatch(text) is not None


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# URIs are ASCII (RFC 3986 §2); whitespace, quotes, angle brackets and
# controls never appear unescaped in any scheme we could be handed.
_BAD_URI_CHAR = re.compile(r'[^\x21-\x7e]|[<>"]')


def parse_uri(text: str) -> Uri:
    """Parse a Request-URI or the URI inside a name-addr."""
    if not text or _BAD_URI_CHAR.search(text):
        raise SipParseError(f"bad URI: {text[:60]!r}")
    scheme, colon, rest = text.partition(":")
    if not colon or not _is_scheme(scheme):
        raise SipParseError(f"URI without a scheme: {text[:60]!r}")
    scheme = scheme.lower()
    if scheme not in SIP_SCHEMES:
        # RFC 3261 §19.1.6 / §8.2.2.1: other schemes are opaque here; the
        # application answers 416 when it cannot use them.
        if not rest:
            raise SipParseError(f"empty {scheme} URI")
        return AbsoluteUri(scheme, rest)
    return _parse_sip_uri(scheme, rest)


def _parse_sip_uri(scheme: str, rest: str) -> SipUri:
    user = password = None
    # "@" may only appear as the end of userinfo: params (paramchar) and
    # headers (hvalue) cannot hold it unescaped (RFC 3261 §25.1).
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        if not user:
            raise SipParseError("empty user part in SIP URI")
        if USER.fullmatch(user) is None:
            raise SipParseError(f"bad user part in SIP URI: {user[:40]!r}")
        if colon:
            if PASSWORD.fullmatch(pw) is None:
                raise SipParseError("bad password in SIP URI")
            password = pw
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
        # RFC 3261 §19.1.1: headers = "?" header *( "&" header ); header = hname "=" hvalue
        for item in headers_text.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                raise SipParseError(f"bad URI header: {item[:40]!r}")
            if name in headers:
                raise SipParseError(f"duplicate URI header {name[:40]!r}")
            headers[name] = value
    return SipUri(host=host, user=user, password=password, port=port, scheme=scheme, params=params, headers=headers)


def _split_hostport(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise SipParseError(f"unterminated IPv6 reference: {hostport[:60]!r}")
        host, after = hostport[: close + 1], hostport[close + 1 :]
        port_text = after[1:] if after.startswith(":") else None
        if after and port_text is None:
            raise SipParseError(f"junk after IPv6 host: {hostport[:60]!r}")
    else:
        # An unbracketed IPv6 address ("sip:2001:db8::10") lands here and fails
        # on its "port" - exactly the 400 RFC 5118 §4.2 asks for.
        host, colon, port_text = hostport.partition(":")
        if not colon:
            port_text = None
    if not is_valid_host(host):
        raise SipParseError(f"bad host: {host[:60]!r}")
    port = None
    if port_text is not None:
        port = parse_uint(port_text, "port", MAX_PORT)
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
        # An empty quoted name ("") is kept as one, so that it parses back the same.
        display = f"{quote(self.display_name)} " if self.display_name is not None else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(text: str) -> NameAddr:
    """``[display-name] <URI> *(;param)`` or ``addr-spec *(;param)`` (RFC 3261 §20.10).

    In the addr-spec form every ``;param`` belongs to the header, not the URI,
    and URIs holding ``,``, ``?`` or ``;`` must use the bracketed form.
    """
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
            # RFC 3261 §25.1: an unquoted display-name is a series of tokens
            # separated by LWS. RFC 4475 §3.1.1.6 (lwsdisp): no LWS is needed
            # before "<".
            words = LWS_RUN.split(raw) if raw else []
            if not all(is_token(word) for word in words):
                raise SipParseError(f"bad display name: {raw[:40]!r}")
            display = " ".join(words) or None
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError("unterminated <URI>")
        uri = parse_uri(text[lt + 1 : gt])
        params = parse_params(text[gt + 1 :])
    else:
        uri_text, semi, param_text = text.partition(";")
        uri_text = uri_text.strip(WS)
        if "?" in uri_text or "," in uri_text:
            # RFC 3261 §20.10: such URIs must be in name-addr form (RFC 4475 regbadct).
            raise SipParseError(f"URI needs <> brackets: {text[:60]!r}")
        uri = parse_uri(uri_text)
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
    """One Via hop (RFC 3261 §20.42): ``SIP/2.0/UDP host:port;branch=...``.

    ``protocol`` is the ``protocol-name/protocol-version`` pair. The grammar
    allows any tokens there, so ``SIP/7.0/UDP`` parses (RFC 4475 badvers is
    answered 505 from the start line, not refused here).
    """

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def has_magic_cookie(self) -> bool:
        """RFC 3261 §8.1.1.7: an RFC 3261 branch is ``z9hG4bK`` plus a unique id.

        A bare ``z9hG4bK`` (RFC 4475 §3.2.1 badbranch) carries no identifier,
        so it does not count.
        """
        branch = self.branch
        return branch is not None and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE)

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"


MAGIC_COOKIE = "z9hG4bK"

# via-parm = sent-protocol LWS sent-by *( SEMI via-params )
# sent-protocol = protocol-name SLASH protocol-version SLASH transport, SLASH = SWS "/" SWS
# sent-by = host [ COLON port ], COLON = SWS ":" SWS
_VIA = re.compile(
    rf"[ \t]*([{_TOKEN}]+)[ \t]*/[ \t]*([{_TOKEN}]+)[ \t]*/[ \t]*([{_TOKEN}]+)"
    r"[ \t]+(\[[^\]]*\]|[^ \t;:\[\]]+)(?:[ \t]*:[ \t]*([^ \t;]*))?[ \t]*(;.*)?",
    re.DOTALL,
)


def parse_via(value: str) -> Via:
    match = _VIA.fullmatch(value)
    if match is None:
        raise SipParseError(f"bad Via: {value[:80]!r}")
    name, version, transport, host, port_text, params_text = match.groups()
    if not is_valid_host(host):
        raise SipParseError(f"bad Via host: {host[:60]!r}")
    port = None if port_text is None else parse_uint(port_text, "Via port", MAX_PORT)
    return Via(
        transport=transport.upper(),
        host=host.lower(),
        port=port,
        params=parse_params(params_text or ""),
        protocol=f"{name.upper()}/{version}",
    )


def parse_via_list(value: str) -> list[Via]:
    return [parse_via(part) for part in split_quoted(value, ",")]
