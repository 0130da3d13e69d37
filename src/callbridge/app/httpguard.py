"""The checks every HTTP request passes before a route sees it (plain ASGI middleware).

In this order, each refusal with ``Connection: close`` so an unread body is never read:

1. ``GET /healthz`` goes straight through: load balancers and probes carry no secret.
2. ``Host`` must be ours (DNS rebinding): 421 Misdirected Request (RFC 9110 §15.5.20),
   "this server does not answer for that name".
3. ``Origin``, when present, must be ours or allowed (CSRF): 403, even with a valid token.
4. ``Authorization: Bearer <token>``: 401 (RFC 6750).
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
from .jsonbody import JSON_SCOPE_KEY, JsonTooComplex, NotJson, decode_json
from .origins import HostPolicy

log = logging.getLogger("callbridge.http")

OPEN_PATHS = frozenset({"/healthz"})
OPEN_METHODS = frozenset({"GET", "HEAD"})
JSON_MEDIA_TYPE = "application/json"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 30.0
REFUSAL_LOG_INTERVAL_S = 10.0
MAX_LOGGED_SOURCES = 1024

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


class RefusalLog:
    """One log line per (reason, client) per interval, with how many were left unsaid: an attack cannot flood the log."""

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


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ApiGuard:
    def __init__(self, app: ASGIApp, policy: GuardPolicy, refusals: RefusalLog | None = None) -> None:
        self.app = app
        self.policy = policy
        self.refusals = refusals or RefusalLog()

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":  # uvicorn runs with ws="none"; refuse if one ever arrives
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        if scope["path"] in OPEN_PATHS and scope["method"] in OPEN_METHODS:
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
        offered = bearer_token(scope.get("headers") or [])
        if not token_matches(offered, self.policy.token):
            self.refusals.note("http-401", client, "HTTP request without a valid API token", path=scope["path"])
            await send_unauthorised(send, offered)
            return
        try:
            receive = await self._take_body(scope, headers, receive)
        except _Refused as refused:
            self.refusals.note(f"http-{refused.status}", client, f"HTTP request refused: {refused.message}",
                               path=scope["path"])
            await _send_error(send, refused.status, refused.message)
            return
        await self.app(scope, receive, send)

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
        return _replay(body, receive)

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


def _replay(body: bytes, receive: Callable) -> Callable:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then the real stream, for http.disconnect

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


__all__ = ["ApiGuard", "GuardPolicy", "RefusalLog", "OPEN_PATHS"]
