"""The console's sign-in against a real ``callbridge serve``: the session cookie, CSRF, and brute force.

What must hold: ``POST /api/session`` with the API token sets an HttpOnly, SameSite=Strict cookie that
the API then accepts in place of the bearer token; a cookie request that writes must carry our Origin;
a wrong token is 401 and an address that keeps guessing gets 429 (others do not); the API without
token or cookie is still 401; a cookie outlives a restart with the same token and dies with the token.
"""

from __future__ import annotations

import http.client
import json

import pytest

from callbridge.app.console.login import MAX_FAILURES

pytestmark = pytest.mark.interop

TOKEN = "interop-console-token-0123456789"
CONFIG = f"api:\n  token: {TOKEN}\n  session_hours: 2\n"
GUESSES = 30
# The test's "attacker" uses another loopback address than its honest client (127.0.0.1).
ATTACKER = "127.0.0.2"


def request(server, method: str, path: str, *, body: object = None, headers: dict | None = None,
            source: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10, source_address=(source, 0))
    sent = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    try:
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def sign_in(server, token: str = TOKEN, source: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    return request(server, "POST", "/api/session", body={"token": token}, source=source)


def session_cookie(headers: dict[str, str]) -> str:
    """``callbridge_session=...`` from a Set-Cookie, as a browser would send it back."""
    return headers["set-cookie"].split(";", 1)[0]


def origin(server) -> dict[str, str]:
    return {"Origin": f"http://127.0.0.1:{server.http_port}"}


def test_sign_in_sets_a_strict_httponly_cookie_that_the_api_accepts(server_factory):
    server = server_factory(CONFIG)
    status, headers, _ = sign_in(server)
    assert status == 204
    attributes = [part.strip() for part in headers["set-cookie"].split(";")]
    assert attributes[0].startswith("callbridge_session=v1.")
    assert set(attributes[1:]) == {"Max-Age=7200", "Path=/", "HttpOnly", "SameSite=Strict"}  # no Secure on http
    assert headers["cache-control"] == "no-store"
    cookie = {"Cookie": session_cookie(headers)}
    status, _, body = request(server, "GET", "/api/calls", headers=cookie)
    assert status == 200 and json.loads(body)["calls"] == []
    status, _, body = request(server, "GET", "/api/session", headers=cookie)
    state = json.loads(body)
    assert status == 200 and state["authenticated"] is True and state["via"] == "session"
    assert state["expires_at"] > 0
    # A write by cookie needs our Origin (CSRF); with it, the request reaches the handler (404: no such call).
    status, _, body = request(server, "POST", "/api/calls/nope/hangup", body={}, headers=cookie)
    assert status == 403 and b"Origin" in body
    status, _, body = request(server, "POST", "/api/calls/nope/hangup", body={},
                              headers={**cookie, "Origin": "http://evil.example"})
    assert status == 403
    status, _, body = request(server, "POST", "/api/calls/nope/hangup", body={}, headers={**cookie, **origin(server)})
    assert status == 404 and json.loads(body) == {"error": "no such call"}
    # The bearer token keeps working as before, Origin or not.
    status, _, _ = request(server, "POST", "/api/calls/nope/hangup", body={},
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 404
    # Signing out clears the cookie in the browser.
    status, headers, _ = request(server, "DELETE", "/api/session", headers={**cookie, **origin(server)})
    assert status == 204 and headers["set-cookie"].startswith("callbridge_session=;") and "Max-Age=0" in \
        headers["set-cookie"]


def test_without_token_or_valid_cookie_the_api_is_401(server_factory):
    server = server_factory(CONFIG)
    for headers in ({}, {"Cookie": "callbridge_session=v1.9999999999.AAAAAAAAAAAAAAAAAAAAAA.forged"},
                    {"Cookie": "callbridge_session=" + "x" * 6000}, {"Authorization": "Bearer wrong"}):
        status, reply_headers, _ = request(server, "GET", "/api/calls", headers=headers)
        assert status == 401 and reply_headers["www-authenticate"].startswith("Bearer"), headers
        assert request(server, "GET", "/api/session", headers=headers)[0] == 401, headers
    status, _, body = sign_in(server, "wrong-token-0123456789")
    assert status == 401 and json.loads(body)["error"] == "wrong API token"
    status, _, _ = request(server, "GET", "/api/calls", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert request(server, "GET", "/login")[0] == 200  # the page itself needs no credentials
    assert request(server, "GET", "/login", headers={"Host": "evil.example"})[0] == 421  # but our Host
    assert request(server, "POST", "/api/session", body={"token": TOKEN}, headers={"Host": "evil.example"})[0] == 421
    raw = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    raw.request("POST", "/api/session", body=json.dumps({"token": TOKEN}), headers={"Content-Type": "text/plain"})
    assert raw.getresponse().status == 415  # a form-shaped body is refused, as on every route
    raw.close()


def test_guessing_tokens_gets_429_for_that_address_only(server_factory):
    server = server_factory(CONFIG)
    statuses = []
    for _ in range(GUESSES):
        status, headers, _ = sign_in(server, "guess-token-0123456789", source=ATTACKER)
        statuses.append(status)
    assert statuses == [401] * MAX_FAILURES + [429] * (GUESSES - MAX_FAILURES), statuses
    assert 1 <= int(headers["retry-after"]) <= 60
    # Throttled: even the right token is not checked from there (else the answers would still tell)...
    assert sign_in(server, source=ATTACKER)[0] == 429
    # ...while another address signs in at once.
    assert sign_in(server)[0] == 204
    log = server.log_path.read_text()
    logged = log.count("console sign-in with a wrong API token") + log.count("console sign-in refused")
    assert 1 <= logged <= 4, logged  # throttled logging, not one line per guess


def test_a_session_survives_a_restart_with_the_same_token_and_dies_with_a_new_one(server_factory):
    first = server_factory(CONFIG)
    cookie = {"Cookie": session_cookie(sign_in(first)[1])}
    same_token = server_factory(CONFIG)  # another process: a restart, or another worker of a cluster
    assert request(same_token, "GET", "/api/calls", headers=cookie)[0] == 200
    rotated = server_factory(CONFIG.replace(TOKEN, TOKEN + "-rotated"))
    assert request(rotated, "GET", "/api/calls", headers=cookie)[0] == 401
