"""Webhooks through a durable outbox: at-least-once delivery, HMAC-signed.

enqueue() commits a webhook_outbox row before it returns; run() posts due rows
with httpx and records every attempt in the row. A row left pending by a crash
or a restart is simply due again. Receivers dedupe on X-Callbridge-Delivery.

Signature (the scheme Stripe uses for its webhooks):

    X-Callbridge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

The timestamp is signed along with the body, so a receiver that checks it
(verify's tolerance_s) rejects a captured request replayed later. Each attempt
is signed afresh with the time it is sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import httpx

from .store.callstore import AsyncCallStore

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Callbridge-Signature"
EVENT_HEADER = "X-Callbridge-Event"
DELIVERY_HEADER = "X-Callbridge-Delivery"
SIGNATURE_SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300
USER_AGENT = "callbridge-webhooks/1"

BATCH_SIZE = 32  # due rows taken per pass, posted concurrently
POLL_INTERVAL_S = 5.0  # also picks up rows another process added to a shared database
# A claimed row comes due again this long after its request's timeout, should
# this process die mid-request.
LEASE_MARGIN_S = 5.0
MAX_ERROR_CHARS = 500
# Shortest wait between passes that did not fill a batch: never a hot loop.
MIN_PASS_INTERVAL_S = 0.01
MAX_BACKOFF_EXPONENT = 60  # 2**60 steps is past any cap; keeps the float finite


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Callbridge-Signature value for body sent at timestamp."""
    return f"t={timestamp},{SIGNATURE_SCHEME}={_digest(secret, timestamp, body)}"


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify(secret: str, header: str, body: bytes, *, tolerance_s: int = DEFAULT_TOLERANCE_S,
           now: float | None = None) -> bool:
    """True if header signs body with secret and its timestamp is within tolerance_s of now.

    Never raises: a malformed header is just not valid. Several v1 entries are
    allowed (a sender rotating secrets signs with both); one match is enough.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in (header or "").split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == SIGNATURE_SCHEME:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = _digest(secret, timestamp, body)
    # Constant-time: a timing side channel must not reveal how much of a guess matched.
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def backoff_delay(attempts: int, base_s: float, cap_s: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the attempts-th failed attempt: exponential, capped, with jitter.

    "Equal jitter": half the step is fixed and half random, so retries of many
    rows that failed together spread out, yet none comes back almost at once.
    """
    step = min(cap_s, base_s * 2 ** min(max(attempts - 1, 0), MAX_BACKOFF_EXPONENT))
    return step / 2 + rand() * step / 2


def encode_body(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _error_text(error: str) -> str:
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 3] + "..."


