"""The HTTP API's guard, piece by piece: names (Host/Origin), JSON bodies, the token file, connection counting."""

from __future__ import annotations

import os
import stat
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from callbridge.app.auth import TOKEN_FILE, load_or_create_token, token_matches
from callbridge.app.httpconn import ConnectionCounter, ConnectionLimits, client_key
from callbridge.app.httpguard import ApiGuard, GuardPolicy
from callbridge.app.jsonbody import JsonTooComplex, NotJson, check_structure, decode, decode_json, json_body
from callbridge.app.origins import HostPolicy, parse_authority, parse_origin

TOKEN = "unit-test-token-0123456789abcdef"
LOCAL = ("127.0.0.1", 8080)


@pytest.mark.parametrize("text, parsed", [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("LOCALHOST", ("localhost", None)),
    ("localhost.:8080", ("localhost", 8080)),
    ("[::1]:8080", ("::1", 8080)),
    ("[0:0::1]", ("::1", None)),
    ("api.example.com:443", ("api.example.com", 443)),
    ("::1", None), ("[::1", None), ("[::1]x", None), ("host:99999", None), ("host:80a", None),
    ("", None), ("a b", None), ("evil.example:8080@127.0.0.1", None), ("[127.0.0.1]", None),
])
def test_parse_authority(text, parsed):
    assert parse_authority(text) == parsed


@pytest.mark.parametrize("text, parsed", [
    ("http://127.0.0.1:8080", ("http", "127.0.0.1", 8080)),
    ("https://Dash.Example", ("https", "dash.example", 443)),
    ("null", None), ("file://", None), ("ftp://x", None), ("http://x/path", None), ("http://u@x", None),
])
def test_parse_origin(text, parsed):
    assert parse_origin(text) == parsed


def test_loopback_server_answers_for_its_own_names_and_port_only():
    policy = HostPolicy.for_server("127.0.0.1")
    for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080"):
        assert policy.host_allowed(host, LOCAL), host
    for host in ("evil.example:8080", "127.0.0.1:9999", "127.0.0.1", "localhost", None, "127.0.0.1.evil.example:8080"):
        assert not policy.host_allowed(host, LOCAL), host
    assert policy.origin_allowed("http://localhost:8080", LOCAL)
    for origin in ("http://evil.example", "http://evil.example:8080", "null", "https://127.0.0.1:8080x"):
        assert not policy.origin_allowed(origin, LOCAL), origin


def test_public_host_the_arrival_address_and_configured_extras():
    policy = HostPolicy.for_server("0.0.0.0", "pbx.example", ["api.example.com", "proxy.internal:8443"],
                                   ["https://dash.example"])
    local = ("192.0.2.10", 8080)
    assert policy.host_allowed("pbx.example:8080", local)
    assert policy.host_allowed("192.0.2.10:8080", local)  # what a probe sends
    assert policy.host_allowed("localhost:8080", local)  # a wildcard bind listens on loopback too
    assert policy.host_allowed("api.example.com", local) and policy.host_allowed("api.example.com:1", local)
    assert policy.host_allowed("proxy.internal:8443", local) and not policy.host_allowed("proxy.internal", local)
    assert not policy.host_allowed("192.0.2.11:8080", local)
    assert policy.origin_allowed("https://dash.example", local)
    assert policy.origin_allowed("https://dash.example:443", local)
    assert not policy.origin_allowed("http://dash.example", local)
    with pytest.raises(ValueError):
        HostPolicy.for_server("127.0.0.1", allowed_hosts=["[::1"])


def test_a_server_on_a_public_address_does_not_answer_to_loopback_names():
    policy = HostPolicy.for_server("192.0.2.10")
    assert not policy.host_allowed("localhost:8080", ("192.0.2.10", 8080))
    assert policy.host_allowed("192.0.2.10:8080", ("192.0.2.10", 8080))


def refused(body: bytes) -> str | None:
    try:
        check_structure(body)
    except JsonTooComplex as exc:
        return str(exc)
    return None


def test_structure_scan_counts_nesting_and_values_not_what_is_in_strings():
    assert refused(b"[" * 200_000) == "JSON nested deeper than 64 levels"
    assert refused(b"[" * 65 + b"]" * 65) and refused(b"[" * 64 + b"]" * 64) is None
    assert refused(b'{"a": "' + b"[" * 1000 + b'"}') is None
    assert refused(b'["\\"' + b"[" * 100 + b'"]') is None  # an escaped quote stays in the string
    assert refused(b'["' + b"," * 500_000 + b'"]') is None
    assert refused(b"[" + b"1," * 19_998 + b"1]") is None
    assert refused(b"[" + b"1," * 20_000 + b"1]") == "JSON with more than 20000 values"
    assert refused(b"[" + b"[]," * 20_000 + b"[]]") == "JSON with more than 20000 values"


def test_an_unterminated_string_full_of_quotes_is_scanned_in_linear_time():
    body = b'[["' + b'\\"' * 400_000 + b"[" * 100
    started = time.perf_counter()
    assert refused(body) is None
    assert time.perf_counter() - started < 0.5
    with pytest.raises(NotJson):
        decode(body)


