"""The browser softphone's signalling: an SDP offer in, an answer and a call id out (call/webrtc/ does the work).

``POST /api/webrtc/calls`` ``{"type": "offer", "sdp": ..., "to": ...}`` → 201 ``{"call_id", "type": "answer",
"sdp"}``; ``GET /api/webrtc/targets`` → what the page may call. Both pass the API guard like every route.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from ..call.manager import CallManager
from .config import Config
from .http_context import ApiContext
from .httpguard import AUTH_SCOPE_KEY
from .jsonbody import json_body
from .routing import Router

log = logging.getLogger("callbridge.webrtc")

LOOPBACK = "127.0.0.1"


def webrtc_targets(router: Router, config: Config) -> list:
    """The numbers ``routing.numbers`` names, then every flow a call can reach (the default first)."""
    from ..call.webrtc.inbound import Target

    numbers = [Target(number, flow, "number") for number, flow in config.routing.numbers.items()]
    flows = sorted(router.reachable_flows, key=lambda name: (name != router.default_flow, name))
    return numbers + [Target(name, name, "flow") for name in flows]


def softphone_calls(config: Config, manager: CallManager, router: Callable[[], Router]):
    """The browser calls' answerer, or None when ``webrtc.enabled`` is false or aiortc cannot be used."""
    settings = config.webrtc
    if not settings.enabled:
        return None
    try:
        from aiortc import RTCIceServer

        from ..call.webrtc.aiortc_compat import UnsupportedAiortc, check_supported
        from ..call.webrtc.inbound import WebRtcCalls, WebRtcSettings
    except ImportError as exc:
        log.warning("browser softphone off: aiortc is not installed (%s)", exc)
        return None
    try:
        check_supported()
    except UnsupportedAiortc as exc:
        log.warning("browser softphone off: %s", exc)
        return None
    servers = tuple(RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                    for s in settings.ice_servers)
    tuning = WebRtcSettings(max_calls=settings.max_calls, connect_timeout_s=settings.connect_timeout_s,
                            gather_timeout_s=settings.gather_timeout_s, ice_servers=servers,
                            host_addresses=_extra_hosts(config.server.host))
    return WebRtcCalls(manager, tuning, targets=lambda: webrtc_targets(router(), config))


def _extra_hosts(host: str) -> tuple[str, ...]:
    # aioice skips loopback; a server on loopback (or on every address) must offer it, or a browser
    # on this machine finds no candidate it can reach.
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return (LOOPBACK,) if host == "localhost" else ()
    return (LOOPBACK,) if address.is_loopback or address.is_unspecified else ()


def webrtc_routes(ctx: ApiContext) -> list[BaseRoute]:
    async def create_call(request: Request) -> JSONResponse:
        from ..call.webrtc.inbound import WebRtcRefused, parse_offer

        calls = ctx.webrtc
        if calls is None:
            return JSONResponse({"error": "browser calls are not enabled on this server"}, status_code=404)
        credentials = request.scope.get(AUTH_SCOPE_KEY)
        client = request.client.host if request.client else None
        try:
            offer = parse_offer(await json_body(request))
            call, sdp = await calls.answer(offer, caller_name=getattr(credentials, "identity", None), remote=client)
        except WebRtcRefused as exc:
            log.info("browser call refused: %s", exc.message, extra={"status": exc.status, "field": exc.field})
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
            return JSONResponse(exc.to_json(), status_code=exc.status, headers=headers)
        return JSONResponse({"call_id": call.id, "type": "answer", "sdp": sdp}, status_code=201)

    async def targets(request: Request) -> JSONResponse:
        calls = ctx.webrtc
        if calls is None:
            return JSONResponse({"targets": [], "enabled": False, "ice_servers": []})
        # The browser needs the same STUN/TURN servers to reach us from behind NAT (a signed-in user's to see).
        ice_servers = [server.model_dump(exclude_none=True) for server in ctx.config.webrtc.ice_servers]
        return JSONResponse({"targets": [t.to_json() for t in calls.targets()], "enabled": True,
                             "ice_servers": ice_servers})

    return [Route("/api/webrtc/calls", create_call, methods=["POST"]),
            Route("/api/webrtc/targets", targets, methods=["GET"])]
