"""The console's sign-in: stateless signed session cookies (sans-IO: the time is passed in).

A session is ``v1.<expires>.<nonce>.<mac>``: a Unix expiry, 16 random bytes, and an HMAC-SHA256 over
the first three fields. The key is derived from the API token (HMAC(token, label): a key used for
nothing else), so:

- every cluster worker sharing the token accepts every worker's cookies, across restarts too;
- rotating the token ends every session at once;
- nothing is stored server-side. Signing out clears the browser's cookie; a copied cookie stays valid
  until it expires (``api.session_hours``) or the token changes.

A value is refused when it is malformed, too long, tampered with, signed with another token, expired,
or expires further ahead than a session may last (not one of ours under the current lifetime).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

COOKIE_NAME = "callbridge_session"
VERSION = "v1"
KEY_LABEL = b"callbridge console session v1"  # domain separation: this key signs sessions and nothing else
NONCE_BYTES = 16
MAC_BYTES = 32  # SHA-256
DEFAULT_LIFETIME_S = 12 * 3600
# Clocks of workers sharing a token may differ a little; a cookie further ahead than this was not ours.
CLOCK_SKEW_S = 300
# Our values are ~110 characters; anything much longer is not worth decoding.
MAX_VALUE_CHARS = 200
# The Cookie header: more than this is treated as carrying no session at all (never parsed whole).
MAX_COOKIE_HEADER_CHARS = 8192
MAX_COOKIE_PAIRS = 64
MAX_SESSION_VALUES = 4  # our name repeated (cookies set for a parent domain): each is tried
_B64URL = r"[A-Za-z0-9_-]+"
_VALUE = re.compile(rf"{VERSION}\.([0-9]{{1,12}})\.({_B64URL})\.({_B64URL})")


def session_key(token: str) -> bytes:
    return hmac.new(token.encode("utf-8"), KEY_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True)
class Session:
    value: str
    expires_at: int  # Unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _mac(key: bytes, signed: str) -> bytes:
    return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()


def issue(key: bytes, now: float, lifetime_s: int = DEFAULT_LIFETIME_S) -> Session:
    expires = int(now) + lifetime_s
    signed = f"{VERSION}.{expires}.{_b64(secrets.token_bytes(NONCE_BYTES))}"
    return Session(f"{signed}.{_b64(_mac(key, signed))}", expires)


def verify(key: bytes, value: str, now: float, lifetime_s: int = DEFAULT_LIFETIME_S) -> int | None:
    """The session's expiry when ``value`` is a live session signed with ``key``; None otherwise."""
    if len(value) > MAX_VALUE_CHARS:
        return None
    match = _VALUE.fullmatch(value)
    if match is None:
        return None
    expires_text, nonce_text, mac_text = match.groups()
    nonce, mac = _unb64(nonce_text), _unb64(mac_text)
    if nonce is None or mac is None or len(nonce) != NONCE_BYTES or len(mac) != MAC_BYTES:
        return None
    signed = value[:match.start(3) - 1]
    if not hmac.compare_digest(mac, _mac(key, signed)):  # constant time: timing must not leak the MAC
        return None
    expires = int(expires_text)
    if expires <= now or expires > now + lifetime_s + CLOCK_SKEW_S:
        return None
    return expires


def cookie_values(headers: list[tuple[bytes, bytes]], name: str = COOKIE_NAME) -> list[str]:
    """The values of cookie ``name`` in the request's Cookie headers (RFC 6265 §5.4), at most a few.

    A header too long, or with too many pairs, counts as carrying no session: it is never split whole.
    """
    parts: list[bytes] = []
    size = 0
    for header, value in headers:
        if header.lower() == b"cookie":
            size += len(value)
            if size > MAX_COOKIE_HEADER_CHARS:
                return []
            parts.append(value)
    if not parts:
        return []
    pairs = b"; ".join(parts).decode("latin-1").split(";")
    if len(pairs) > MAX_COOKIE_PAIRS:
        return []
    found = []
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if sep and key.strip() == name:
            found.append(text.strip().strip('"'))
            if len(found) > MAX_SESSION_VALUES:
                return []
    return found


def set_cookie_header(session: Session, lifetime_s: int, *, secure: bool) -> str:
    """``Set-Cookie`` (RFC 6265 §4.1): script cannot read it, no other site's request carries it."""
    return (f"{COOKIE_NAME}={session.value}; Max-Age={lifetime_s}; Path=/; HttpOnly; SameSite=Strict"
            + ("; Secure" if secure else ""))


def clear_cookie_header(*, secure: bool) -> str:
    return f"{COOKIE_NAME}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")


__all__ = ["COOKIE_NAME", "Session", "clear_cookie_header", "cookie_values", "issue", "session_key",
           "set_cookie_header", "verify"]
