"""The console's read APIs through the real HTTP app: /api/calls search and paging (SQLite and a real
PostgreSQL), /api/flows with a broken draft, /api/agents and /api/trunks without secrets, /api/overview."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from callbridge.app.config import Config, load_config
from callbridge.app.http import build_http_app
from callbridge.app.server import Server
from callbridge.app.store import AsyncCallStore, CallStore
from tests.support import postgres
from tests.support.console_flows import BROKEN_FLOW, SALES_FLOW
from tests.unit.test_callstore import call_record

database_url, postgres_cluster = postgres.database_url, postgres.postgres_cluster  # fixtures

NOW = time.time()
# (id, caller, called, status, end_reason, minutes ago)
CALLS = [
    ("a1", "+15551230000", "demo", "hangup", "caller_hangup", 50),
    ("a2", "+15551230000", "+15550100000", "hangup", "transfer", 40),
    ("a3", "sip:alice@pbx.example", "+15550100000", "hangup", "caller_hangup", 30),
    ("a4", "+4930123456", "demo", "active", None, 20),
    ("a5", "100%_sure", "demo", "hangup", "error", 10),
    ("a6", "+15559999999", "sales", "hangup", "no_answer", 5),
    ("old", "+15551230000", "demo", "hangup", "caller_hangup", 600),
]
LATENCIES = [400, 500, 600, 700, 800, 900, 1000, 1100, 1200, 3000]  # p50 800 and p95 3000 by nearest rank


def seed(store: CallStore) -> None:
    for call_id, caller, called, status, reason, ago in CALLS:
        created = NOW - ago * 60
        store.save_call(call_record(call_id, caller=caller, called=called, status=status, end_reason=reason,
                                    created_at=created, ended_at=None if status != "hangup" else created + 30))
    for index, total in enumerate(LATENCIES):
        store.append_event("a1" if index % 2 else "a2", "latency",
                           {"turn": index, "vad": 1, "stt": 1, "brain": 1, "tts_first_audio": 1, "total": total},
                           NOW - 100)
    store.append_event("old", "latency", {"turn": 0, "total": 99999}, NOW - 36000)  # outside the hour


def client_for(server: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=build_http_app(server.api_context())),
                             base_url="http://127.0.0.1:8080",
                             headers={"Authorization": f"Bearer {server.api_token}"})


@pytest.fixture
async def seeded(database_url, tmp_path):
    # "Minutes ago" from when the test runs, not from import: the full suite reaches here ~20 minutes later.
    global NOW
    NOW = time.time()
    server = Server(Config.model_validate({"server": {"data_dir": str(tmp_path / "data")}}))
    server.store = AsyncCallStore(CallStore.open(database_url, tmp_path))
    seed(server.store.store)
    yield server
    await server.store.close()


def ids(reply: httpx.Response) -> list[str]:
    assert reply.status_code == 200, reply.text
    return [c["id"] for c in reply.json()["calls"]]


async def test_history_filters_page_in_sql_with_a_total(seeded):
    statements: list[str] = []
    sa.event.listen(seeded.store.store.engine, "before_cursor_execute",
                    lambda _c, _cur, statement, *_: statements.append(statement))
    async with client_for(seeded) as client:
        assert ids(await client.get("/api/calls", params={"number": "1555123"})) == ["a2", "a1", "old"]
        assert ids(await client.get("/api/calls", params={"q": "ALICE"})) == ["a3"]  # any case; q is an alias
        assert ids(await client.get("/api/calls", params={"number": "0100000"})) == ["a3", "a2"]  # the called side
        assert ids(await client.get("/api/calls", params={"status": "active"})) == ["a4"]
        assert ids(await client.get("/api/calls", params={"end_reason": "caller_hangup"})) == ["a3", "a1", "old"]
        since, until = NOW - 45 * 60, NOW - 15 * 60
        ranged = await client.get("/api/calls", params={"since": str(since), "until": str(until)})
        assert ids(ranged) == ["a4", "a3", "a2"]
        iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(NOW - 45 * 60))
        iso_ranged = await client.get("/api/calls", params={"since": iso, "status": "hangup"})
        assert ids(iso_ranged) == ["a6", "a5", "a3", "a2"]
        statements.clear()
        page = await client.get("/api/calls", params={"limit": 2, "offset": 2})
        assert ids(page) == ["a4", "a3"]
        assert (page.json()["total"], page.json()["limit"], page.json()["offset"]) == (7, 2, 2)
        assert len(statements) == 1 and "LIMIT" in statements[0].upper(), statements  # paged by the database
        past = await client.get("/api/calls", params={"offset": 50})
        assert past.json()["calls"] == [] and past.json()["total"] == 7
        capped = await client.get("/api/calls", params={"limit": 5000})
        assert capped.json()["limit"] == 1000 and len(capped.json()["calls"]) == 7


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": "abc"}, "limit"), ({"limit": "-1"}, "limit"), ({"limit": "9" * 5000}, "limit"),
    ({"offset": "1e3"}, "offset"), ({"offset": "99999999999"}, "offset"), ({"limit": "²"}, "limit"),
    ({"number": "5" * 65}, "number"), ({"number": "12\x003"}, "number"), ({"q": "x" * 10_000}, "q"),
    ({"status": "hacked"}, "status"), ({"end_reason": "caller_hangup' OR '1'='1"}, "end_reason"),
    ({"direction": "sideways"}, "direction"), ({"since": "nan"}, "since"), ({"since": "1e400"}, "since"),
    ({"until": "yesterday"}, "until"), ({"since": "-5"}, "since"), ({"since": "2000", "until": "1000"}, "until"),
    ({"worker": "w" * 65}, "worker"), ({"sip_call_id": "c" * 256}, "sip_call_id"),
])
async def test_bad_query_parameters_get_422_naming_the_field(tmp_path, params, field):
    server = Server(Config.model_validate({"server": {"data_dir": str(tmp_path / "data")}}))
    server.store = AsyncCallStore(CallStore.open(None, tmp_path))
    try:
        async with client_for(server) as client:
            reply = await client.get("/api/calls", params=params)
        assert reply.status_code == 422, reply.text
        assert reply.json()["field"] == field, reply.json()
    finally:
        await server.store.close()


async def test_sql_and_wildcards_in_the_search_are_only_text(seeded):
    async with client_for(seeded) as client:
        assert ids(await client.get("/api/calls", params={"number": "' OR 1=1 --"})) == []
        assert ids(await client.get("/api/calls", params={"number": "'; DROP TABLE calls; --"})) == []
        assert ids(await client.get("/api/calls", params={"number": "%"})) == ["a5"]  # a character, not a wildcard
        assert ids(await client.get("/api/calls", params={"number": "_"})) == ["a5"]
        assert (await client.get("/api/calls")).json()["total"] == 7  # the table is still there


async def test_overview_counts_the_last_hour(seeded):
    async with client_for(seeded) as client:
        reply = await client.get("/api/overview")
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["calls"] == 6  # "old" is ten hours old
    assert data["end_reasons"] == {"caller_hangup": 2, "transfer": 1, "error": 1, "no_answer": 1}
    assert data["statuses"] == {"hangup": 5, "active": 1}
    assert sum(data["calls_per_minute"]) == 6 and len(data["calls_per_minute"]) == 60
    # 50 and 5 minutes ago, give or take the seconds between seeding and asking
    assert sum(data["calls_per_minute"][9:11]) == 1 and sum(data["calls_per_minute"][54:56]) == 1
    assert data["turn_latency_ms"] == {"count": 10, "p50": 800, "p95": 3000}
    assert data["active_calls"] == 0  # nothing live in this process


SECRETS = ["sk-llm-secret-123", "pw-in-url-456", "trunk-pass-789", "reg-pass-012", "digest-pass-345",
           "query-key-678", "api-token-abcdef0123456789"]
CONFIG = f"""\
flows:
  sales: flows/sales.yaml