def test_decode():
    assert decode(b'{"to": "sip:a@b", "n": [1, 2.5, true, null]}') == {"to": "sip:a@b", "n": [1, 2.5, True, None]}
    with pytest.raises(JsonTooComplex):
        decode(b"[" * 200_000)
    for bad in (b"{", b"\xff\xfe", b"[1,]"):
        with pytest.raises(NotJson):
            decode(bad)


async def test_large_bodies_decode_in_the_worker_thread(monkeypatch):
    import threading

    from callbridge.app import jsonbody

    seen, original = [], jsonbody.check_structure

    def spy(data):
        seen.append(threading.current_thread().name)
        return original(data)

    monkeypatch.setattr(jsonbody, "check_structure", spy)
    body = b'{"k": [' + b",".join(b"1" for _ in range(5000)) + b"]}"
    assert (await decode_json(body))["k"][-1] == 1
    assert await decode_json(b"[1]") == [1]
    assert seen[0].startswith("json-decode") and seen[1] == threading.current_thread().name


def test_token_file_is_created_0600_then_reused(tmp_path, capsys):
    first = load_or_create_token(tmp_path)
    path = tmp_path / TOKEN_FILE
    assert first.created and first.path == path and len(first.value) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    printed = capsys.readouterr().out
    assert first.value in printed and str(path) in printed
    second = load_or_create_token(tmp_path)
    assert second.value == first.value and not second.created
    assert first.value not in capsys.readouterr().out  # announced once only
    os.chmod(path, 0o644)
    assert load_or_create_token(tmp_path).value == first.value
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("short\n")
    with pytest.raises(OSError, match="no usable API token"):
        load_or_create_token(tmp_path)


def test_token_comparison():
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(None, TOKEN) and not token_matches(TOKEN[:-1], TOKEN) and not token_matches("é", TOKEN)


def test_connections_are_counted_per_client_with_ipv6_by_64():
    assert client_key(("2001:db8::1", 5, 0, 0)) == client_key(("2001:db8::ffff", 6, 0, 0)) == "2001:db8::/64"
    assert client_key(("::ffff:192.0.2.1", 5, 0, 0)) == "192.0.2.1"
    counter = ConnectionCounter(ConnectionLimits(per_client=2, total=3))
    assert counter.admit("a") and counter.admit("a") and not counter.admit("a")
    assert counter.admit("b") and not counter.admit("c")  # total reached
    counter.release("a")
    assert counter.admit("c") and counter.refused == 2


def guarded_client(max_body: int = 1024 * 1024, **kwargs) -> httpx.AsyncClient:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"body": await json_body(request)})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/api/echo", echo, methods=["GET", "POST", "DELETE"]), Route("/healthz", health)])
    guard = ApiGuard(app, GuardPolicy(token=TOKEN, hosts=HostPolicy.for_server("127.0.0.1"), max_body_bytes=max_body))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://127.0.0.1:8080", **kwargs)


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_guard_order_and_answers():
    async with guarded_client() as client:
        assert (await client.get("/healthz", headers={"Host": "evil.example"})).status_code == 200
        reply = await client.get("/api/echo")
        assert reply.status_code == 401 and reply.headers["www-authenticate"] == 'Bearer realm="callbridge"'
        assert (await client.get("/api/echo", headers={"Authorization": "Bearer nope"})).status_code == 401
        assert (await client.get("/api/echo", headers=AUTH)).json() == {"body": None}
        assert (await client.get("/api/echo", headers={**AUTH, "Host": "evil.example:8080"})).status_code == 421
        csrf = await client.post("/api/echo", content=b'{"to": "x"}', headers={
            **AUTH, "Content-Type": "text/plain", "Origin": "http://evil.example"})
        assert csrf.status_code == 403 and csrf.headers["connection"] == "close"
        assert (await client.post("/api/echo", content=b'{"a": 1}',
                                  headers={**AUTH, "Content-Type": "text/plain"})).status_code == 415
        reply = await client.post("/api/echo", json={"a": 1}, headers={**AUTH, "Origin": "http://localhost:8080"})
        assert reply.status_code == 200 and reply.json() == {"body": {"a": 1}}
        reply = await client.post("/api/echo", content=b"[" * 200_000,
                                  headers={**AUTH, "Content-Type": "application/json"})
        assert reply.status_code == 400 and reply.json() == {"error": "JSON nested deeper than 64 levels"}
        reply = await client.post("/api/echo", content=b"{nope", headers={**AUTH, "Content-Type": "application/json"})
        assert reply.json() == {"body": None}  # handlers answer 422 for a body that is not an object
        assert (await client.delete("/api/echo", headers=AUTH)).status_code == 200  # no body, no type needed


async def test_bodies_over_the_limit_get_413_by_length_or_while_chunked():
    async with guarded_client(max_body=2048) as client:
        reply = await client.post("/api/echo", content=b"[" + b"1," * 2000 + b"1]",
                                  headers={**AUTH, "Content-Type": "application/json"})
        assert reply.status_code == 413

        async def chunks():
            for _ in range(100):
                yield b" " * 100

        reply = await client.post("/api/echo", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
        assert reply.request.headers["transfer-encoding"] == "chunked" and reply.status_code == 413
        small = await client.post("/api/echo", content=b"[" + b"1," * 500 + b"1]",
                                  headers={**AUTH, "Content-Type": "application/json"})
        assert small.status_code == 200 and len(small.json()["body"]) == 501
