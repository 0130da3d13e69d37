"""The REGISTER client against SIPp playing a registrar (RFC 3261 §10, digest auth §22).

registrar_auth.xml only succeeds when it received the challenged REGISTER, two
REGISTERs whose Authorization verifies against the password (nc 1, then 2 on
the refresh) and the expires=0 removal. The first tests drive the real asyncio
SIP endpoint in-process; the last runs ``callbridge serve`` with a config.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import httpx
import pytest
from starlette.applications import Starlette

from callbridge.app.config import Config
from callbridge.app.registrations import RegistrationManager, registration_routes, start_registrations
from callbridge.sip.endpoint import SipEndpoint
from callbridge.sip.useragent import UserAgent, UserAgentConfig

from .conftest import SCENARIOS, free_port, start_sipp

pytestmark = pytest.mark.interop

# Must match registrar_auth.xml's verifyauth.
USERNAME, PASSWORD = "trunkuser", "trunk-s3cret"
GRANTED_EXPIRES = 4  # what the scenario grants, whatever we ask
SIPP_BIND_SECONDS = 0.5
SIPP_EXIT_TIMEOUT = 20.0


def trunk_config(registrar_port: int, *, password: str = PASSWORD, expires: int = 60) -> Config:
    return Config.model_validate({"outbound_trunks": [{
        "name": "carrier", "host": "127.0.0.1", "port": registrar_port,
        "username": USERNAME, "password": password, "register": {"enabled": True, "expires": expires},
    }]})


def start_registrar(scenario: str, port: int, cwd) -> subprocess.Popen:
    sipp = start_sipp(["-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port), "-m", "1",
                       "-timeout", "20", "-timeout_error"], cwd=cwd)
    time.sleep(SIPP_BIND_SECONDS)
    return sipp


def finish_sipp(sipp: subprocess.Popen) -> tuple[int, str]:
    try:
        output, _ = sipp.communicate(timeout=SIPP_EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        sipp.kill()
        output, _ = sipp.communicate()
    return sipp.returncode, output


async def started_endpoint() -> SipEndpoint:
    endpoint = SipEndpoint(UserAgent(UserAgentConfig(host="127.0.0.1")), lambda event: None)
    await endpoint.start("127.0.0.1", udp_port=0, tcp_port=0)
    return endpoint


async def api_registrations(manager: RegistrationManager) -> list[dict]:
    app = Starlette(routes=registration_routes(lambda: manager))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.get("/api/trunks/registrations")
    assert response.status_code == 200
    return response.json()["registrations"]


async def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_registers_with_digest_refreshes_before_expiry_and_unregisters(tmp_path):
    port = free_port()
    sipp = start_registrar("registrar_auth.xml", port, tmp_path)
    endpoint = await started_endpoint()
    try:
        started = time.monotonic()
        manager = start_registrations(trunk_config(port), endpoint)
        registration = manager.registrations[0]
        # REGISTER, 401, authenticated REGISTER, 200 (4 s): the refresh is due at 2 s.
        await wait_until(lambda: registration.attempts >= 3 and registration.last_status == 200, 6.0, "the refresh")
        assert time.monotonic() - started < GRANTED_EXPIRES  # refreshed before the binding lapsed
        [record] = await api_registrations(manager)
        assert record["trunk"] == "carrier" and record["state"] == "registered"
        assert record["last_status"] == 200 and record["last_error"] is None
        assert 0 < record["expires_in"] <= GRANTED_EXPIRES  # granted by the registrar, not our 60
        assert record["expires_at"] == pytest.approx(time.time() + record["expires_in"], abs=1.0)
        await manager.close()
        [record] = await api_registrations(manager)
        assert record["state"] == "unregistered" and record["attempts"] == 4
    finally:
        await endpoint.close()
        returncode, output = finish_sipp(sipp)
    assert returncode == 0, output


async def test_wrong_password_is_refused_by_the_registrar(tmp_path):
    # The same scenario with the wrong password: proves verifyauth really checks it.
    port = free_port()
    sipp = start_registrar("registrar_auth.xml", port, tmp_path)
    endpoint = await started_endpoint()
    try:
        manager = start_registrations(trunk_config(port, password="not-the-password"), endpoint)
        registration = manager.registrations[0]
        await wait_until(lambda: registration.last_status == 403, 5.0, "the 403")
        [record] = await api_registrations(manager)
        assert record["state"] == "backoff" and record["last_error"] == "403 Forbidden"
        await manager.close(timeout=0.5)
    finally:
        await endpoint.close()
        returncode, output = finish_sipp(sipp)
    assert returncode != 0


async def test_forbidden_registrar_leaves_backoff_with_403(tmp_path):
    port = free_port()
    sipp = start_registrar("registrar_forbidden.xml", port, tmp_path)
    endpoint = await started_endpoint()
    try:
        manager = start_registrations(trunk_config(port), endpoint)
        registration = manager.registrations[0]
        await wait_until(lambda: registration.last_status is not None, 5.0, "the registrar's answer")
        [record] = await api_registrations(manager)
        assert record["state"] == "backoff" and record["last_status"] == 403
        assert record["expires_at"] is None and record["consecutive_failures"] == 1
        # RFC 5626 §4.5 flavour: the first retry waits 2.5–5 s.
        assert 2.0 <= record["next_attempt_at"] - time.time() <= 5.5
        await manager.close(timeout=0.5)
    finally:
        await endpoint.close()
        returncode, output = finish_sipp(sipp)
    assert returncode == 0, output


def test_server_registers_its_outbound_trunk(server_factory, tmp_path):
    """Needs the server wiring (start_registrations in Server.start, close in stop, the route mounted)."""
    port = free_port()
    sipp = start_registrar("registrar_auth.xml", port, tmp_path)
    try:
        server = server_factory(f"""
outbound_trunks:
  - name: carrier
    host: 127.0.0.1
    port: {port}
    username: {USERNAME}
    password: {PASSWORD}
    register: {{enabled: true, expires: 60}}
""")
        records = server.wait_for(lambda: [r for r in server.get("/api/trunks/registrations")["registrations"]
                                           if r["attempts"] >= 3 and r["last_status"] == 200], timeout=8.0,
                                  what="a refreshed registration")
        assert records[0]["state"] == "registered" and 0 < records[0]["expires_in"] <= GRANTED_EXPIRES
        logged = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith("{")]
        assert any(entry["msg"] == "trunk registered" and entry.get("trunk") == "carrier" for entry in logged)
        server.process.terminate()  # shutdown unregisters: the scenario's last step
        server.process.wait(timeout=10)
    finally:
        returncode, output = finish_sipp(sipp)
    assert returncode == 0, output