class WebhookOutbox:
    """Durable webhook delivery on an AsyncCallStore (whose writer thread does every write).

    The outbox does not own the store: close the outbox first, then the store.
    wake() and enqueue() must be called from the event loop running run().
    """

    def __init__(self, store: AsyncCallStore, *, secret: str | None, timeout_s: float = 5.0,
                 max_attempts: int = 10, backoff_s: tuple[float, float] = (0.5, 60.0),
                 poll_interval_s: float = POLL_INTERVAL_S, client: httpx.AsyncClient | None = None) -> None:
        if not isinstance(store, AsyncCallStore):
            raise TypeError("WebhookOutbox needs an AsyncCallStore (its single writer thread makes every write)")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if timeout_s <= 0 or poll_interval_s <= 0:
            raise ValueError("timeout_s and poll_interval_s must be positive")
        base_s, cap_s = backoff_s
        if not 0 < base_s <= cap_s:
            raise ValueError("backoff_s must be (base, cap) with 0 < base <= cap")
        self._store = store
        self._secret = secret or None
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._backoff_s = (base_s, cap_s)
        self._poll_interval_s = poll_interval_s
        self._owns_client = client is None
        # No redirects: a signed body must not be re-posted to wherever a 3xx points.
        self._client = client or httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._wake = asyncio.Event()
        self._closing = False
        self._run_task: asyncio.Task[None] | None = None

    async def enqueue(self, url: str, event: str, payload: dict[str, Any]) -> int:
        """Persist a delivery (committed before this returns) and wake the loop; returns its id."""
        delivery_id = await self._store.outbox_add(url, event, payload, now=time.time())
        self.wake()
        return delivery_id

    def wake(self) -> None:
        """There is new work: deliver now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver due rows until close(). Errors are logged; the loop carries on."""
        self._run_task = asyncio.current_task()
        while not self._closing:
            self._wake.clear()  # before the pass: a wake() during it means another pass
            try:
                taken = await self.deliver_due()
                delay = 0.0 if taken >= BATCH_SIZE else max(MIN_PASS_INTERVAL_S, await self._until_next_due())
            except Exception:
                log.exception("webhook outbox: delivery pass failed; retrying in %.0f s", self._poll_interval_s)
                delay = self._poll_interval_s
            if self._closing:
                break
            if delay > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass

    async def _until_next_due(self) -> float:
        next_due = await self._store.outbox_next_due()
        if next_due is None:
            return self._poll_interval_s
        return min(self._poll_interval_s, max(0.0, next_due - time.time()))

    async def deliver_due(self) -> int:
        """One pass: attempt every row due now (up to BATCH_SIZE). Returns how many were taken."""
        rows = await self._store.outbox_due(time.time(), BATCH_SIZE)
        results = await asyncio.gather(*(self._attempt(row) for row in rows), return_exceptions=True)
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, Exception):
                log.error("webhook %s: recording the attempt failed: %r", row["id"], result)
        return len(rows)

    async def _attempt(self, row: dict[str, Any]) -> None:
        delivery_id = row["id"]
        lease_until = time.time() + self._timeout_s + LEASE_MARGIN_S
        if not await self._store.outbox_claim(delivery_id, row["next_attempt_at"], lease_until):
            return  # another worker took it
        attempts = row["attempts"] + 1
        error, permanent = await self._post(row)
        now = time.time()
        if error is None:
            await self._store.outbox_delivered(delivery_id, now)
            return
        error = _error_text(error)
        if permanent or attempts >= self._max_attempts:
            log.warning("webhook %s (%s to %s) given up after %d attempt(s): %s",
                        delivery_id, row["event"], row["url"], attempts, error)
            await self._store.outbox_failed(delivery_id, error, now)
            return
        delay = backoff_delay(attempts, *self._backoff_s)
        log.info("webhook %s attempt %d failed (%s); retry in %.1f s", delivery_id, attempts, error, delay)
        await self._store.outbox_retry(delivery_id, error, now + delay)

    async def _post(self, row: dict[str, Any]) -> tuple[str | None, bool]:
        """(None, _) when delivered, else (error, permanent)."""
        body = encode_body(row["payload"])
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: str(row["event"]),
            DELIVERY_HEADER: str(row["id"]),
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, int(time.time()), body)
        try:
            # stream(): the status is all we need; never read an arbitrarily large reply body.
            async with self._client.stream("POST", row["url"], content=body, headers=headers) as response:
                status = response.status_code
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            return f"bad url: {exc}", True  # retrying cannot fix the URL
        except httpx.TimeoutException as exc:
            return f"timeout: {type(exc).__name__}", False
        except Exception as exc:  # noqa: BLE001 - any other failure is recorded and retried later
            return f"{type(exc).__name__}: {exc}", False
        if 200 <= status < 300:
            return None, False
        return f"HTTP {status}", False

    async def close(self) -> None:
        """Stop run() (letting an attempt in flight finish, up to the timeout) and close the HTTP client."""
        self._closing = True
        self._wake.set()
        task = self._run_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            await asyncio.wait({task}, timeout=self._timeout_s + 1)
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if self._owns_client:
            await self._client.aclose()
