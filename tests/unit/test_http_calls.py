"""GET /api/calls through the real HTTP app and server wiring, on SQLite and a real PostgreSQL."""

from __future__ import annotations

import json

import httpx
import sqlalchemy as sa

from callbridge.app.config import Config
from callbridge.app.http import build_http_app
from callbridge.app.server import Server
from callbridge.app.store import AsyncCallStore, CallStore
from tests.support import postgres
from tests.unit.test_callstore import saved_calls

database_url, postgres_cluster = postgres.database_url, postgres.postgres_cluster  # fixtures


async def test_listing_reads_the_store_once_and_returns_whole_records(database_url, tmp_path):
    server = Server(Config.model_validate({"server": {"data_dir": str(tmp_path / "data")}}))
    server.store = AsyncCallStore(CallStore.open(database_url, tmp_path))
    expected = json.loads(json.dumps(saved_calls(server.store.store)))  # what JSON makes of the floats
    statements: list[str] = []
    engine = server.store.store.engine
    sa.event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_: statements.append(statement))
    headers = {"Authorization": f"Bearer {server.api_token}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_http_app(server.api_context())),
                                 base_url="http://127.0.0.1:8080", headers=headers) as client:
        try:
            reply = await client.get("/api/calls")
            assert reply.status_code == 200
            # Five calls with their events and transcripts: one statement, not one (or three) per call.
            assert len(statements) == 1, statements
            assert reply.json() == {"calls": expected, "total": len(expected), "limit": 100, "offset": 0}
            statements.clear()
            paged = await client.get("/api/calls", params={"limit": 2, "offset": 1, "status": "active"})
            active = [r for r in expected if r["status"] == "active"]
            assert paged.json() == {"calls": active[1:3], "total": len(active), "limit": 2, "offset": 1}
            assert len(statements) == 1
            one = await client.get("/api/calls/c3")
            assert one.json() == expected[1]
        finally:
            await server.store.close()
