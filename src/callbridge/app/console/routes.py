"""The console's pages and assets: ``/`` (the console), ``/phone`` (the browser softphone), ``/static/*``.

They carry no secret, so they are served without the token; every API call they make is checked
like any other (bearer token, or the console's session cookie).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

STATIC_DIR = Path(__file__).parent / "static"
# Served as files; anything else under /static/ is 404 (no directory listing, no path escapes).
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".ico": "image/x-icon"}
# The pages load only their own scripts and styles, and talk only to this server.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _file(path: Path) -> Response:
    media_type = STATIC_TYPES.get(path.suffix)
    if media_type is None or not path.is_file():
        return JSONResponse({"error": "not found"}, status_code=404)
    return FileResponse(path, media_type=media_type, headers=PAGE_HEADERS)


def console_routes() -> list[BaseRoute]:
    async def index(request: Request) -> Response:
        return _file(STATIC_DIR / "index.html")

    async def phone(request: Request) -> Response:
        return _file(STATIC_DIR / "phone.html")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        # One level, plain names: no "..", no sub-directories, no hidden files.
        if "/" in name or "\\" in name or name.startswith("."):
            return JSONResponse({"error": "not found"}, status_code=404)
        return _file(STATIC_DIR / name)

    return [Route("/", index), Route("/phone", phone), Route("/static/{name:path}", asset)]
