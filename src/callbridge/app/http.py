"""The HTTP API (Starlette): health, metrics, call records, dispatch, the event stream and call control.

Every request but ``GET /healthz`` passes :class:`~.httpguard.ApiGuard` first (token, Host, Origin, JSON
bodies of bounded size); handlers read bodies with :func:`~.jsonbody.json_body`, never ``request.json()``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, cast

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..call.call import CallStatus
from ..call.events import DtmfSent
from ..call.dial_policy import DialDenied, DialPolicyUnavailable
from ..call.manager import NO_MEDIA_PORTS_RETRY_AFTER_S, NoMediaPortsError
from ..offload import run_files
from .dispatch import DispatchError, parse_dispatch
from .events import SSE_KEEPALIVE, sse_frame
from .gctuning import GC_MONITOR
from .http_context import ApiContext
from .httpguard import ApiGuard, GuardPolicy
from .jsonbody import json_body
from .origins import HostPolicy
from .console.api import console_api_routes
from .console.callquery import QueryError, parse_call_query
from .console.history import SearchableRecords, call_page
from .console.routes import console_routes
from .console.login import session_routes
from .registrations import registration_routes
from .security_api import security_routes
from .trunk_api import trunk_routes
from .webrtc_api import webrtc_routes
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

log = logging.getLogger("callbridge.http")

# Proxies drop idle connections after 30-60 s; a comment line well inside that keeps the stream open.
SSE_KEEPALIVE_S = 15.0
# wait_until_answered: how long past the ringing timeout we wait for the answer to settle.
ANSWER_GRACE_S = 5.0
# The cluster's dial counters (Redis) are back within seconds of a restart or failover.
POLICY_UNAVAILABLE_RETRY_AFTER_S = 5

def no_such_call() -> JSONResponse:
    return JSONResponse({"error": "no such call"}, status_code=404)


def cannot_dial(exc: OSError) -> JSONResponse:
    """503: no RTP port free (try again soon, RFC 9110 §10.2.3), or the trunk's address cannot be used;
    403 with the reason when the dial policy refuses the destination (call/dial_policy.py)."""
    if isinstance(exc, DialPolicyUnavailable):  # the cluster's counters cannot be read: fail closed, briefly
        return JSONResponse({"error": f"cannot place the call: {exc.detail}", "reason": exc.reason}, status_code=503,
                            headers={"Retry-After": str(POLICY_UNAVAILABLE_RETRY_AFTER_S)})
    if isinstance(exc, DialDenied):
        return JSONResponse({"error": f"dial refused by policy: {exc.detail}", "reason": exc.reason}, status_code=403)
    headers = {"Retry-After": str(NO_MEDIA_PORTS_RETRY_AFTER_S)} if isinstance(exc, NoMediaPortsError) else None
    return JSONResponse({"error": f"cannot place the call: {exc}"}, status_code=503, headers=headers)


def build_http_app(ctx: ApiContext) -> ApiGuard:
    def find_call(request: Request):
        return ctx.calls.calls.get(request.path_params["call_id"])

    async def find_record(call_id: str) -> dict[str, Any] | None:
        """A live call from memory, a finished one from the store."""
        call = ctx.calls.calls.get(call_id)
        if call is not None:
            return call.to_record()
        if ctx.store is None:
            return None
        return await ctx.store.get_call(call_id)

    async def not_live(request: Request) -> JSONResponse:
        """An action on a call that is not in memory: 409 if it has ended, 404 if it never was."""
        record = await find_record(request.path_params["call_id"])
        if record is None:
            return no_such_call()
        return JSONResponse({"error": "the call has ended", "status": record.get("status"),
                             "end_reason": record.get("end_reason")}, status_code=409)

    async def healthz(request: Request) -> JSONResponse:
        # 200 only while new calls are taken: load balancers rely on it. Otherwise 503 says why
        # (starting, draining, full), the answer SIP INVITE and OPTIONS get (app/availability.py).
        unavailable = ctx.availability() if ctx.availability is not None else None
        if unavailable is None and not ctx.ready():
            return JSONResponse({"status": "starting"}, status_code=503)
        if unavailable is not None and unavailable.reason == "starting":
            return JSONResponse({"status": "starting"}, status_code=503,
                                headers={"Retry-After": str(unavailable.retry_after)})
        body = {"status": unavailable.reason if unavailable else "ok", "active_calls": len(ctx.calls.active_calls),
                "calls_in_memory": len(ctx.calls.calls),
                "rtp_ports_in_use": ctx.ports.in_use, "call_tasks": ctx.calls.task_count,
                "asyncio_tasks": len(asyncio.all_tasks()),
                "event_subscribers": ctx.bus.subscriber_count,
                "journal_backlog": ctx.journal_backlog()}
        if unavailable is None:
            return JSONResponse(body)
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(unavailable.retry_after)})

    async def start_drain(request: Request) -> JSONResponse:
        # Token-protected like every route but /healthz; the body, if any, is ignored.
        if ctx.drain is None:
            return JSONResponse({"error": "this server cannot drain"}, status_code=501)
        ctx.drain()
        return JSONResponse({"draining": True, "active_calls": len(ctx.calls.active_calls)}, status_code=202)

    async def metrics(request: Request) -> Response:
        return Response(ctx.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def media_stats(request: Request) -> JSONResponse:
        stats = ctx.pacer.stats()
        return JSONResponse({
            "streams": stats.streams, "rtp_ports_in_use": ctx.ports.in_use,
            "rtp_ports_free": ctx.ports.available,
            "pacer": {"slot_runs": stats.slot_runs, "late_p50_ms": stats.late_p50_ms,
                      "late_p99_ms": stats.late_p99_ms, "late_max_ms": round(stats.late_max_ms, 2),
                      "resyncs": stats.resyncs, "frames_skipped": stats.frames_skipped},
            "call_tasks": ctx.calls.task_count,
            "asyncio_tasks": sorted(task.get_name() for task in asyncio.all_tasks()),
            "gc": {"collections": GC_MONITOR.collections,
                   "max_pause_ms": [round(p, 2) for p in GC_MONITOR.max_pause_ms]},
        })

    async def call_recording(request: Request):
        record = await find_record(request.path_params["call_id"])
        path = record.get("recording") if record else None
        if not path or not await run_files(Path(path).is_file):
            return JSONResponse({"error": "no recording for this call"}, status_code=404)
        return FileResponse(path, media_type="audio/wav")

    async def send_dtmf(request: Request) -> JSONResponse:
        call = find_call(request)
        if call is None:
            return await not_live(request)
        digits = await _field(request, "digits")
        stream = call.leg.stream
        if not isinstance(digits, str) or not digits or stream is None or stream.closed:
            return JSONResponse({"error": "digits must be a non-empty string, on a call with media",
                                 "field": "digits"}, status_code=422)
        try:
            stream.send_dtmf(digits)
        except ValueError as exc:
            return JSONResponse({"error": str(exc), "field": "digits"}, status_code=422)
        call.publish(DtmfSent(digits=digits, method="rfc4733" if stream.telephone_event_pt else "inband"))
        return JSONResponse({"status": "sending"}, status_code=202)

    def hold_handler(hold: bool):
        async def handler(request: Request) -> JSONResponse:
            call = find_call(request)
            if call is None:
                return await not_live(request)
            try:
                ctx.calls.hold(call) if hold else ctx.calls.unhold(call)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=409)
            return JSONResponse({"hold": call.leg.stream.hold})
        return handler

    async def list_calls(request: Request) -> JSONResponse:
        # Filters and paging (app/console/callquery.py); the page is read in SQL (app/console/history.py).
        try:
            query = parse_call_query(request.query_params)
        except QueryError as exc:
            return JSONResponse(exc.to_json(), status_code=422)
        return JSONResponse(await call_page(ctx.calls, cast(SearchableRecords | None, ctx.store), query))

    async def get_call(request: Request) -> JSONResponse:
        record = await find_record(request.path_params["call_id"])
        if record is None:
            return no_such_call()
        return JSONResponse(record)

    def not_admitting() -> JSONResponse | None:
        """503 while this worker takes no new call (starting, draining, full), outbound as inbound."""
        unavailable = ctx.availability() if ctx.availability is not None else None
        if unavailable is None:
            return None
        return JSONResponse({"error": f"this worker takes no new calls: {unavailable.reason}",
                             "status": unavailable.reason}, status_code=503,
                            headers={"Retry-After": str(unavailable.retry_after)})

    async def dispatch(request: Request) -> JSONResponse:
        if (refused := not_admitting()) is not None:
            return refused
        try:
            job = parse_dispatch(await _json(request), ctx.config, ctx.trunk_directory)
        except DispatchError as exc:
            log.info("dispatch rejected", extra={"field": exc.field, "reason": exc.reason})
            return JSONResponse(exc.to_json(), status_code=422)
        try:
            call = await ctx.dispatcher.place(job)
        except OSError as exc:  # no RTP port free, or the trunk's address cannot be used
            log.warning("dispatch could not dial: %s", exc)
            return cannot_dial(exc)
        if job.wait_until_answered:
            await call.answered(job.ringing_timeout + ANSWER_GRACE_S)
        return JSONResponse({"call_id": call.id, "room_name": job.room_name,
                             "participant_identity": job.participant_identity, "status": call.status.value,
                             "end_reason": call.end_reason}, status_code=201)

    async def events(request: Request) -> StreamingResponse:
        call_id = request.query_params.get("call_id") or None
        subscription = ctx.bus.subscribe(call_id)

        async def stream():
            try:
                yield SSE_KEEPALIVE  # headers and a first byte at once: the client knows it is subscribed
                while True:
                    try:
                        event = await asyncio.wait_for(subscription.next(), SSE_KEEPALIVE_S)
                    except TimeoutError:
                        yield SSE_KEEPALIVE
                        continue
                    if event is None:
                        return  # dropped for being too slow, or shutting down: the client reconnects
                    yield sse_frame(event)
            finally:
                ctx.bus.unsubscribe(subscription)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def transfer_call(request: Request) -> JSONResponse:
        call = find_call(request)
        if call is None:
            return await not_live(request)
        target = await _field(request, "target")
        if not isinstance(target, str) or not target.startswith(("sip:", "sips:")):
            return JSONResponse({"error": "target must be a sip: URI", "field": "target"}, status_code=422)
        try:
            ctx.calls.transfer(call, target)
        except ValueError as exc:  # a leg that cannot be transferred (a browser call: no REFER)
            return JSONResponse({"error": str(exc)}, status_code=409)
        return JSONResponse({"status": "transferring"}, status_code=202)

    async def hangup_call(request: Request) -> JSONResponse:
        call = find_call(request)
        if call is None:  # hanging up an ended call changes nothing: say how it ended
            record = await find_record(request.path_params["call_id"])
            if record is None:
                return no_such_call()
            return JSONResponse({"status": record.get("status"), "end_reason": record.get("end_reason")})
        if call.status is not CallStatus.HANGUP:
            ctx.calls.hangup(call)
        return JSONResponse({"status": call.status.value, "end_reason": call.end_reason})

    async def dial(request: Request) -> JSONResponse:
        if (refused := not_admitting()) is not None:
            return refused
        target = await _field(request, "to")
        if not isinstance(target, str) or not target.startswith(("sip:", "sips:")):
            return JSONResponse({"error": "to must be a sip: URI", "field": "to"}, status_code=422)
        try:
            call = await ctx.calls.dial(target)
        except ValueError as exc:
            return JSONResponse({"error": str(exc), "field": "to"}, status_code=422)
        except OSError as exc:
            log.warning("could not dial %s: %s", target, exc)
            return cannot_dial(exc)
        return JSONResponse({"id": call.id, "sip_call_id": call.sip_call_id}, status_code=201)

    app = Starlette(routes=[
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/api/drain", start_drain, methods=["POST"]),
        Route("/api/dispatch", dispatch, methods=["POST"]),
        Route("/api/events", events),
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
        *registration_routes(ctx.registrations),
        *trunk_routes(ctx.trunk_directory),
        *security_routes(ctx.auth_guard, ctx.now),
        *webrtc_routes(ctx),
        *console_api_routes(ctx),
        *console_routes(),
        *session_routes(ctx.api_token, ctx.config.api.session_hours),
    ])
    config, api = ctx.config.server, ctx.config.api
    hosts = HostPolicy.for_server(config.host, config.public_host, api.allowed_hosts, api.allowed_origins)
    # In a cluster, a call that runs on another worker is answered by it (app/cluster/forwarding.py).
    routes = ctx.cluster.http_app(app, ctx.api_token) if ctx.cluster is not None else app
    return ApiGuard(routes, GuardPolicy(token=ctx.api_token, hosts=hosts, max_body_bytes=api.max_body_bytes,
                                     body_timeout_s=api.body_timeout_s,
                                     session_lifetime_s=max(1, round(api.session_hours * 3600))))


async def _field(request: Request, name: str) -> object:
    """One field of a JSON object body; None when the body is not an object."""
    body = await _json(request)
    return body.get(name) if isinstance(body, dict) else None


async def _json(request: Request) -> object:
    return await json_body(request)  # decoded by the guard, off the event loop when large
