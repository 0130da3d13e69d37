"""The http node against a real HTTP/1.1 server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest

from callbridge.ivr import FlowRunner, load_flow_text

from .test_flow_fakeio import FakeIO, run_with

ROUTES = {
    "/ok": (200, "application/json", json.dumps(
        {"name": "Ada", "account": {"tier": "gold", "open": True}, "orders": [7, 8], "bad key": "x"})),
    "/fail": (500, "application/json", '{"error": "boom"}'),
    "/text": (200, "text/plain", "hello"),
    "/list": (200, "application/json", "[1, 2]"),
}


class TinyHttpServer:
    """Just enough HTTP/1.1: one request per connection, canned replies."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *header_lines = head.split("\r\n")
            method, target, _ = request_line.split(" ")
            headers = dict(line.split(":", 1) for line in header_lines if line)
            headers = {name.lower(): value.strip() for name, value in headers.items()}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append({"method": method, "target": target, "headers": headers, "body": body})
            path = target.split("?")[0]
            if path == "/slow":
                await reader.read()  # never answer; wait for the client to give up
                return
            status, content_type, payload = ROUTES[path]
            data = payload.encode()
            writer.write(f"HTTP/1.1 {status} Whatever\r\nContent-Type: {content_type}\r\n"
                         f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


@pytest.fixture
async def server():
    http = TinyHttpServer()
    await http.start()
    yield http
    await http.stop()


def webhook_flow(url: str, *, into: str = "crm", timeout: float = 0.5):
    text = f"""
flow: hook
start: lookup
nodes:
  lookup:
    type: http
    method: POST
    url: "{url}"
    headers: {{X-Call: "{{{{ call_id }}}}"}}
    json: {{caller: "{{{{ caller.number }}}}", tags: [ivr, "{{{{ sip.x-reason }}}}"], count: 3, urgent: false}}
    timeout: {timeout}
    into: {into}
    next: ok
    on_error: failed
  ok: {{type: say, text: "Hello {{{{ crm.name }}}} {{{{ crm.account.tier }}}} {{{{ tier }}}}", next: end}}
  failed: {{type: say, text: Lookup failed, next: end}}
  end: {{type: hangup}}
"""
    return load_flow_text(text, "hook.yaml", agents=None, trunks=None)


async def run(flow, **kwargs):
    io = FakeIO(caller="15551230000", headers={"X-Reason": "billing"})
    runner = FlowRunner(flow, io, **kwargs)
    await run_with(runner, io)
    return runner, io


async def test_success_puts_the_reply_into_variables(server):
    flow = webhook_flow(f"http://127.0.0.1:{server.port}/ok?from={{{{ caller.number }}}}")
    runner, io = await run(flow)
    assert io.said == ["Hello Ada gold"]
    assert runner.variables["crm.account.open"] == "true"
    assert runner.variables["crm.orders"] == "[7,8]"
    assert "crm.bad key" not in runner.variables
    [request] = server.requests
    assert request["method"] == "POST" and request["target"] == "/ok?from=15551230000"
    assert request["headers"]["x-call"] == "call-1"
    assert json.loads(request["body"]) == {"caller": "15551230000", "tags": ["ivr", "billing"], "count": 3,
                                           "urgent": False}
    [result] = io.recorded("webhook")
    assert result["ok"] is True and result["values"]["crm.name"] == "Ada"


async def test_reply_fields_can_be_mapped_to_variables(server):
    flow = webhook_flow(f"http://127.0.0.1:{server.port}/ok", into="{tier: account.tier, first: orders.0}")
    runner, io = await run(flow)
    assert io.said == ["Hello   gold"]
    assert runner.variables["first"] == "7"


@pytest.mark.parametrize(("path", "error"), [
    ("/fail", "HTTP 500"),
    ("/text", "reply is not JSON"),
    ("/list", "reply is not a JSON object"),
    ("/slow", "timed out after 0.3 s"),
])
async def test_failures_go_to_on_error(server, path, error):
    flow = webhook_flow(f"http://127.0.0.1:{server.port}{path}", timeout=0.3)
    runner, io = await run(flow)
    assert io.said == ["Lookup failed"]
    [result] = io.recorded("webhook")
    assert result == {"node": "lookup", "ok": False, "error": error}
    assert "crm.name" not in runner.variables


async def test_connection_refused_goes_to_on_error():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _, io = await run(webhook_flow(f"http://127.0.0.1:{port}/ok"))
    assert io.said == ["Lookup failed"]
    assert io.recorded("webhook")[0]["error"].startswith("request failed: ConnectError")


async def test_a_shared_client_is_used_when_given(server):
    async with httpx.AsyncClient(headers={"User-Agent": "callbridge-test"}) as client:
        _, io = await run(webhook_flow(f"http://127.0.0.1:{server.port}/ok"), http_client=client)
    assert io.said == ["Hello Ada gold"]
    assert server.requests[0]["headers"]["user-agent"] == "callbridge-test"
