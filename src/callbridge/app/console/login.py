"""Signing in to the console: ``/login`` (the page) and ``/api/session`` (the cookie).

- ``POST /api/session`` with ``{"token": "<API token>"}``: 204 and ``Set-Cookie: callbridge_session=...``
  (HttpOnly, SameSite=Strict, Path=/, Max-Age; Secure when the page is https). A wrong token: 401.
  Failed attempts are counted per client address (an IPv6 /64 as one): after ``MAX_FAILURES`` within
  ``FAILURE_WINDOW_S`` that address gets 429 with Retry-After, whatever token it sends, until the
  window has passed; other addresses are not affected.
- ``GET /api/session``: 200 ``{"authenticated": true, "via": "session"|"bearer", "expires_at": ...}``, or 401.
- ``DELETE /api/session``: 204, and the cookie is cleared.

The guard (app/httpguard.py) lets ``/api/session`` through without credentials, after its Host,
Origin and JSON-body checks, and leaves what the request did carry under ``AUTH_SCOPE_KEY``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ..auth import token_matches
from ..httpconn import client_key
from ..httpguard import AUTH_SCOPE_KEY, SESSION_PATH, Credentials, RefusalLog
from ..jsonbody import json_body
from .routes import PAGE_HEADERS
from .session import clear_cookie_header, issue, session_key, set_cookie_header

LOGIN_PAGE = Path(__file__).parent / "static" / "login.html"
MAX_FAILURES = 10  # wrong tokens from one address per window; a generated token has 256 bits
FAILURE_WINDOW_S = 60.0
MAX_TRACKED_CLIENTS = 4096  # the oldest are forgotten first: memory stays bounded
MAX_TOKEN_CHARS = 4096  # longer is no token of ours (api.token is a few dozen characters)
NO_STORE = {"Cache-Control": "no-store"}
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="callbridge"'}  # RFC 9110 §15.5.2: a 401 names a scheme


class LoginThrottle:
    """Failed sign-ins per client key, in a fixed window from the first failure (sans-IO: ``now`` passed in)."""

    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = FAILURE_WINDOW_S,
                 max_clients: int = MAX_TRACKED_CLIENTS) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()  # client -> (window start, count)

    def retry_after(self, client: str, now: float) -> int | None:
        """Seconds until ``client`` may try again, or None when it may now."""
        entry = self._failures.get(client)
        if entry is None:
            return None
        start, count = entry
        if now - start >= self.window_s:
            del self._failures[client]
            return None
        if count < self.max_failures:
            return None
        return max(1, int(start + self.window_s - now + 0.999))

    def failed(self, client: str, now: float) -> None:
        start, count = self._failures.get(client, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        self._failures[client] = (start, count + 1)
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def __len__(self) -> int:
        return len(self._failures)


def _secure(request: Request) -> bool:
    """Mark the cookie Secure when the page is https: here, or behind a TLS proxy (the Origin says so)."""
    return request.url.scheme == "https" or (request.headers.get("origin") or "").lower().startswith("https://")


def session_routes(api_token: str, session_hours: float, *, clock: Callable[[], float] = time.time,
                   throttle: LoginThrottle | None = None, refusals: RefusalLog | None = None) -> list[BaseRoute]:
    key = session_key(api_token)
    lifetime_s = max(1, round(session_hours * 3600))
    throttle = throttle or LoginThrottle()
    refusals = refusals or RefusalLog()

    async def login_page(request: Request) -> Response:
        if not LOGIN_PAGE.is_file():
            return JSONResponse({"error": "not found"}, status_code=404)
        return FileResponse(LOGIN_PAGE, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    async def sign_in(request: Request) -> Response:
        client = client_key(request.scope.get("client"))
        now = clock()
        wait = throttle.retry_after(client, now)
        if wait is not None:
            refusals.note("login-429", client, "console sign-in refused: too many wrong tokens", retry_after=wait)
            return JSONResponse({"error": f"too many failed sign-ins from this address; try again in {wait} s"},
                                status_code=429, headers={"Retry-After": str(wait), **NO_STORE})
        body = await json_body(request)
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            return JSONResponse({"error": 'send {"token": "<API token>"} as JSON', "field": "token"},
                                status_code=422, headers=NO_STORE)
        if len(token) > MAX_TOKEN_CHARS or not token_matches(token, api_token):
            throttle.failed(client, now)
            refusals.note("login-401", client, "console sign-in with a wrong API token")
            return JSONResponse({"error": "wrong API token", "field": "token"}, status_code=401,
                                headers={**CHALLENGE, **NO_STORE})
        throttle.succeeded(client)
        session = issue(key, now, lifetime_s)
        return Response(status_code=204, headers={
            "Set-Cookie": set_cookie_header(session, lifetime_s, secure=_secure(request)), **NO_STORE})

    async def status(request: Request) -> JSONResponse:
        credentials: Credentials | None = request.scope.get(AUTH_SCOPE_KEY)
        if credentials is None:
            return JSONResponse({"authenticated": False, "error": "not signed in"}, status_code=401,
                                headers={**CHALLENGE, **NO_STORE})
        return JSONResponse({"authenticated": True, "via": credentials.via, "expires_at": credentials.expires_at},
                            headers=NO_STORE)

    async def sign_out(request: Request) -> Response:
        # Stateless sessions: the browser forgets its cookie (a copy stays valid until it expires).
        return Response(status_code=204, headers={"Set-Cookie": clear_cookie_header(secure=_secure(request)),
                                                  **NO_STORE})

    return [Route("/login", login_page, methods=["GET"]),  # HEAD too: Starlette adds it to GET routes
            Route(SESSION_PATH, sign_in, methods=["POST"]),
            Route(SESSION_PATH, status, methods=["GET"]),
            Route(SESSION_PATH, sign_out, methods=["DELETE"])]


__all__ = ["LoginThrottle", "session_routes", "MAX_FAILURES", "FAILURE_WINDOW_S"]
