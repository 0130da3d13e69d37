"""The login guard in config and over the API: ``security:`` settings, ``/api/security/bans``.

``GET /api/security/bans`` lists the bans in force (sources and usernames),
each with when it ends; ``DELETE /api/security/bans/{kind}/{key}`` lifts one
early (an operator who locked out their own office, say).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..sip.guard import SOURCE, USERNAME, AuthGuard, GuardPolicy
from .config import SecurityConfig


def guard_policy(security: SecurityConfig) -> GuardPolicy:
    return GuardPolicy(
        failures_before_backoff=security.auth_failures_before_backoff,
        failures_before_ban=security.auth_failures_before_ban,
        failure_window=security.failure_window_seconds,
        backoff_seconds=security.backoff_seconds,
        ban_seconds=security.ban_seconds,
        max_ban_seconds=security.max_ban_seconds,
        max_tracked=security.max_tracked,
    )


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def security_routes(guard: Callable[[], AuthGuard | None], now: Callable[[], float]) -> list[Route]:
    """``now`` is the clock the guard is fed (the SIP endpoint's); expiries are shown in wall time too."""

    async def list_bans(request: Request) -> JSONResponse:
        current = guard()
        if current is None:
            return JSONResponse({"enabled": False, "bans": []})
        clock, wall = now(), time.time()
        bans = [{"kind": ban.kind, "key": ban.key, "failures": ban.failures, "offences": ban.offences,
                 "expires_in_s": round(ban.until - clock, 1), "expires_at": _iso(wall + ban.until - clock)}
                for ban in current.bans(clock)]
        policy = current.policy
        return JSONResponse({
            "enabled": True, "bans": bans, "tracked": current.tracked,
            "policy": {"auth_failures_before_backoff": policy.failures_before_backoff,
                       "auth_failures_before_ban": policy.failures_before_ban,
                       "failure_window_seconds": policy.failure_window, "ban_seconds": policy.ban_seconds},
        })

    async def lift_ban(request: Request) -> JSONResponse:
        current = guard()
        kind, key = request.path_params["kind"], request.path_params["key"]
        if kind not in (SOURCE, USERNAME):
            return JSONResponse({"error": f"kind must be {SOURCE} or {USERNAME}", "field": "kind"}, status_code=422)
        if current is None or not current.lift(kind, key):
            return JSONResponse({"error": "no such ban"}, status_code=404)
        return JSONResponse({"lifted": {"kind": kind, "key": key}})

    return [
        Route("/api/security/bans", list_bans, methods=["GET"]),
        Route("/api/security/bans/{kind}/{key:path}", lift_ban, methods=["DELETE"]),
    ]
