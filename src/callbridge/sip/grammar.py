"""Token-level rules from RFC 3261 §25.1, kept in one place like h11's ``_abnf``.

Everything here works on ``str`` that was decoded from the wire as UTF-8
(RFC 3261 §7.3.1 header values are UTF-8 text). Every failure is a
:class:`SipParseError`; nothing here may leak ``ValueError`` or ``IndexError``.
"""

from __future__ import annotations

import ipaddress
import re

from .errors import SipParseError

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN = re.compile(rf"[{TOKEN_CHARS}]+")
# hostname / IPv4address / IPv6reference (RFC 3261 §25.1).
HOSTNAME = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?")
IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", re.ASCII)
IPV6_REFERENCE = re.compile(r"\[[0-9A-Fa-f:.]+\]")
# SWS / LWS around separators (RFC 3261 §25.1): folding is undone before this runs.
WS = " \t"
LWS_RUN = re.compile(r"[ \t]+")

# RFC 3261 §25.1 SIP-URI userinfo:
#   user     = 1*( unreserved / escaped / user-unreserved )
#   password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
#   unreserved = alphanum / mark ; mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
#   user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
# Leniency: "#" is accepted unescaped in the user part, because telephony
# equipment routinely sends dial strings such as ``sip:*21#@pbx``.
_ESCAPED = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
USER = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/#]|{_ESCAPED})+")
PASSWORD = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})*")

# Scalars: decimal digits only, ASCII only. ``str.isdigit`` is not enough: it
# accepts "²" and Arabic-Indic digits, which ``int()`` then rejects or misreads.
DIGITS = re.compile(r"[0-9]+")
# Longest digit string we convert; beyond this the value is out of every SIP
# range anyway, and CPython refuses int() of more than 4300 digits.
MAX_DIGITS = 20


def is_token(text: str) -> bool:
    return TOKEN.fullmatch(text) is not None


def parse_uint(text: str, what: str, maximum: int) -> int:
    """A non-negative decimal integer in ``0..maximum`` (leading zeros allowed)."""
    if DIGITS.fullmatch(text) is None:
        raise SipParseError(f"bad {what}: {text[:40]!r}")
    stripped = text.lstrip("0") or "0"
    if len(stripped) > MAX_DIGITS or int(stripped) > maximum:
        raise SipParseError(f"{what} out of range: {text[:40]!r}")
    return int(stripped)


def is_valid_host(host: str) -> bool:
    if host.startswith("["):
        if IPV6_REFERENCE.fullmatch(host) is None:
            return False
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
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
    if '"' not in text and "<" not in text:
        return text.split(separator)  # fast path: nothing can hide a separator
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
        raise SipParseError(f"not a quoted string: {text[:40]!r}")
    inner = text[1:-1]
    if "\\" not in inner and '"' not in inner:
        return inner
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


# Characters never allowed in an unquoted parameter value (gen-value is a
# token, a host or a quoted-string; RFC 3261 §25.1 generic-param).
_BAD_VALUE = re.compile(r'[\s<>"\x00-\x1f\x7f,;]')


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` into an ordered dict with lower-case names.

    Parameter names are case-insensitive (RFC 3261 §7.3.1); values are kept as
    they came, because tags and branches compare case-sensitively. A name may
    appear only once (RFC 3261 §19.1.1 / §20: "MUST NOT appear more than once").
    """
    params: dict[str, str | None] = {}
    if not text.strip(WS):
        return params
    pieces = split_quoted(text, ";")
    if pieces[0].strip(WS):
        raise SipParseError(f"unexpected text before parameters: {pieces[0][:40]!r}")
    for piece in pieces[1:]:
        name, sep, value = piece.partition("=")
        name = name.strip(WS)
        if not name or not is_token(name):
            raise SipParseError(f"bad parameter name: {piece[:40]!r}")
        key = name.lower()
        if key in params:
            raise SipParseError(f"duplicate parameter {name!r}")
        if sep:
            value = value.strip(WS)
            if not value:
                raise SipParseError(f"empty value for parameter {name!r}")
            if value[0] == '"':
                unquote(value)  # validates; the quoted form is kept for round-trips
            elif _BAD_VALUE.search(value):
                raise SipParseError(f"bad value for parameter {name!r}")
            params[key] = value
        else:
            params[key] = None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())
