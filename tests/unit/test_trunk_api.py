"""/api/trunks through the real HTTP app, server wiring and a real SQLite store."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from callbridge.app.config import Config, SourceError, config_from
from callbridge.app.dispatch import DispatchError, parse_dispatch
from callbridge.app.server import Server
from callbridge.app.store import CallStore
from callbridge.yamlsource import Located

# register: off, so start() sends no REGISTER off this machine; the block is still listed (passwords masked).
CONFIG_TRUNKS = {
    "inbound_trunks": [{"name": "office", "allowed_cidrs": ["10.0.0.0/8"],
                        "auth": {"username": "pbx", "password": "in-secret"}}],
    "outbound_trunks": [{"name": "carrier", "host": "sip.example.com", "username": "acct", "password": "out-secret",
                         "register": {"enabled": False, "password": "reg-secret"}}],
}
API_OUTBOUND = {"name": "backup", "host": "127.0.0.1", "port": 5090, "username": "u1", "password": "p1",
                "numbers": ["+15550001111"]}
API_INBOUND = {"name": "twilio", "numbers": ["+15550109999"], "allowed_cidrs": ["127.0.0.0/8"],
               "auth": {"username": "tw", "password": "tw-secret"}, "flow": "tone"}
# The default flow: one that hangs up, so start() has no agent models to preload (the demo's take seconds).
DEFAULT_FLOW = "hang-up"


class Running:
    """A Server after the real Server.start(), and an HTTP client talking to its API port."""

    def __init__(self, server: Server, client: httpx.AsyncClient) -> None:
        self.server = server
        self.client = client


async def open_server(data_dir: Path, extra: dict | None = None, *, authorised: bool = True) -> Running:
    flow = data_dir.parent / f"{DEFAULT_FLOW}.yaml"
    flow.write_text(f"flow: {DEFAULT_FLOW}\nstart: bye\nnodes:\n  bye: {{type: hangup}}\n")
    config = Config.model_validate({
        "server": {"data_dir": str(data_dir), "host": "127.0.0.1", "sip_port": 0, "http_port": 0},
        "prompts": {"prerender": False}, "flows": {DEFAULT_FLOW: str(flow)},
        "routing": {"default_flow": DEFAULT_FLOW}, **CONFIG_TRUNKS, **(extra or {})})
    server = Server(config)
    bound = await server.start()  # the store, the trunk directory, SIP and HTTP, as `callbridge serve` does
    headers = {"Authorization": f"Bearer {server.api_token}"} if authorised else {}
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{bound.http}", headers=headers)
    return Running(server, client)


async def close_server(running: Running) -> None:
    await running.client.aclose()
    await running.server.stop()


@pytest.fixture(autouse=True)
def info_logs(caplog):
    # Log records are built only when enabled: enable them, so a bad `extra` key fails here.
    caplog.set_level(logging.INFO, "callbridge")


@pytest.fixture
async def api(tmp_path):
    running = await open_server(tmp_path / "data")
    yield running
    await close_server(running)


def dispatch_body(trunk: str) -> dict:
    return {"agent_name": "assistant", "metadata": {"sip_call_to": "+15550102030", "sip_trunk_id": trunk,
                                                   "participant_identity": "p1"}}


def by_name(listing: list[dict]) -> dict[str, dict]:
    return {t["name"]: t for t in listing}


async def test_config_trunks_are_listed_with_their_source_and_no_passwords(api):
    reply = await api.client.get("/api/trunks")
    assert reply.status_code == 200
    body = reply.json()
    office, carrier = by_name(body["inbound"])["office"], by_name(body["outbound"])["carrier"]
    assert office["source"] == "config" and office["allowed_cidrs"] == ["10.0.0.0/8"]
    assert office["auth"]["password"] == "***" and office["auth"]["username"] == "pbx"
    assert carrier["source"] == "config" and carrier["password"] == "***"
    assert carrier["register"]["password"] == "***" and carrier["register"]["expires"] == 3600
    assert "secret" not in reply.text


async def test_posted_outbound_trunk_is_stored_listed_and_dispatchable(api):
    reply = await api.client.post("/api/trunks/outbound", json=API_OUTBOUND)
    assert reply.status_code == 201, reply.text
    assert reply.json()["password"] == "***" and reply.json()["source"] == "api" and reply.json()["port"] == 5090
    listed = by_name((await api.client.get("/api/trunks")).json()["outbound"])
    assert listed["backup"]["source"] == "api" and listed["carrier"]["source"] == "config"
    # The store keeps the password sealed (secrets at rest); calls through the trunk get the real one.
    rows = await api.server.store.list_trunks("outbound")
    assert [r["id"] for r in rows] == ["backup"] and rows[0]["config"]["password"].startswith("enc:v1:")
    assert "p1" not in repr(rows[0]["config"]).replace(rows[0]["config"]["password"], "")
    request = parse_dispatch(dispatch_body("backup"), api.server.config, api.server.trunk_directory)
    assert request.trunk.password == "p1" and request.target_uri() == "sip:+15550102030@127.0.0.1:5090"
    assert request.caller_id == "+15550001111"
    # Config trunks still answer, with and without the directory.
    directory = api.server.trunk_directory
    assert parse_dispatch(dispatch_body("carrier"), api.server.config, directory).trunk.name == "carrier"
    with pytest.raises(DispatchError):
        parse_dispatch(dispatch_body("backup"), api.server.config)


async def test_posting_an_api_trunk_again_replaces_it(api):
    assert (await api.client.post("/api/trunks/outbound", json=API_OUTBOUND)).status_code == 201
    reply = await api.client.post("/api/trunks/outbound", json={**API_OUTBOUND, "port": 5070})
    assert reply.status_code == 200 and reply.json()["port"] == 5070
    assert api.server.trunk_directory.outbound("backup").port == 5070
    assert [r["config"]["port"] for r in await api.server.store.list_trunks("outbound")] == [5070]


@pytest.mark.parametrize("kind, name", [("outbound", "carrier"), ("inbound", "office"), ("inbound", "carrier")])
async def test_a_config_trunk_name_is_a_conflict(api, kind, name):
    body = {**(API_OUTBOUND if kind == "outbound" else API_INBOUND), "name": name}
    reply = await api.client.post(f"/api/trunks/{kind}", json=body)
    assert reply.status_code == 409 and "config file" in reply.json()["error"]
    assert await api.server.store.list_trunks() == []


async def test_one_name_cannot_be_both_an_inbound_and_an_outbound_api_trunk(api):
    assert (await api.client.post("/api/trunks/outbound", json=API_OUTBOUND)).status_code == 201
    reply = await api.client.post("/api/trunks/inbound", json={**API_INBOUND, "name": "backup"})
    assert reply.status_code == 409 and "outbound trunk" in reply.json()["error"]


@pytest.mark.parametrize("kind, body, field, reason", [
    ("outbound", [API_OUTBOUND], "body", "must be a JSON object"),
    ("outbound", {**API_OUTBOUND, "port": 70000}, "port", "less than or equal to 65535"),
    ("outbound", {**API_OUTBOUND, "transport": "sctp"}, "transport", "'udp', 'tcp' or 'tls'"),
    ("outbound", {"name": "x"}, "host", "Field required"),
    ("outbound", {**API_OUTBOUND, "hots": "typo"}, "hots", "unknown key"),
    ("outbound", {**API_OUTBOUND, "username": None, "password": None, "register": {}},
     "register.username", "needed to register"),
    ("outbound", {**API_OUTBOUND, "register": {"aor": "mailto:x"}}, "register.aor", "must be a sip: or sips: URI"),
    ("inbound", {**API_INBOUND, "allowed_cidrs": ["10.0.0/8x"]}, "allowed_cidrs", "is not an IP network"),
    ("inbound", {**API_INBOUND, "auth": {"username": "u"}}, "auth.password", "Field required"),
    ("inbound", {**API_INBOUND, "auth": {"username": "u", "password": "p", "algorithms": ["SHA-1"]}},
     "auth.algorithms", "algorithms must be from"),
    ("inbound", {**API_INBOUND, "flow": "nowhere"}, "flow", "unknown flow 'nowhere'"),
    ("inbound", {**API_INBOUND, "routes": {"+1555": "nowhere"}}, "routes.+1555", "unknown flow 'nowhere'"),
])
async def test_bad_bodies_get_422_naming_the_field(api, kind, body, field, reason):
    reply = await api.client.post(f"/api/trunks/{kind}", json=body)
    assert reply.status_code == 422, reply.text
    answer = reply.json()
    assert answer["error"] == "invalid trunk" and answer["field"] == field and reason in answer["reason"], answer
    assert await api.server.store.list_trunks() == []


async def test_a_body_that_is_not_json_is_422(api):
    reply = await api.client.post("/api/trunks/outbound", content=b"{not json",
                                  headers={"Content-Type": "application/json"})
    assert reply.status_code == 422 and reply.json()["field"] == "body"


@pytest.mark.parametrize("trunk, reason", [
    ({**API_OUTBOUND, "port": 70000}, "less than or equal to 65535"),
    ({**API_OUTBOUND, "username": None, "password": None, "register": {}}, "needed to register"),
])
async def test_the_api_gives_the_reason_the_config_file_would(api, trunk, reason):
    with pytest.raises(SourceError) as from_file:
        config_from(Located({"outbound_trunks": [trunk]}, {}, "inline.yaml"))
    assert reason in str(from_file.value)
    reply = await api.client.post("/api/trunks/outbound", json=trunk)
    assert reply.json()["reason"] in str(from_file.value)


async def test_delete(api):
    assert (await api.client.post("/api/trunks/outbound", json=API_OUTBOUND)).status_code == 201
    reply = await api.client.delete("/api/trunks/outbound/backup")
    assert reply.status_code == 204 and reply.content == b""
    assert await api.server.store.list_trunks() == []
    assert "backup" not in by_name((await api.client.get("/api/trunks")).json()["outbound"])
    with pytest.raises(DispatchError, match="unknown trunk 'backup'"):
        parse_dispatch(dispatch_body("backup"), api.server.config, api.server.trunk_directory)
    assert (await api.client.delete("/api/trunks/outbound/backup")).status_code == 404
    assert (await api.client.delete("/api/trunks/sideways/backup")).status_code == 404
    config_owned = await api.client.delete("/api/trunks/outbound/carrier")
    assert config_owned.status_code == 409 and "config file" in config_owned.json()["error"]
    assert api.server.trunk_directory.outbound("carrier") is not None


async def test_inbound_api_trunk_takes_effect_for_new_calls(api):
    server = api.server
    table = server.calls.trunks  # the table the call manager and the UA's auth hook consult
    assert [t.name for t in table.trunks] == ["office"]
    assert server.router.flow_for("twilio", "+15550109999") == DEFAULT_FLOW  # unknown trunk: the default flow
    assert (await api.client.post("/api/trunks/inbound", json=API_INBOUND)).status_code == 201
    assert [t.name for t in table.trunks] == ["office", "twilio"]  # config trunks match first
    policy = table.trunks[1]
    assert policy.matches("+15550109999", "127.0.0.1") and not policy.matches("+15550109999", "192.0.2.1")
    assert policy.auth() is not None and policy.username == "tw" and policy.password == "tw-secret"
    assert server.router.flow_for("twilio", "+15550109999") == "tone"  # the trunk's own flow
    # Posting the same trunk again keeps its digest secret: nonces already handed out stay valid.
    assert (await api.client.post("/api/trunks/inbound", json=API_INBOUND)).status_code == 200
    assert table.trunks[1] is policy
    assert (await api.client.delete("/api/trunks/inbound/twilio")).status_code == 204
    assert [t.name for t in table.trunks] == ["office"]
    assert server.router.flow_for("twilio", "+15550109999") == DEFAULT_FLOW


async def test_api_trunks_survive_a_restart(tmp_path):
    data_dir = tmp_path / "data"
    first = await open_server(data_dir)
    assert (await first.client.post("/api/trunks/outbound", json=API_OUTBOUND)).status_code == 201
    assert (await first.client.post("/api/trunks/inbound", json=API_INBOUND)).status_code == 201
    await close_server(first)

    second = await open_server(data_dir)
    try:
        listing = (await second.client.get("/api/trunks")).json()
        assert by_name(listing["outbound"])["backup"]["source"] == "api"
        assert by_name(listing["inbound"])["twilio"]["source"] == "api"
        assert [t.name for t in second.server.calls.trunks.trunks] == ["office", "twilio"]
        assert second.server.router.flow_for("twilio", "+15550109999") == "tone"
        assert parse_dispatch(dispatch_body("backup"), second.server.config,
                              second.server.trunk_directory).trunk.port == 5090
        # Registrations read the merged trunk lists.
        assert [t.name for t in second.server.trunk_directory.config_view().outbound_trunks] == ["carrier", "backup"]
    finally:
        await close_server(second)


async def test_stored_trunks_the_config_now_owns_or_that_no_longer_validate_are_skipped(tmp_path):
    data_dir = tmp_path / "data"
    store = CallStore.open(None, data_dir)
    store.save_trunk("outbound", "carrier", {**API_OUTBOUND, "name": "carrier", "port": 1})  # the file took the name
    store.save_trunk("outbound", "broken", {"name": "broken", "port": "many"})
    store.save_trunk("inbound", "gone", {**API_INBOUND, "name": "gone", "flow": "removed-flow"})
    store.save_trunk("outbound", "backup", API_OUTBOUND)
    store.close()
    running = await open_server(data_dir)
    try:
        listing = (await running.client.get("/api/trunks")).json()
        outbound = by_name(listing["outbound"])
        assert sorted(outbound) == ["backup", "carrier"] and outbound["carrier"]["source"] == "config"
        carrier = running.server.trunk_directory.outbound("carrier")
        assert carrier is not None and carrier.port == 5060  # the config's, not the stored one
        assert sorted(by_name(listing["inbound"])) == ["office"]
    finally:
        await close_server(running)


async def test_the_trunk_api_needs_the_bearer_token(tmp_path):
    token = "trunk-api-token-0123456789"
    running = await open_server(tmp_path / "data", {"api": {"token": token}}, authorised=False)
    try:
        assert (await running.client.get("/api/trunks")).status_code == 401
        assert (await running.client.post("/api/trunks/outbound", json=API_OUTBOUND)).status_code == 401
        assert (await running.client.delete("/api/trunks/outbound/carrier")).status_code == 401
        assert running.server.store is not None and await running.server.store.list_trunks() == []
        reply = await running.client.post("/api/trunks/outbound", json=API_OUTBOUND,
                                          headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 201
    finally:
        await close_server(running)


async def test_the_registration_status_route_still_answers(api):
    reply = await api.client.get("/api/trunks/registrations")
    assert reply.status_code == 200 and reply.json() == {"registrations": []}
