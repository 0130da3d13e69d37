"""One API on every worker: requests about a call that runs elsewhere go to the worker that runs it.

An ASGI wrapper around the API routes, inside the guard (httpguard.py: the token, Host, Origin and
body checks have passed). It decides by path alone, before any route runs:

- ``GET /api/cluster/workers``: every worker in the registry, answered here.
- ``/api/calls/{id}`` and its actions (hangup, transfer, dtmf, hold, unhold, recording) on a call this
  worker does not hold: the owner from Redis gets the same method, path, query, body and
  shared token; its status and body come back. Reads of a call whose owner cannot be reached fall
  back to the shared store here; actions answer 503 (owner lost or unreachable) or 502 (it failed
  mid-answer), naming the worker.
- ``POST /api/dispatch`` and ``POST /api/calls``: placed on the worker with the most room
  (placement.py), here if that is us; 503 with Retry-After when no worker has room.

Every forwarded request carries a peer mark (peerauth.py). A request with a valid mark is handled where
it lands, whatever it asks: forwarding happens at most once, so no loop can form. A client's forged
mark does not verify and is ignored.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from ..dispatch import MAX_RINGING_TIMEOUT_S
from ..httpguard import replay_body
from . import keys
from .peerauth import HEADER as PEER_HEADER
from .peerauth import PeerMark
from .quietlog import QuietLog

log = logging.getLogger("callbridge.cluster")

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]]

WORKERS_PATH = "/api/cluster/workers"
CALL_ROUTE = re.compile(r"^/api/calls/(?P<call_id>[^/]+)(?:/(?P<action>hangup|transfer|dtmf|hold|unhold|recording))?$")
PLACED_ROUTES = frozenset({("POST", "/api/dispatch"), ("POST", "/api/calls")})
READ_METHODS = frozenset({"GET", "HEAD"})
ANSWERED_BY_HEADER = b"x-callbridge-worker"
# What a forwarded request keeps of the client's; Host comes from the owner's URL.
# The client's own credentials stay here (a console cookie is not for peers): the hop carries the shared token.
FORWARDED_REQUEST_HEADERS = frozenset({b"content-type", b"accept", b"range", b"if-none-match"})
# The body is passed on decoded and chunked: no Content-Length or Content-Encoding of the peer's.
FORWARDED_RESPONSE_HEADERS = frozenset({b"content-type", b"retry-after", b"www-authenticate", b"cache-control",
                                        b"content-disposition", b"accept-ranges", b"content-range", b"etag",
                                        b"last-modified", b"location"})
# An action or read answers in milliseconds; a recording streams. A dispatch that waits for the answer
# takes up to its ringing timeout (dispatch.py) plus the API's grace.
FORWARD_TIMEOUT_S = 15.0
DISPATCH_FORWARD_TIMEOUT_S = MAX_RINGING_TIMEOUT_S + 30.0
RETRY_AFTER_S = 2


class ClusterStateUnavailable(Exception):
    """Redis could not be asked (down, slow): who owns a call, who has room, is unknown right now."""


@dataclass(frozen=True, slots=True)
class Peer:
    id: str
    api_url: str
    alive: bool


class Directory(Protocol):
    """What the gateway asks of the cluster (the ClusterNode)."""

    @property
    def worker_id(self) -> str: ...

    def is_local(self, call_id: str) -> bool: ...

    async def owner(self, call_id: str) -> Peer | None: ...

    async def recorded_owner(self, call_id: str) -> Peer | None: ...

    async def placements(self) -> list[Peer]: ...

    async def workers(self) -> list[dict[str, Any]]: ...


class ClusterGateway:
    def __init__(self, app: ASGIApp, directory: Directory, mark: PeerMark, client: httpx.AsyncClient,
                 api_token: str) -> None:
        self.app = app
        # The guard has checked the client (bearer token or console session); the owner checks us.
        self._authorization = f"Bearer {api_token}".encode()
        self.directory = directory
        self.mark = mark
        self.client = client
        self._quiet = QuietLog(log)
        self.forwarded = 0
        self.forged_marks = 0

    async def __call__(self, scope: Scope, receive: Callable[..., Awaitable[Any]],
                       send: Callable[..., Awaitable[Any]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if path == WORKERS_PATH:
            await self._workers(method, send)
            return
        if self._from_peer(scope, method, path):
            await self.app(scope, receive, send)  # forwarded once already: handled here, whatever it is
            return
        if (method, path) in PLACED_ROUTES:
            await self._place(scope, receive, send)
            return
        match = CALL_ROUTE.match(path)
        call_id = match["call_id"] if match else None
        if call_id is None or not keys.CALL_ID.match(call_id) or self.directory.is_local(call_id):
            await self.app(scope, receive, send)
            return
        await self._to_owner(scope, receive, send, call_id, match["action"] if match else None)

    # -- who asks ------------------------------------------------------------------------------------

    def _from_peer(self, scope: Scope, method: str, path: str) -> bool:
        value = _header(scope, PEER_HEADER.encode())
        if value is None:
            return False
        if self.mark.verify(value, method, path, time.time()) is not None:
            return True
        self.forged_marks += 1
        client = scope.get("client")
        self._quiet.warning(("forged-mark", client[0] if client else "?"),
                            "cluster: a request's %s header did not verify; routed as any client's", PEER_HEADER,
                            path=path)
        return False

    # -- routes ----------------------------------------------------------------------------------------

    async def _workers(self, method: str, send: Callable[..., Awaitable[Any]]) -> None:
        if method not in READ_METHODS:
            await _json(send, 405, {"error": "GET only"}, headers=[(b"allow", b"GET")])
            return
        try:
            workers = await self.directory.workers()
        except ClusterStateUnavailable as exc:
            await _json(send, 503, {"error": f"cannot read the cluster's registry: {exc}"}, retry_after=True)
            return
        await _json(send, 200, {"worker": self.directory.worker_id, "workers": workers})

    async def _to_owner(self, scope: Scope, receive: Callable[..., Awaitable[Any]],
                        send: Callable[..., Awaitable[Any]], call_id: str, action: str | None) -> None:
        read = scope["method"] in READ_METHODS
        try:
            owner = await self.directory.owner(call_id)
            if owner is None and action == "recording":
                owner = await self.directory.recorded_owner(call_id)  # a finished call's file is on its worker
        except ClusterStateUnavailable as exc:
            if read:
                await self.app(scope, receive, send)  # the shared store answers reads
                return
            await _json(send, 503, {"error": f"cannot find the call's worker: the cluster's Redis is "
                                             f"unavailable ({exc})"}, retry_after=True)
            return
        if owner is None or owner.id == self.directory.worker_id:
            await self.app(scope, receive, send)  # runs nowhere now: the store says how it ended
            return
        if not owner.alive:
            if read:
                await self.app(scope, receive, send)
                return
            await _json(send, 503, {"error": f"the call's worker {owner.id} is lost; its calls are ending as "
                                             "worker_lost", "worker": owner.id}, retry_after=True)
            return
        body = await _body(receive)
        if not await self._forward(scope, send, owner, body, FORWARD_TIMEOUT_S, retry_elsewhere=False):
            if read:
                await self.app(scope, replay_body(body, receive), send)
                return
            await _json(send, 503, {"error": f"the call's worker {owner.id} at {owner.api_url} is unreachable",
                                    "worker": owner.id}, retry_after=True)

    async def _place(self, scope: Scope, receive: Callable[..., Awaitable[Any]],
                     send: Callable[..., Awaitable[Any]]) -> None:
        try:
            choices = await self.directory.placements()
        except ClusterStateUnavailable as exc:
            self._quiet.warning("place-local", "cluster: placing a call here; the registry is unavailable: %s", exc)
            await self.app(scope, receive, send)
            return
        body: bytes | None = None
        for peer in choices:
            if peer.id == self.directory.worker_id:
                await self.app(scope, receive if body is None else replay_body(body, receive), send)
                return
            if body is None:
                body = await _body(receive)
            if await self._forward(scope, send, peer, body, DISPATCH_FORWARD_TIMEOUT_S, retry_elsewhere=True):
                return
        await _json(send, 503, {"error": "no worker has room for another call (all full, draining or lost)"},
                    retry_after=True)

    # -- the hop ----------------------------------------------------------------------------------------

    async def _forward(self, scope: Scope, send: Callable[..., Awaitable[Any]], peer: Peer, body: bytes,
                       timeout: float, *, retry_elsewhere: bool) -> bool:
        """Send the request to ``peer`` and its answer back. False when the peer could not be reached
        (nothing was sent to it, so the caller may answer or try elsewhere); True once answered."""
        if self.client.is_closed:  # shutting down: this worker has left the cluster
            return False
        method = scope["method"]
        raw_path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string") or b""
        url = peer.api_url.rstrip("/") + raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        headers = [(name, value) for name, value in scope.get("headers") or [] if name.lower() in
                   FORWARDED_REQUEST_HEADERS]
        headers.append((b"authorization", self._authorization))
        headers.append((PEER_HEADER.encode(),
                        self.mark.sign(self.directory.worker_id, method, scope["path"], time.time()).encode()))
        request = self.client.build_request(method, url, headers=headers, content=body or None,
                                            timeout=httpx.Timeout(timeout, connect=self.client.timeout.connect))
        try:
            response = await self.client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            self._quiet.warning(("unreachable", peer.id), "cluster: worker %s unreachable at %s: %s", peer.id,
                                peer.api_url, exc, retry_elsewhere=retry_elsewhere)
            return False
        except httpx.HTTPError as exc:
            self._quiet.warning(("failed", peer.id), "cluster: forwarding to worker %s failed: %s", peer.id, exc)
            await _json(send, 502, {"error": f"the call's worker {peer.id} did not answer: "
                                             f"{type(exc).__name__}", "worker": peer.id})
            return True
        self.forwarded += 1
        try:
            headers_out = [(name.lower(), value) for name, value in response.headers.raw
                           if name.lower() in FORWARDED_RESPONSE_HEADERS]
            headers_out.append((ANSWERED_BY_HEADER, peer.id.encode()))  # which worker answered, for operators
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers_out})
            try:
                async for chunk in response.aiter_bytes():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError as exc:  # the status is out: all that is left is to end the body
                self._quiet.warning(("cut", peer.id), "cluster: worker %s's answer was cut: %s", peer.id, exc)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()
        return True


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _body(receive: Callable[..., Awaitable[Any]]) -> bytes:
    """The request body (the guard already bounded and read it; this takes its replay)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _json(send: Callable[..., Awaitable[Any]], status: int, payload: dict[str, Any], *,
                retry_after: bool = False, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    extra = list(headers or [])
    if retry_after:  # RFC 9110 §10.2.3
        extra.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})
