"""Token-level rules from RFC 3261 §25.1, kept in one place like h11's ``_abnf``.

Everything here works on ``str`` that was decoded from the wire as UTF-8
(RFC 3261 §7.3.1 header values are UTF-8 text).
"""

from __future__ import annotations

import re

from .errors import SipParseError

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN = re.compile(rf"[{TOKEN_CHARS}]+")
# Method = token (RFC 3261 §25.1 extension-method).
METHOD = TOKEN
# hostname / IPv4address / IPv6reference (RFC 3261 §25.1).
HOSTNAME = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?")
IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
IPV6_REFERENCE = re.compile(r"\[[0-9A-Fa-f:.]+\]")
# SWS / LWS around separators (RFC 3261 §25.1): folding is undone before this runs.
WS = " \t"


def is_token(text: str) -> bool:
    return TOKEN.fullmatch(text) is not None


def is_valid_host(host: str) -> bool:
    if IPV6_REFERENCE.fullmatch(host):
        return True
    if IPV4.fullmatch(host):
        return all(int(part) <= 255 for part in host.split("."))
    return HOSTNAME.fullmatch(host) is not None


def split_quoted(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside quoted strings and angle brackets.

    Comma-separated header lists (RFC 3261 §7.3.1) and ``;`` parameter lists
    both need this, since a quoted display name or a bracketed URI may hold
    the separator itself.
    """
    parts: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if in_quotes:
            if char == "\\":
                index += 1  # quoted-pair: skip the escaped character
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "<":
            in_angle = True
        elif char == ">":
            in_angle = False
        elif char == separator and not in_angle:
            parts.append(text[start:index])
            start = index + 1
        index += 1
    if in_quotes:
        raise SipParseError("unterminated quoted string")
    parts.append(text[start:])
    return parts


def unquote(text: str) -> str:
    """Remove the quotes of a quoted-string and undo its quoted-pairs (RFC 3261 §25.1)."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise SipParseError(f"not a quoted string: {text!r}")
    inner = text[1:-1]
    out: list[str] = []
    index = 0
    while index < len(inner):
        char = inner[index]
        if char == "\\":
            index += 1
            if index >= len(inner):
                raise SipParseError("dangling escape in quoted string")
            out.append(inner[index])
        elif char == '"':
            raise SipParseError("unescaped quote inside quoted string")
        else:
            out.append(char)
        index += 1
    return "".join(out)


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` into an ordered dict with lower-case names.

    Parameter names are case-insensitive (RFC 3261 §7.3.1); values are kept as
    they came, because tags and branches compare case-sensitively.
    """
    params: dict[str, str | None] = {}
    if not text.strip(WS):
        return params
    pieces = split_quoted(text, ";")
    if pieces[0].strip(WS):
        raise SipParseError(f"unexpected text before parameters: {pieces[0]!r}")
    for piece in pieces[1:]:
        name, sep, value = piece.partition("=")
        name = name.strip(WS)
        if not name or not is_token(name):
            raise SipParseError(f"bad parameter name: {piece!r}")
        if sep:
            value = value.strip(WS)
            if not value:
                raise SipParseError(f"empty value for parameter {name!r}")
            if value[0] == '"':
                unquote(value)  # validates; the quoted form is kept for round-trips
            elif any(c in value for c in ' \t<>"'):
                raise SipParseError(f"bad value for parameter {name!r}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())
