"""One merged event stream: every worker's call events on every worker's ``GET /api/events``.

Out: a tap on the local EventBus (the journal publishes each event there once it is persisted) queues
this worker's own events, and one task publishes them to the Redis channel ``callbridge:events``
stamped with the worker they belong to and the worker that sent them. Bounded (sendqueue.py): a slow
or absent Redis costs dropped SSE lines elsewhere, never a call's time.

In: a subscriber puts other workers' events on the local bus, for SSE only: the owner's journal has
already stored them and sent their webhooks. Each message is checked (:func:`decode`); anything
malformed is dropped and logged, throttled.

Wire format, one JSON object per message::

    {"v": 1, "via": "w2", "worker": "w1", "call_id": "...", "type": "status", "at": 1718000000.5,
     "seq": 3, "data": {...}}

``worker`` runs the call; ``via`` sent the message (a survivor reporting a lost worker's calls sends
them under the lost worker's name). Messages a worker sent itself, or about its own calls, are ignored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..events import BusEvent, EventBus
from ..jsonbody import INLINE_DECODE_BYTES, JsonTooComplex, NotJson, decode, decode_json
from . import keys
from .quietlog import QuietLog
from .sendqueue import SendQueue

log = logging.getLogger("callbridge.cluster")

WIRE_VERSION = 1
# The largest event a worker publishes is a transcript turn or a tool result: far below this.
MAX_MESSAGE_BYTES = 256 * 1024
MAX_TYPE_LENGTH = 64
RELAY_QUEUE_SIZE = 10_000
# After the subscription breaks: wait this long, doubling up to the cap, before subscribing again.
RESUBSCRIBE_MIN_S, RESUBSCRIBE_MAX_S = 0.2, 5.0


class RelayMessageError(ValueError):
    """A message on the events channel that is not one of ours."""


@dataclass(frozen=True, slots=True)
class Relayed:
    via: str
    event: BusEvent


def encode(event: BusEvent, via: str) -> bytes:
    message = {"v": WIRE_VERSION, "via": via, "worker": event.worker, "call_id": event.call_id, "type": event.type,
               "at": event.at, "seq": event.seq, "data": event.data}
    return json.dumps(message, separators=(",", ":"), default=str, allow_nan=False).encode()


def validate(message: object) -> Relayed:
    """The decoded JSON of a message as a Relayed event; RelayMessageError names what is wrong."""
    if not isinstance(message, dict):
        raise RelayMessageError("not a JSON object")
    if message.get("v") != WIRE_VERSION:
        raise RelayMessageError("unknown version")
    via, worker = message.get("via"), message.get("worker")
    for name, value in (("via", via), ("worker", worker)):
        if not isinstance(value, str) or not keys.WORKER_ID.match(value):
            raise RelayMessageError(f"{name} is not a worker id")
    call_id, kind = message.get("call_id"), message.get("type")
    if not isinstance(call_id, str) or not keys.CALL_ID.match(call_id):
        raise RelayMessageError("call_id")
    if not isinstance(kind, str) or not kind or len(kind) > MAX_TYPE_LENGTH:
        raise RelayMessageError("type")
    at = message.get("at")
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        raise RelayMessageError("at")
    seq = message.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
        raise RelayMessageError("seq")
    data = message.get("data")
    if not isinstance(data, dict):
        raise RelayMessageError("data")
    assert isinstance(via, str) and isinstance(worker, str)
    return Relayed(via, BusEvent(call_id, kind, data, float(at), seq, worker))


async def decode_message(raw: object) -> Relayed:
    if not isinstance(raw, bytes):
        raise RelayMessageError("not bytes")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise RelayMessageError(f"larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        # Bounded work on the loop for small messages; larger ones are checked and decoded off it.
        message = decode(raw) if len(raw) <= INLINE_DECODE_BYTES else await decode_json(raw)
    except (JsonTooComplex, NotJson) as exc:
        raise RelayMessageError(f"not JSON: {exc}") from None
    return validate(message)


class Relay:
    def __init__(self, redis: Redis, subscriber: Redis, bus: EventBus, worker_id: str, *,
                 maxsize: int = RELAY_QUEUE_SIZE) -> None:
        self.redis = redis
        self.subscriber = subscriber  # its own connection: it blocks reading the channel
        self.bus = bus
        self.worker_id = worker_id
        self.queue: SendQueue[bytes] = SendQueue("events", self._publish, maxsize=maxsize)
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._quiet = QuietLog(log)
        self.received = 0
        self.rejected = 0

    # -- out --------------------------------------------------------------------------------------

    def tap(self, event: BusEvent) -> None:
        """The local bus's tap: this worker's own events go out; relayed ones never go round again."""
        if event.worker == self.worker_id:
            self.queue.put(encode(event, self.worker_id))

    def send(self, event: BusEvent) -> None:
        """An event about another worker's call (a survivor ending a lost worker's calls)."""
        self.queue.put(encode(event, self.worker_id))

    async def _publish(self, batch: list[bytes]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for message in batch:
                pipe.publish(keys.EVENTS_CHANNEL, message)
            await pipe.execute()

    # -- in ---------------------------------------------------------------------------------------

    async def start(self, timeout: float) -> None:
        """Start publishing and subscribing; return once subscribed (or after ``timeout``)."""
        self.queue.start()
        self._task = asyncio.get_running_loop().create_task(self._subscribe_forever(), name="cluster-relay")
        try:
            async with asyncio.timeout(timeout):
                await self._subscribed.wait()
        except TimeoutError:
            log.warning("cluster: not yet subscribed to other workers' events; retrying in the background")

    async def stop(self) -> None:
        await self.queue.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _subscribe_forever(self) -> None:
        delay = RESUBSCRIBE_MIN_S
        while True:
            pubsub = self.subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.EVENTS_CHANNEL)
                self._subscribed.set()
                delay = RESUBSCRIBE_MIN_S
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await self.on_message(message.get("data"))
            except (RedisError, OSError) as exc:
                self._quiet.warning("subscribe", "cluster: lost the events channel (%s); subscribing again", exc)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass
            self._subscribed.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESUBSCRIBE_MAX_S)

    async def on_message(self, raw: object) -> None:
        try:
            relayed = await decode_message(raw)
        except RelayMessageError as exc:
            self.rejected += 1
            self._quiet.warning("bad-message", "cluster: dropped a malformed message on %s: %s",
                                keys.EVENTS_CHANNEL, exc, rejected=self.rejected)
            return
        event = relayed.event
        if relayed.via == self.worker_id or event.worker == self.worker_id:
            return  # our own, already on our bus
        self.received += 1
        self.bus.publish(event.call_id, event.type, event.data, at=event.at, seq=event.seq, worker=event.worker)
