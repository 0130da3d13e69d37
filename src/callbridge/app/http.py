"""The HTTP API (Starlette): health, call records and call control."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from .gctuning import GC_MONITOR

if TYPE_CHECKING:
    from .server import Server


def no_such_call() -> JSONResponse:
    return JSONResponse({"error": "no such call"}, status_code=404)


def build_http_app(server: "Server") -> Starlette:
    def find_call(request: Request):
        return server.calls.calls.get(request.path_params["call_id"])

    async def healthz(request: Request) -> JSONResponse:
        # 200 only once SIP listens and media is ready: load balancers rely on it.
        if not server.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok", "active_calls": len(server.calls.active_calls),
                             "rtp_ports_in_use": server.ports.in_use})

    async def media_stats(request: Request) -> JSONResponse:
        stats = server.pacer.stats()
        return JSONResponse({
            "streams": stats.streams, "rtp_ports_in_use": server.ports.in_use,
            "rtp_ports_free": server.ports.available,
            "pacer": {"slot_runs": stats.slot_runs, "late_p50_ms": stats.late_p50_ms,
                      "late_p99_ms": stats.late_p99_ms, "late_max_ms": round(stats.late_max_ms, 2),
                      "resyncs": stats.resyncs},
            "gc": {"collections": GC_MONITOR.collections,
                   "max_pause_ms": [round(p, 2) for p in GC_MONITOR.max_pause_ms]},
        })

    async def call_recording(request: Request):
        call = find_call(request)
        if call is None or call.recording is None:
            return JSONResponse({"error": "no recording for this call"}, status_code=404)
        return FileResponse(call.recording, media_type="audio/wav")

    async def send_dtmf(request: Request) -> JSONResponse:
        call = find_call(request)
        if call is None:
            return no_such_call()
        digits = await _field(request, "digits")
        stream = call.leg.stream
        if not isinstance(digits, str) or not digits or stream is None or stream.closed:
            return JSONResponse({"error": "digits must be a non-empty string, on a call with media",
                                 "field": "digits"}, status_code=422)
        try:
            stream.send_dtmf(digits)
        except ValueError as exc:
            return JSONResponse({"error": str(exc), "field": "digits"}, status_code=422)
        call.log_event("dtmf_sent", digits=digits, method="rfc4733" if stream.telephone_event_pt else "inband")
        return JSONResponse({"status": "sending"}, status_code=202)

    def hold_handler(hold: bool):
        async def handler(request: Request) -> JSONResponse:
            call = find_call(request)
            if call is None:
                return no_such_call()
            try:
                server.calls.hold(call) if hold else server.calls.unhold(call)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=409)
            return JSONResponse({"hold": call.leg.stream.hold})
        return handler

    async def list_calls(request: Request) -> JSONResponse:
        calls = sorted(server.calls.calls.values(), key=lambda c: c.created_at, reverse=True)
        sip_call_id = request.query_params.get("sip_call_id")
        if sip_call_id:
            calls = [c for c in calls if c.sip_call_id == sip_call_id]
        return JSONResponse({"calls": [c.to_record() for c in calls]})

    async def get_call(request: Request) -> JSONResponse:
        call = find_call(request)
        if call is None:
            return no_such_call()
        return JSONResponse(call.to_record())

    async def transfer_call(request: Request) -> JSONResponse:
        call = find_call(request)
        if call is None:
            return no_such_call()
        target = await _field(request, "target")
        if not isinstance(target, str) or not target.startswith(("sip:", "sips:")):
            return JSONResponse({"error": "target must be a sip: URI", "field": "target"}, status_code=422)
        server.calls.transfer(call, target)
        return JSONResponse({"status": "transferring"}, status_code=202)

    async def hangup_call(request: Request) -> JSONResponse:
        call = find_call(request)
        if call is None:
            return no_such_call()
        server.calls.hangup(call)
        return JSONResponse({"status": call.status.value})

    async def dial(request: Request) -> JSONResponse:
        target = await _field(request, "to")
        if not isinstance(target, str) or not target.startswith(("sip:", "sips:")):
            return JSONResponse({"error": "to must be a sip: URI", "field": "to"}, status_code=422)
        try:
            call = await server.calls.dial(target)
        except ValueError as exc:
            return JSONResponse({"error": str(exc), "field": "to"}, status_code=422)
        return JSONResponse({"id": call.id, "sip_call_id": call.sip_call_id}, status_code=201)

    return Starlette(routes=[
        Route("/healthz", healthz),
        Route("/api/media", media_stats),
        Route("/api/calls", list_calls, methods=["GET"]),
        Route("/api/calls", dial, methods=["POST"]),
        Route("/api/calls/{call_id}", get_call),
        Route("/api/calls/{call_id}/transfer", transfer_call, methods=["POST"]),
        Route("/api/calls/{call_id}/hangup", hangup_call, methods=["POST"]),
        Route("/api/calls/{call_id}/hold", hold_handler(True), methods=["POST"]),
        Route("/api/calls/{call_id}/unhold", hold_handler(False), methods=["POST"]),
        Route("/api/calls/{call_id}/recording", call_recording),
        Route("/api/calls/{call_id}/dtmf", send_dtmf, methods=["POST"]),
    ])


async def _field(request: Request, name: str) -> object:
    """One field of a JSON object body; None when the body is not an object."""
    body = await _json(request)
    return body.get(name) if isinstance(body, dict) else None


async def _json(request: Request) -> object:
    try:
        return await request.json()
    except ValueError:
        return None
