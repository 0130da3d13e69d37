"""``/api/trunks``: list every trunk, add or replace API trunks, delete them.

- ``GET /api/trunks`` -> ``{"inbound": [...], "outbound": [...]}``, each with ``source``
  (``config`` or ``api``) and passwords shown as ``***``.
- ``POST /api/trunks/{inbound|outbound}``: a body the config's trunk model accepts;
  201 when new, 200 when it replaced an API trunk, 409 when the config owns the name,
  422 ``{"error", "field", "reason"}`` on a bad body.
- ``DELETE /api/trunks/{kind}/{name}``: 204, 404 if unknown, 409 for config trunks.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .jsonbody import json_body
from .trunk_directory import KINDS, StoreUnavailable, TrunkConflict, TrunkDirectory, TrunkError, parse_trunk

log = logging.getLogger("callbridge.trunks")


def _unknown_kind(kind: str) -> JSONResponse:
    return JSONResponse({"error": f"no trunk kind {kind!r} (inbound or outbound)"}, status_code=404)


def _store_down(exc: StoreUnavailable) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=503)


def trunk_routes(directory: TrunkDirectory) -> list[Route]:
    async def list_trunks(request: Request) -> JSONResponse:
        return JSONResponse(directory.snapshot())

    async def save_trunk(request: Request) -> JSONResponse:
        kind = request.path_params["kind"]
        if kind not in KINDS:
            return _unknown_kind(kind)
        body = await json_body(request)  # decoded by the HTTP guard; None when not JSON
        try:
            trunk = parse_trunk(kind, body, directory.config)
            created = await directory.save(kind, trunk)
        except TrunkError as exc:
            log.info("trunk rejected", extra={"kind": kind, "field": exc.field, "reason": exc.reason})
            return JSONResponse(exc.to_json(), status_code=422)
        except TrunkConflict as exc:
            return JSONResponse({"error": str(exc), "field": "name"}, status_code=409)
        except StoreUnavailable as exc:
            return _store_down(exc)
        return JSONResponse(directory.describe(kind, trunk), status_code=201 if created else 200)

    async def delete_trunk(request: Request) -> Response:
        kind, name = request.path_params["kind"], request.path_params["name"]
        if kind not in KINDS:
            return _unknown_kind(kind)
        try:
            deleted = await directory.delete(kind, name)
        except TrunkConflict as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        except StoreUnavailable as exc:
            return _store_down(exc)
        if not deleted:
            return JSONResponse({"error": f"no {kind} trunk named {name!r}"}, status_code=404)
        return Response(status_code=204)

    return [
        Route("/api/trunks", list_trunks, methods=["GET"]),
        Route("/api/trunks/{kind}", save_trunk, methods=["POST"]),
        # :path so a name with "/" (the config allows it) can still be deleted, URL-encoded.
        Route("/api/trunks/{kind}/{name:path}", delete_trunk, methods=["DELETE"]),
    ]


__all__ = ["trunk_routes"]
