"""The webhook outbox against a real HTTP receiver on 127.0.0.1 that checks signatures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time

import pytest

from callbridge.app.store import AsyncCallStore, CallStore
from callbridge.app.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    WebhookOutbox,
    backoff_delay,
    sign,
    verify,
)
from tests.support.postgres import database_url, postgres_cluster  # noqa: F401  (fixtures)

SECRET = "whsec_test_0123456789"
PAYLOAD = {"call_id": "c1", "status": "hangup", "caller": "+15550100001", "note": "Zoë", "duration_s": 61.25}
FAST_BACKOFF = (0.05, 0.2)
WAIT_S = 5.0


class Receiver:
    """A minimal HTTP/1.1 endpoint: answers each request with the next queued status (then 200)."""

    def __init__(self, statuses: list[int] | None = None, hang: bool = False) -> None:
        self.statuses = list(statuses or [])
        self.hang = hang
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._release = asyncio.Event()

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/calls"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
            request_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((request_line, headers, body))
            if self.hang:
                await self._release.wait()
                return
            status = self.statuses.pop(0) if self.statuses else 200
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()

    def valid_signatures(self) -> list[bool]:
        return [verify(SECRET, headers.get(SIGNATURE_HEADER.lower(), ""), body) for _, headers, body in self.requests]


@contextlib.asynccontextmanager
async def receiving(**options):
    receiver = Receiver(**options)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@contextlib.asynccontextmanager
async def running(outbox: WebhookOutbox):
    task = asyncio.create_task(outbox.run())
    try:
        yield task
    finally:
        await outbox.close()
        assert task.done() and not task.cancelled() and task.exception() is None


async def eventually(check, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
async def store(tmp_path):
    opened = AsyncCallStore(CallStore.open(None, tmp_path))
    yield opened
    await opened.close()


def outbox_for(store: AsyncCallStore, **options) -> WebhookOutbox:
    options.setdefault("secret", SECRET)
    options.setdefault("backoff_s", FAST_BACKOFF)
    return WebhookOutbox(store, **options)


def row_where(store: AsyncCallStore, delivery_id: int, condition):
    async def check():
        row = await store.get_outbox(delivery_id)
        return row if condition(row) else None
    return check


# -- signing -------------------------------------------------------------------

def test_sign_and_verify():
    body = json.dumps(PAYLOAD).encode()
    header = sign(SECRET, 1718000000, body)
    assert header.startswith("t=1718000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify(SECRET, header, body, now=1718000000)
    assert verify(SECRET, header, body, now=1718000000 + 300)
    assert not verify(SECRET, header, body, now=1718000000 + 301)  # replayed too late
    assert not verify(SECRET, header, body, now=1718000000 - 301)
    assert not verify("other secret", header, body, now=1718000000)
    assert not verify(SECRET, header, body + b" ", now=1718000000)
    # The timestamp is signed too: moving it breaks the signature.
    assert not verify(SECRET, header.replace("t=1718000000", "t=1718000001"), body, now=1718000000)


def test_verify_accepts_any_listed_signature_and_never_raises_on_junk():
    body = b"{}"
    good = sign(SECRET, 1000, body).split(",")[1]
    assert verify(SECRET, f"t=1000,v1={'0' * 64},{good}", body, now=1000)  # secret rotation
    for junk in ["", "garbage", "t=1000", good, "t=abc," + good, "t=,v1=", "t=1000,v1=zz", ",,,",
                 "t=1000,v0=" + "0" * 64]:
        assert verify(SECRET, junk, body, now=1000) is False


def test_backoff_grows_exponentially_with_jitter_and_is_capped():
    base, cap = 0.5, 60.0
    assert [backoff_delay(n, base, cap, rand=lambda: 1.0) for n in range(1, 5)] == [0.5, 1.0, 2.0, 4.0]
    assert [backoff_delay(n, base, cap, rand=lambda: 0.0) for n in range(1, 5)] == [0.25, 0.5, 1.0, 2.0]
    for attempts in (1, 8, 9, 50, 10_000):
        step = min(cap, base * 2 ** (min(attempts, 100) - 1))
        for _ in range(50):
            assert step / 2 <= backoff_delay(attempts, base, cap) <= min(step, cap)
    assert len({backoff_delay(3, base, cap) for _ in range(20)}) > 1  # jittered


def test_outbox_needs_the_async_store(tmp_path):
    plain = CallStore.open(None, tmp_path)
    try:
        with pytest.raises(TypeError, match="AsyncCallStore"):
            WebhookOutbox(plain, secret=SECRET)
    finally:
        plain.close()


# -- delivery ------------------------------------------------------------------

async def test_delivers_signed_json_once(database_url, tmp_path):  # noqa: F811 - pytest fixture
    store = AsyncCallStore(CallStore.open(database_url, tmp_path))
    outbox = outbox_for(store)
    try:
        async with receiving() as receiver, running(outbox):
            delivery_id = await outbox.enqueue(receiver.url, "call.ended", PAYLOAD)
            row = await eventually(row_where(store, delivery_id, lambda r: r["delivered_at"]), "delivered")
            request_line, headers, body = receiver.requests[0]
        assert request_line == "POST /hooks/calls HTTP/1.1"
        assert headers["content-type"] == "application/json"
        assert headers[EVENT_HEADER.lower()] == "call.ended"
        assert headers[DELIVERY_HEADER.lower()] == str(delivery_id)
        assert json.loads(body) == PAYLOAD
        assert verify(SECRET, headers[SIGNATURE_HEADER.lower()], body)
        assert not verify("wrong", headers[SIGNATURE_HEADER.lower()], body)
        assert (row["attempts"], row["last_error"], row["next_attempt_at"], row["failed_at"]) == (1, None, None, None)
        assert len(receiver.requests) == 1
    finally:
        await store.close()


async def test_no_secret_sends_no_signature(store):
    outbox = outbox_for(store, secret=None)
    async with receiving() as receiver, running(outbox):
        delivery_id = await outbox.enqueue(receiver.url, "call.started", {"a": 1})
        await eventually(row_where(store, delivery_id, lambda r: r["delivered_at"]), "delivered")
    assert SIGNATURE_HEADER.lower() not in receiver.requests[0][1]


async def test_receiver_down_at_first_gets_it_when_it_comes_up(store):
    port = free_port()
    outbox = outbox_for(store)
    async with running(outbox):
        delivery_id = await outbox.enqueue(f"http://127.0.0.1:{port}/hook", "call.ended", PAYLOAD)
        row = await eventually(row_where(store, delivery_id, lambda r: r["attempts"] >= 2), "two failed attempts")
        assert row["last_error"].startswith("ConnectError") and row["delivered_at"] is None
        receiver = Receiver()
        await receiver.start(port)
        try:
            row = await eventually(row_where(store, delivery_id, lambda r: r["delivered_at"]), "delivered")
        finally:
            await receiver.stop()
    assert len(receiver.requests) == 1 and receiver.valid_signatures() == [True]
    assert row["attempts"] >= 3 and row["failed_at"] is None


async def test_server_errors_are_retried_each_attempt_signed_afresh(store):
    outbox = outbox_for(store)
    async with receiving(statuses=[503, 500]) as receiver, running(outbox):
        delivery_id = await outbox.enqueue(receiver.url, "call.ended", PAYLOAD)
        row = await eventually(row_where(store, delivery_id, lambda r: r["delivered_at"]), "delivered")
    assert row["attempts"] == 3 and row["last_error"] == "HTTP 500"
    assert [h[DELIVERY_HEADER.lower()] for _, h, _ in receiver.requests] == [str(delivery_id)] * 3
    assert receiver.valid_signatures() == [True, True, True]


async def test_gives_up_after_max_attempts_and_keeps_the_row(store):
    # Driven one pass at a time (no run loop) so every attempt's row can be checked.
    outbox = outbox_for(store, max_attempts=3)
    try:
        async with receiving(statuses=[500] * 10) as receiver:
            delivery_id = await outbox.enqueue(receiver.url, "call.ended", PAYLOAD)
            for attempt in (1, 2):
                before = time.time()
                assert await outbox.deliver_due() == 1
                row = await store.get_outbox(delivery_id)
                assert (row["attempts"], row["last_error"], row["failed_at"]) == (attempt, "HTTP 500", None)
                # Exponential with equal jitter: between half a step and a step, never past the cap.
                step = min(FAST_BACKOFF[1], FAST_BACKOFF[0] * 2 ** (attempt - 1))
                assert step / 2 <= row["next_attempt_at"] - before <= step + (time.time() - before)
                assert await outbox.deliver_due() == 0  # not due yet
                await asyncio.sleep(row["next_attempt_at"] - time.time() + 0.01)
            assert await outbox.deliver_due() == 1
            row = await store.get_outbox(delivery_id)
            assert await outbox.deliver_due() == 0
    finally:
        await outbox.close()
    assert len(receiver.requests) == 3
    assert (row["attempts"], row["last_error"], row["next_attempt_at"], row["delivered_at"]) == \
        (3, "HTTP 500", None, None)
    assert row["failed_at"] is not None
    assert await store.list_outbox(pending_only=True) == []
    assert await store.outbox_next_due() is None


async def test_bad_urls_are_recorded_and_the_loop_keeps_delivering(store):
    outbox = outbox_for(store)
    async with receiving() as receiver, running(outbox) as task:
        bad = [await outbox.enqueue(url, "call.ended", PAYLOAD) for url in ("not a url", "ftp://x/", "http://[::1")]
        good = await outbox.enqueue(receiver.url, "call.ended", PAYLOAD)
        await eventually(row_where(store, good, lambda r: r["delivered_at"]), "good one delivered")
        for delivery_id in bad:
            row = await eventually(row_where(store, delivery_id, lambda r: r["failed_at"]), "bad one failed")
            assert row["last_error"].startswith("bad url") and row["attempts"] == 1
        later = await outbox.enqueue(receiver.url, "call.started", {"n": 2})
        await eventually(row_where(store, later, lambda r: r["delivered_at"]), "later one delivered")
        assert not task.done()


async def test_timeout_is_an_error_that_is_retried(store):
    outbox = outbox_for(store, timeout_s=0.2)
    async with receiving(hang=True) as receiver, running(outbox):
        delivery_id = await outbox.enqueue(receiver.url, "call.ended", PAYLOAD)
        row = await eventually(row_where(store, delivery_id, lambda r: r["attempts"] >= 2), "two timed-out attempts")
    assert row["last_error"].startswith("timeout") and row["delivered_at"] is None
    assert len(receiver.requests) >= 2


async def test_enqueue_wakes_the_loop_before_the_next_poll(store):
    outbox = outbox_for(store, poll_interval_s=30.0)
    async with receiving() as receiver, running(outbox):
        await asyncio.sleep(0.1)  # the loop is now asleep until its next poll
        started = time.monotonic()
        delivery_id = await outbox.enqueue(receiver.url, "call.ended", PAYLOAD)
        await eventually(row_where(store, delivery_id, lambda r: r["delivered_at"]), "delivered", timeout=2.0)
        assert time.monotonic() - started < 2.0
        # A row added by other means is picked up on wake() too.
        other = await store.outbox_add(receiver.url, "call.started", {"n": 2})
        outbox.wake()
        await eventually(row_where(store, other, lambda r: r["delivered_at"]), "woken delivery", timeout=2.0)


async def test_pending_deliveries_survive_a_restart(database_url, tmp_path):  # noqa: F811 - pytest fixture
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    # Before the restart: one delivery attempted and failed, one never attempted.
    store = AsyncCallStore(CallStore.open(database_url, tmp_path))
    outbox = outbox_for(store, backoff_s=(0.2, 0.2))
    async with running(outbox):
        tried = await outbox.enqueue(url, "call.ended", {"n": 1})
        await eventually(row_where(store, tried, lambda r: r["attempts"] == 1 and r["last_error"]), "failed once")
    untried = await outbox.enqueue(url, "call.started", {"n": 2})  # the loop is stopped
    await store.close()

    store = AsyncCallStore(CallStore.open(database_url, tmp_path))
    try:
        assert {r["id"] for r in await store.list_outbox(pending_only=True)} == {tried, untried}
        receiver = Receiver()
        await receiver.start(port)
        try:
            async with running(outbox_for(store)):
                for delivery_id in (tried, untried):
                    await eventually(row_where(store, delivery_id, lambda r: r["delivered_at"]), "delivered")
        finally:
            await receiver.stop()
        delivered = sorted((h[DELIVERY_HEADER.lower()], json.loads(b)) for _, h, b in receiver.requests)
        assert delivered == sorted([(str(tried), {"n": 1}), (str(untried), {"n": 2})])
        assert receiver.valid_signatures() == [True, True]
    finally:
        await store.close()
