"""Bearer-token auth for the HTTP API (RFC 6750), as plain ASGI middleware.

Every path under ``/api`` needs ``Authorization: Bearer <token>``; ``/healthz``
and ``/metrics`` stay open so load balancers and Prometheus need no secret.
"""

from __future__ import annotations

import hmac
import json
import secrets
from typing import Any, Awaitable, Callable

PROTECTED_PREFIX = "/api"
# 32 random bytes: the same strength as the webhook secret.
GENERATED_TOKEN_BYTES = 32

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


def generate_token() -> str:
    return secrets.token_urlsafe(GENERATED_TOKEN_BYTES)


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            # RFC 6750 §2.1: the scheme is case-insensitive.
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def is_protected(path: str) -> bool:
    return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")


class BearerAuth:
    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or self.token is None or not is_protected(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        offered = bearer_token(scope.get("headers") or [])
        # Constant-time comparison: response timing must not leak the token.
        if offered is not None and hmac.compare_digest(offered.encode(), self.token.encode()):
            await self.app(scope, receive, send)
            return
        await _unauthorised(send, "invalid_token" if offered is not None else None)


async def _unauthorised(send: Callable, error: str | None) -> None:
    # RFC 6750 §3: a request without credentials gets the bare challenge; a wrong token names the error.
    challenge = 'Bearer realm="callbridge"' + (f', error="{error}"' if error else "")
    body = json.dumps({"error": "missing or invalid bearer token"}).encode()
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", challenge.encode())]})
    await send({"type": "http.response.body", "body": body})
