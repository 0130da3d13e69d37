"""The checks every HTTP request passes before a route sees it (plain ASGI middleware).

In this order, each refusal with ``Connection: close`` so an unread body is never read:

1. ``GET /healthz`` goes straight through: load balancers and probes carry no secret.
2. ``Host`` must be ours (DNS rebinding): 421 Misdirected Request (RFC 9110 §15.5.20),
   "this server does not answer for that name".
3. ``Origin``, when present, must be ours or allowed (CSRF): 403, even with a valid token.
4. Credentials: ``Authorization: Bearer <token>`` (RFC 6750) or the console's session cookie
   (:mod:`.console.session`); neither: 401. ``/api/session`` (sign-in) passes without them, and its
   handler decides (:mod:`.console.login`). A cookie is sent by the browser on its own, so a
   cookie-authenticated request other than GET/HEAD must carry an ``Origin`` (ours, as above): 403
   otherwise (CSRF; SameSite=Strict is the first defence, this the second).
5. A body must be ``application/json`` (415): the content types a page may send
   cross-site without a CORS preflight (text/plain, forms) are refused.
6. A body larger than ``api.max_body_bytes``: 413, from Content-Length before reading
   anything, or while reading a chunked body; a body not finished within
   ``api.body_timeout_s``: 408.
7. The JSON is decoded here (see :mod:`.jsonbody`): nesting deeper than 64, or more
   than 20,000 values, gets 400; the handlers take the result from the scope with
   ``json_body(request)``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from .auth import bearer_token, send_unauthorised, token_matches
from .console.session import DEFAULT_LIFETIME_S, cookie_values, session_key, verify
from .jsonbody import JSON_SCOPE_KEY, JsonTooComplex, NotJson, decode_json
from .origins import HostPolicy

log = logging.getLogger("callbridge.http")

OPEN_PATHS = frozenset({"/healthz"})
# The console's pages and assets hold no secret (app/console/routes.py): no token, but our Host only;
# the API calls they make are checked like any other.
PAGE_PATHS = frozenset({"/", "/phone", "/login"})
PAGE_PREFIXES = ("/static/",)
OPEN_METHODS = frozenset({"GET", "HEAD"})
# Sign-in, sign-out and "am I signed in?": reachable without credentials (app/console/login.py).
SESSION_PATH = "/api/session"
# Where the guard leaves a request's Credentials (or None, on SESSION_PATH only) for the handlers.
AUTH_SCOPE_KEY = "callbridge.auth"
JSON_MEDIA_TYPE = "application/json"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 30.0
REFUSAL_LOG_INTERVAL_S = 10.0
MAX_LOGGED_SOURCES = 1024

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


class RefusalLog:
    """One log line per (reason, client) per interval, with how many were left unsaid:
    an attack cannot flood the log."""

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL_S, max_keys: int = MAX_LOGGED_SOURCES) -> None:
        self._interval = interval
        self._max_keys = max_keys
        self._seen: OrderedDict[tuple[str, str], list[float]] = OrderedDict()

    def note(self, reason: str, client: str, message: str, **extra: Any) -> None:
        now, key = time.monotonic(), (reason, client)
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self._interval:
            entry[1] += 1
            self._seen.move_to_end(key)
            return
        suppressed = int(entry[1]) if entry is not None else 0
        self._seen[key] = [now, 0]
        self._seen.move_to_end(key)
        while len(self._seen) > self._max_keys:
            self._seen.popitem(last=False)
        log.warning(message, extra={"reason": reason, "client": client, "suppressed": suppressed, **extra})


@dataclass(frozen=True)
class GuardPolicy:
    token: str
    hosts: HostPolicy
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    session_lifetime_s: int = DEFAULT_LIFETIME_S


@dataclass(frozen=True)
class Credentials:
    via: str  # "bearer" or "session"
    expires_at: int | None = None  # a session's end, Unix seconds


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ApiGuard:
    def __init__(self, app: ASGIApp, policy: GuardPolicy, refusals: RefusalLog | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.policy = policy
        self.refusals = refusals or RefusalLog()
        self.clock = clock  # wall time: a session's expiry is shared by workers and outlives restarts
        self._session_key = session_key(policy.token)

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":  # uvicorn runs with ws="none"; refuse if one ever arrives
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in OPEN_PATHS and scope["method"] in OPEN_METHODS:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        client = _client(scope)
        try:
            self._check_names(scope, headers)
        except _Refused as refused:
            self.refusals.note(f"http-{refused.status}", client, f"HTTP request refused: {refused.message}",
                               host=headers.get("host"), origin=headers.get("origin"), path=scope["path"])
            await _send_error(send, refused.status, refused.message)
            return
        if (path in PAGE_PATHS or path.startswith(PAGE_PREFIXES)) and scope["method"] in OPEN_METHODS:
            await self.app(scope, receive, send)
            return
        offered = bearer_token(scope.get("headers") or [])
        credentials = self._credentials(scope, offered)
        if path != SESSION_PATH:  # sign-in needs no credentials: its handler checks the token it is sent
            if credentials is None:
                self.refusals.note("http-401", client, "HTTP request without a valid API token or session",
                                   path=path)
                await send_unauthorised(send, offered)
                return
            if credentials.via == "session" and scope["method"] not in OPEN_METHODS and "origin" not in headers:
                self.refusals.note("http-403-csrf", client, "cookie-authenticated request without Origin refused",
                                   path=path, method=scope["method"])
                await _send_error(send, 403, "a request signed in by cookie must carry an Origin header "
                                             "(or use Authorization: Bearer)")
                return
        scope[AUTH_SCOPE_KEY] = credentials
        try:
            receive = await self._take_body(scope, headers, receive)
        except _Refused as refused:
            self.refusals.note(f"http-{refused.status}", client, f"HTTP request refused: {refused.message}",
                               path=scope["path"])
            await _send_error(send, refused.status, refused.message)
            return
        await self.app(scope, receive, send)

    def _credentials(self, scope: Scope, offered: str | None) -> Credentials | None:
        if token_matches(offered, self.policy.token):
            return Credentials("bearer")
        now = self.clock()
        for value in cookie_values(scope.get("headers") or []):
            expires = verify(self._session_key, value, now, self.policy.session_lifetime_s)
            if expires is not None:
                return Credentials("session", expires)
        return None

    def _check_names(self, scope: Scope, headers: dict[str, str]) -> None:
        local = scope.get("server")
        if not self.policy.hosts.host_allowed(headers.get("host"), local):
            raise _Refused(421, "this server does not answer for that Host; add it to api.allowed_hosts")
        origin = headers.get("origin")
        if origin is not None and not self.policy.hosts.origin_allowed(origin, local):
            raise _Refused(403, "cross-origin requests are refused; add the origin to api.allowed_origins")

    async def _take_body(self, scope: Scope, headers: dict[str, str], receive: Callable) -> Callable:
        """Read, check and decode the body; return a receive that replays it to the app."""
        length_text = headers.get("content-length")
        chunked = "transfer-encoding" in headers
        # h11 has already refused a Content-Length that is not a number.
        length = int(length_text) if length_text is not None and length_text.isdigit() else 0
        if length == 0 and not chunked:
            return receive
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != JSON_MEDIA_TYPE:
            raise _Refused(415, "request bodies must be Content-Type: application/json")
        limit = self.policy.max_body_bytes
        if length > limit:
            raise _Refused(413, f"request body larger than {limit} bytes")
        body = await self._read(receive, limit)
        try:
            scope[JSON_SCOPE_KEY] = await decode_json(body)
        except JsonTooComplex as exc:
            raise _Refused(400, str(exc)) from None
        except NotJson:
            scope[JSON_SCOPE_KEY] = None  # the handlers answer 422 naming the body, as for any non-object
        return replay_body(body, receive)

    async def _read(self, receive: Callable, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.policy.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _Refused(400, "client went away mid-body")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:  # counted as it arrives: a chunked body is never held whole
                        raise _Refused(413, f"request body larger than {limit} bytes")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise _Refused(408, f"request body not received within {self.policy.body_timeout_s:g} s") from None


def replay_body(body: bytes, receive: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """An ASGI receive that hands over a body already read, then the real stream (for http.disconnect)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _headers(scope: Scope) -> dict[str, str]:
    # The first of each name; uvicorn gives lower-case names.
    found: dict[str, str] = {}
    for name, value in scope.get("headers") or []:
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "?"


async def _send_error(send: Callable, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


__all__ = ["ApiGuard", "AUTH_SCOPE_KEY", "Credentials", "GuardPolicy", "RefusalLog", "OPEN_PATHS", "SESSION_PATH"]