api:
  token: {SECRETS[6]}
agents:
  - name: assistant
    llm: {{base_url: "https://bob:{SECRETS[1]}@llm.example:8443/v1?key={SECRETS[5]}", model: small,
           api_key: {SECRETS[0]}}}
outbound_trunks:
  - name: carrier
    host: 127.0.0.1
    username: acct
    password: {SECRETS[2]}
    register: {{username: acct, password: {SECRETS[3]}}}
inbound_trunks:
  - name: office
    auth: {{username: office, password: {SECRETS[4]}}}
"""


@pytest.fixture
async def configured(tmp_path):
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "sales.yaml").write_text(SALES_FLOW)
    (tmp_path / "callbridge.yaml").write_text(CONFIG + f"server: {{data_dir: {tmp_path / 'data'}}}\n")
    server = Server(load_config(tmp_path / "callbridge.yaml"))
    server.store = AsyncCallStore(CallStore.open(None, tmp_path))
    yield server, tmp_path
    await server.store.close()


async def test_flows_are_graphs_and_a_broken_draft_shows_its_error_at_file_line(configured):
    server, root = configured
    (root / "flows" / "broken.yaml").write_text(BROKEN_FLOW)
    (root / "flows" / "intents.yaml").write_text("intents:\n  - name: x\n")  # YAML, but no flow: not listed
    (root / "flows" / "garbled.yml").write_text("nodes: [unclosed\n")
    async with client_for(server) as client:
        reply = await client.get("/api/flows")
    assert reply.status_code == 200, reply.text
    data = reply.json()
    by_name = {f["configured_as"]: f for f in data["flows"]}
    assert set(by_name) == {"demo", "sales"}
    demo = by_name["demo"]
    assert demo["start"] == "check_language" and demo["routed"] is True and by_name["sales"]["routed"] is False
    assert {"main_menu", "language_menu", "agent_order_status"} <= {n["id"] for n in demo["nodes"]}
    assert {"from": "main_menu", "to": "agent_order_status", "label": "1: Order status"} in demo["edges"]
    assert {"from": "check_language", "to": "greeting", "label": "else"} in demo["edges"]
    drafts = {d["name"]: d for d in data["drafts"]}
    assert set(drafts) == {"broken.yaml", "garbled.yml"}  # sales.yaml runs; intents.yaml is no flow
    error = drafts["broken.yaml"]["error"]
    # line 7, "next: nowhere"
    assert (error["file"], error["line"], error["column"]) == (str(root / "flows" / "broken.yaml"), 7, 5), error
    assert "nowhere" in error["reason"]
    assert drafts["garbled.yml"]["error"]["file"].endswith("garbled.yml")


async def test_no_secret_leaves_through_the_console_apis(configured):
    server, _ = configured
    async with client_for(server) as client:
        replies = [await client.get(path) for path in ("/api/agents", "/api/trunks", "/api/trunks/registrations",
                                                       "/api/flows", "/api/overview", "/api/calls")]
    for reply in replies:
        assert reply.status_code == 200, (reply.url, reply.text)
        for secret in SECRETS:
            assert secret not in reply.text, (reply.url, secret)
    agent = replies[0].json()["agents"][0]
    assert agent["llm"] == {"model": "small", "base_url": "https://llm.example:8443/v1"}
    assert "api_key" not in json.dumps(agent)


async def test_console_pages_need_no_token_but_the_apis_do(configured):
    server, _ = configured
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_http_app(server.api_context())),
                                 base_url="http://127.0.0.1:8080") as anonymous:
        for path in ("/api/flows", "/api/agents", "/api/overview"):
            assert (await anonymous.get(path)).status_code == 401, path
        for path in ("/", "/static/app.js", "/static/style.css", "/static/calldetail.js"):
            page = await anonymous.get(path)
            assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"], path
    index = (Path(__file__).parents[2] / "src/callbridge/app/console/static/index.html").read_text()
    assert "<script>" not in index and "style=" not in index  # the CSP allows no inline script or style
