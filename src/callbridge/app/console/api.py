"""The console's read APIs (token or session like every ``/api`` route):

- ``GET /api/flows``: the running flows as graphs (nodes, labelled edges, start) and the draft flow files
  with their validation error at file:line:column (app/console/sources.py).
- ``GET /api/agents``: the configured agents, without secrets.
- ``GET /api/overview``: calls per minute, statuses and end reasons over the last hour, active calls,
  turn latency p50/p95 (app/console/overview.py), from one bounded store read plus the live calls.

Trunks and their registrations are ``GET /api/trunks`` and ``GET /api/trunks/registrations``.
None of them takes a parameter: there is no input to validate beyond the path.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, cast

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..http_context import ApiContext
from .overview import WINDOW_S, overview
from .sources import ConsoleSources


class RecentActivity(Protocol):
    async def recent_activity(self, since: float) -> dict[str, Any]: ...


def _unavailable() -> JSONResponse:
    return JSONResponse({"error": "the console's sources are not available on this server"}, status_code=503)


def console_api_routes(ctx: ApiContext) -> list[Route]:
    sources: ConsoleSources | None = ctx.console if isinstance(ctx.console, ConsoleSources) else None

    async def flows(request: Request) -> JSONResponse:
        if sources is None:
            return _unavailable()
        return JSONResponse(await sources.flow_listing())

    async def agents(request: Request) -> JSONResponse:
        if sources is None:
            return _unavailable()
        return JSONResponse({"agents": sources.agents()})

    async def summary(request: Request) -> JSONResponse:
        now = time.time()
        live = list(ctx.calls.calls.values())
        rows: dict[str, dict[str, Any]] = {}
        latencies: list[float] = []
        truncated = False
        if ctx.store is not None:
            recent = await cast(RecentActivity, ctx.store).recent_activity(now - WINDOW_S)
            rows = {row["id"]: row for row in recent["calls"]}
            latencies, truncated = recent["turn_latency_ms"], recent["truncated"]
        else:  # memory only: the live calls' own turns
            latencies = [float(turn["latency_ms"]["total"]) for call in live for turn in call.transcript
                         if isinstance(turn.get("latency_ms"), dict) and "total" in turn["latency_ms"]]
        for call in live:  # memory is newer than the store
            rows[call.id] = {"created_at": call.created_at, "status": call.status.value,
                             "end_reason": None if call.end_reason is None else call.end_reason.value}
        return JSONResponse(overview(now, rows.values(), latencies, active=len(ctx.calls.active_calls),
                                     live_statuses=[c.status.value for c in live], truncated=truncated))

    return [Route("/api/flows", flows, methods=["GET"]), Route("/api/agents", agents, methods=["GET"]),
            Route("/api/overview", summary, methods=["GET"])]


__all__ = ["console_api_routes"]
