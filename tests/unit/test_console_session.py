"""The console's signed session cookies, the sign-in throttle, and the guard accepting a cookie."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from callbridge.app.console.login import LoginThrottle, session_routes
from callbridge.app.console.session import (CLOCK_SKEW_S, COOKIE_NAME, MAX_VALUE_CHARS, cookie_values, issue,
                                            session_key, verify)
from callbridge.app.httpguard import ApiGuard, GuardPolicy
from callbridge.app.origins import HostPolicy

TOKEN = "unit-test-token-0123456789abcdef"
KEY = session_key(TOKEN)
NOW = 1_700_000_000.0
HOUR = 3600
ORIGIN = {"Origin": "http://127.0.0.1:8080"}


def test_a_fresh_session_verifies_until_it_expires():
    session = issue(KEY, NOW, HOUR)
    assert session.expires_at == int(NOW) + HOUR
    assert verify(KEY, session.value, NOW, HOUR) == session.expires_at
    assert verify(KEY, session.value, NOW + HOUR - 1, HOUR) == session.expires_at
    assert verify(KEY, session.value, NOW + HOUR, HOUR) is None  # expired
    assert issue(KEY, NOW, HOUR).value != session.value  # a nonce each: no two sessions alike


def test_tampered_other_token_and_future_dated_sessions_are_refused():
    value = issue(KEY, NOW, HOUR).value
    version, expires, nonce, mac = value.split(".")
    later = f"{version}.{int(expires) + 3600}.{nonce}.{mac}"  # a longer life, same MAC
    assert verify(KEY, later, NOW, 10 * HOUR) is None
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    assert verify(KEY, f"{version}.{expires}.{nonce}.{flipped}", NOW, HOUR) is None
    assert verify(session_key(TOKEN + "x"), value, NOW, HOUR) is None  # the token rotated
    # Signed by us, but expiring further ahead than a session may last now (api.session_hours lowered).
    long_lived = issue(KEY, NOW, 48 * HOUR).value
    assert verify(KEY, long_lived, NOW, 12 * HOUR) is None
    assert verify(KEY, issue(KEY, NOW + CLOCK_SKEW_S - 1, HOUR).value, NOW, HOUR) is not None  # a clock a bit ahead


@pytest.mark.parametrize("value", [
    "", "v1", "v1...", "v2.1.AAAA.BBBB", "v1.abc.AAAA.BBBB", "v1.1700003600.!!!!.BBBB",
    "v1.1700003600.AAAA.BBBB",  # wrong sizes
    "v1." + "9" * 13 + ".AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "x" * 10_000, "v1.1700003600." + "A" * MAX_VALUE_CHARS + ".B",
])
def test_malformed_and_oversized_values_are_refused(value):
    assert verify(KEY, value, NOW, HOUR) is None


def cookie(value: str) -> list[tuple[bytes, bytes]]:
    return [(b"cookie", value.encode("latin-1"))]


def test_cookie_parsing_is_bounded_and_never_raises():
    assert cookie_values(cookie(f"a=1; {COOKIE_NAME}=v1.x; b=2")) == ["v1.x"]
    assert cookie_values(cookie(f'{COOKIE_NAME}="quoted"')) == ["quoted"]
    assert cookie_values([(b"cookie", b"a=1"), (b"Cookie", f"{COOKIE_NAME}=z".encode())]) == ["z"]
    assert cookie_values(cookie("garbage;;;==;" + "\xff" * 50)) == []
    assert cookie_values(cookie(f"{COOKIE_NAME}=" + "a" * 9000)) == []  # huge: no session
    assert cookie_values(cookie("; ".join(f"c{i}=1" for i in range(100)) + f"; {COOKIE_NAME}=x")) == []  # many
    assert cookie_values(cookie("; ".join([f"{COOKIE_NAME}=x"] * 6))) == []  # our name repeated past reason
    assert cookie_values([]) == []


def test_throttle_blocks_an_address_after_max_failures_until_the_window_passes():
    throttle = LoginThrottle(max_failures=3, window_s=60, max_clients=2)
    for i in range(3):
        assert throttle.retry_after("a", NOW + i) is None
        throttle.failed("a", NOW + i)
    assert throttle.retry_after("a", NOW + 3) == 57
    assert throttle.retry_after("b", NOW + 3) is None  # another address is not affected
    assert throttle.retry_after("a", NOW + 60) is None  # the window has passed
    throttle.failed("a", NOW + 61)
    throttle.succeeded("a")
    assert len(throttle) == 0
    for client in ("c", "d", "e"):
        throttle.failed(client, NOW)
    assert len(throttle) == 2  # bounded: the oldest was forgotten


def guarded(clock: list[float], hours: float = 1.0) -> httpx.AsyncClient:
    async def calls(request: Request) -> JSONResponse:
        return JSONResponse({"calls": []})

    routes = [Route("/api/calls", calls, methods=["GET", "POST"]),
              *session_routes(TOKEN, hours, clock=lambda: clock[0])]
    guard = ApiGuard(Starlette(routes=routes), GuardPolicy(token=TOKEN, hosts=HostPolicy.for_server("127.0.0.1"),
                                                           session_lifetime_s=round(hours * 3600)),
                     clock=lambda: clock[0])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://127.0.0.1:8080")


async def test_the_guard_takes_a_session_cookie_with_origin_for_writes_and_until_it_expires():
    clock = [NOW]
    async with guarded(clock) as client:
        assert (await client.get("/api/session")).status_code == 401
        assert (await client.post("/api/session", json={"token": "wrong-token-0123456789"})).status_code == 401
        signed_in = await client.post("/api/session", json={"token": TOKEN}, headers=ORIGIN)
        assert signed_in.status_code == 204, signed_in.text
        assert client.cookies.get(COOKIE_NAME)
        assert (await client.get("/api/calls")).json() == {"calls": []}
        assert (await client.post("/api/calls", json={})).status_code == 403  # no Origin: CSRF refused
        assert (await client.post("/api/calls", json={}, headers={"Origin": "http://evil.example"})).status_code == 403
        assert (await client.post("/api/calls", json={}, headers=ORIGIN)).status_code == 200
        status = (await client.get("/api/session")).json()
        assert status == {"authenticated": True, "via": "session", "expires_at": int(NOW) + 3600}
        clock[0] = NOW + 3600
        assert (await client.get("/api/calls")).status_code == 401  # expired
        assert (await client.get("/api/session")).status_code == 401


async def test_sign_in_answers_422_for_a_body_without_a_token_and_sign_out_clears_the_cookie():
    async with guarded([NOW]) as client:
        for body in ({}, {"token": 5}, [TOKEN], {"token": ""}):
            assert (await client.post("/api/session", json=body)).status_code == 422, body
        text = await client.post("/api/session", content=TOKEN.encode(), headers={"Content-Type": "text/plain"})
        assert text.status_code == 415
        assert (await client.post("/api/session", json={"token": TOKEN})).status_code == 204
        out = await client.delete("/api/session")
        assert out.status_code == 204 and "Max-Age=0" in out.headers["set-cookie"]
        assert (await client.get("/api/calls")).status_code == 401
