"""This worker's place in a cluster: the one object the Server holds when ``cluster.redis_url`` is set.

It joins the parts, each in its own module, and runs their two loops:

- registry.py: our entry, refreshed every ``cluster.heartbeat_s`` (the heartbeat loop);
- ownership.py: our calls, as call events claim and release them;
- relay.py: our events out to the channel, other workers' events onto our bus;
- reaper.py: dead workers' calls ended as worker_lost (the reaper loop, apart from the heartbeat so a
  long reap never lets our own liveness lapse);
- forwarding.py + placement.py: the API answering for every call (:meth:`http_app`).

Redis down at start is an error that names it; Redis lost later costs the merged view only: calls
go on locally, the loops log (throttled) and carry on, and the first heartbeat that gets through
writes our ownership again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisError

from ..config import Config
from ..dial_rules import use_cluster_ledger
from ..events import EventBus
from .bans import BanSharing
from .forwarding import ASGIApp, ClusterGateway, ClusterStateUnavailable, Peer
from .ownership import Ownership
from .peerauth import PeerMark
from .placement import Candidate, rank
from .quietlog import QuietLog
from .reaper import Notify, Reaper, Records
from .registry import Registry, WorkerInfo
from .relay import Relay

if TYPE_CHECKING:
    from ...call.manager import CallManager
    from ..webhooks import WebhookOutbox

log = logging.getLogger("callbridge.cluster")

# Every Redis command but the subscription's blocking read gives up after this.
REDIS_TIMEOUT_S = 2.0
# One quick retry on a broken connection (Redis restarted): the pool reconnects.
REDIS_RETRIES = 1
# Forwarding to a peer: connecting is quick on a LAN or nothing; a pool this size is never the limit.
PEER_CONNECT_TIMEOUT_S = 2.0
PEER_POOL_TIMEOUT_S = 5.0
PEER_MAX_CONNECTIONS = 64
# How often the reaper also asks the store which workers left unfinished calls (Redis may not know).
STORE_SWEEP_INTERVAL_S = 60.0
SUBSCRIBE_TIMEOUT_S = 5.0
UNSPECIFIED_HOSTS = frozenset({"", "0.0.0.0", "::"})


class ClusterUnavailable(OSError):
    """The cluster cannot be joined: Redis unreachable, a bad URL, or the worker id taken."""


def resolve_worker_id(configured: str | None) -> str:
    """cluster.worker_id, or host-pid (unique on one machine, and across machines with distinct names)."""
    if configured:
        return configured
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:48] or "worker"
    return f"{host}-{os.getpid()}"


def _reachable_host(config: Config) -> str:
    server = config.server
    host = server.public_host or server.host
    if host in UNSPECIFIED_HOSTS:
        host = "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def redacted(url: str) -> str:
    """A Redis URL without its password, for messages."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


class ClusterNode:
    def __init__(self, config: Config, *, calls: CallManager, bus: EventBus, draining: Callable[[], bool]) -> None:
        cluster = config.cluster
        if not cluster.redis_url:
            raise ValueError("ClusterNode needs cluster.redis_url")
        self.config = config
        self.calls = calls
        self.bus = bus
        self._draining = draining
        self.worker_id = resolve_worker_id(cluster.worker_id)
        self.instance = uuid.uuid4().hex
        self.api_url = cluster.api_url or f"http://{_reachable_host(config)}:{config.server.http_port}"
        self.sip_uri = cluster.sip_uri or f"sip:{_reachable_host(config)}:{config.server.sip_port}"
        self.started_at = time.time()
        self.redis_url = cluster.redis_url
        try:
            self.redis: Redis = Redis.from_url(
                cluster.redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), REDIS_RETRIES),
                client_name=f"callbridge-{self.worker_id}")
            # The subscription blocks reading: no read timeout; keepalive finds a dead peer.
            self._subscriber: Redis = Redis.from_url(
                cluster.redis_url, socket_timeout=None, socket_connect_timeout=REDIS_TIMEOUT_S,
                socket_keepalive=True, retry=Retry(NoBackoff(), 0), client_name=f"callbridge-{self.worker_id}-events")
        except ValueError as exc:
            raise ClusterUnavailable(f"cluster.redis_url {redacted(cluster.redis_url)!r}: {exc}") from None
        self.registry = Registry(self.redis, self.worker_id, self.instance, cluster.worker_timeout_s)
        self.ownership = Ownership(self.redis, self.worker_id)
        self.relay = Relay(self.redis, self._subscriber, bus, self.worker_id)
        # Login bans imposed on any worker hold on every worker (bans.py); failures stay counted per worker.
        guard, endpoint = calls.ua.guard, calls.endpoint
        self.bans = BanSharing(self.redis, self._subscriber, guard, endpoint.now, self.worker_id) if guard else None
        self.reaper: Reaper | None = None  # once the store is open
        self._store: Records | None = None
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(REDIS_TIMEOUT_S, connect=PEER_CONNECT_TIMEOUT_S, pool=PEER_POOL_TIMEOUT_S),
            limits=httpx.Limits(max_connections=PEER_MAX_CONNECTIONS), follow_redirects=False,
            trust_env=False)  # never through an HTTP(S)_PROXY from the environment: the token goes along
        self._tasks: list[asyncio.Task[None]] = []
        self._quiet = QuietLog(log)
        self._left = False  # stop() ran: the API (which outlives us at shutdown) answers alone
        # The outbound caps count for the whole cluster, on our client (app/dial_rules.py).
        self.dial_ledger = use_cluster_ledger(calls, self.redis, worker_id=self.worker_id)
        # Every call this worker registers carries its name; its events and ownership go to Redis.
        calls.worker_id = self.worker_id
        calls.consumers.append(self.ownership)
        bus.worker = self.worker_id
        bus.taps.append(self.relay.tap)

    # -- lifecycle ---------------------------------------------------------------------------------------

    async def start(self, store: Records, *, outbox: WebhookOutbox | None = None) -> None:
        """Join: our previous life's calls reaped, our id claimed, our entry written, events flowing.
        Raises :class:`ClusterUnavailable` (an OSError) when that cannot be done."""
        self._store = store
        self.reaper = Reaper(self.redis, self.registry, store, bus=self.bus, relay=self.relay,
                             notify=self._notifier(outbox))
        if not self.config.api.token:
            log.warning("cluster: api.token is not set; every worker must share one token for forwarding to work")
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            raise ClusterUnavailable(f"cannot reach the cluster's Redis at {redacted(self.redis_url)}: {exc}") from None
        try:
            await self.registry.wait_for_id()
            await self.reaper.reap(self.worker_id)  # a crash of ours left calls "active": end them
            await self.registry.claim()
            await self.registry.beat(self.info())
        except RedisError as exc:
            raise ClusterUnavailable(f"cannot join the cluster at {redacted(self.redis_url)}: {exc}") from None
        self.ownership.queue.start()
        await self.relay.start(SUBSCRIBE_TIMEOUT_S)
        if self.bans is not None:
            await self.bans.start(SUBSCRIBE_TIMEOUT_S)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._beat_forever(), name="cluster-heartbeat"),
                       loop.create_task(self._reap_forever(), name="cluster-reaper")]
        log.info("joined the cluster", extra={"worker": self.worker_id, "api_url": self.api_url,
                                              "sip_uri": self.sip_uri, "redis": redacted(self.redis_url)})

    async def stop(self) -> None:
        """Leave: the calls' last events and releases sent, our entry marked stopped."""
        self._left = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ownership.queue.close()
        await self.relay.stop()
        if self.bans is not None:
            await self.bans.stop()
        if self.dial_ledger is not None:
            await self.dial_ledger.close()  # the leases of calls still up go back
        try:
            await self.registry.leave(self.info())
        except (RedisError, OSError) as exc:
            log.warning("cluster: could not mark this worker stopped: %s", exc)
        await self._client.aclose()
        await self.redis.aclose()
        await self._subscriber.aclose()

    def info(self) -> WorkerInfo:
        """This worker's registry entry, now."""
        return WorkerInfo(id=self.worker_id, pid=os.getpid(), instance=self.instance, api_url=self.api_url,
                          sip_uri=self.sip_uri, active_calls=len(self.calls.active_calls),
                          capacity=self.config.server.max_calls, draining=bool(self._draining()),
                          heartbeat=time.time(), started_at=self.started_at)

    def http_app(self, app: ASGIApp, api_token: str) -> ASGIApp:
        """``app`` answering for every call of the cluster (forwarding.py); ``api_token`` is the shared one."""
        return ClusterGateway(app, self, PeerMark(api_token), self._client, api_token)

    # -- the loops -----------------------------------------------------------------------------------------

    async def _beat_forever(self) -> None:
        period = self.config.cluster.heartbeat_s
        while True:
            await asyncio.sleep(period)
            try:
                lapsed = await self.registry.beat(self.info())
                if lapsed or self.ownership.stale:
                    await self.ownership.resync()
            except (RedisError, OSError) as exc:
                self.ownership.stale = True  # what we miss meanwhile is written again once Redis is back
                self._quiet.warning("heartbeat", "cluster: heartbeat failed (calls go on locally): %s", exc)

    async def _reap_forever(self) -> None:
        cluster = self.config.cluster
        # The store's view waits one timeout after start: live workers have re-registered by then.
        next_store_sweep = time.monotonic() + cluster.worker_timeout_s
        while True:
            await asyncio.sleep(cluster.heartbeat_s)
            check_store = time.monotonic() >= next_store_sweep
            try:
                assert self.reaper is not None
                await self.reaper.sweep(check_store=check_store)
                if check_store:  # a suspect is looked at again once a live worker would have beaten
                    next_store_sweep = time.monotonic() + (cluster.worker_timeout_s if self.reaper.store_suspects
                                                           else STORE_SWEEP_INTERVAL_S)
            except (RedisError, OSError) as exc:
                self._quiet.warning("reaper", "cluster: looking for lost workers failed: %s", exc)
            except Exception:  # noqa: BLE001 - a store error must not stop the reaper for good
                log.exception("cluster: the reaper's sweep failed")

    def _notifier(self, outbox: WebhookOutbox | None) -> Notify | None:
        hooks = self.config.webhooks
        url = hooks.url
        if outbox is None or url is None:
            return None
        wanted = frozenset(hooks.events)

        async def notify(event: str, payload: dict[str, Any]) -> None:
            if event in wanted:
                await outbox.enqueue(url, event, payload)

        return notify

    # -- the gateway's questions (forwarding.Directory) --------------------------------------------------

    def is_local(self, call_id: str) -> bool:
        return call_id in self.calls.calls

    def _check_joined(self) -> None:
        if self._left:
            raise ClusterStateUnavailable("this worker has left the cluster (shutting down)")

    async def owner(self, call_id: str) -> Peer | None:
        """The worker running ``call_id``; None when no worker runs it (ended long ago, or unknown)."""
        self._check_joined()
        try:
            owner_id, ended = await self.ownership.owner_of(call_id)
            if owner_id is None or owner_id == self.worker_id:
                return self._self_peer() if owner_id else None
            return await self._peer(owner_id, ended=ended)
        except (RedisError, OSError) as exc:
            raise ClusterStateUnavailable(str(exc)) from None

    async def recorded_owner(self, call_id: str) -> Peer | None:
        """The worker the stored record names (a finished call whose ownership has expired)."""
        self._check_joined()
        if self._store is None:
            return None
        record = await self._store.get_call(call_id)
        worker = record.get("worker") if record else None
        if not isinstance(worker, str) or worker == self.worker_id:
            return None
        try:
            return await self._peer(worker, ended=True)
        except (RedisError, OSError) as exc:
            raise ClusterStateUnavailable(str(exc)) from None

    async def _peer(self, worker_id: str, *, ended: bool) -> Peer | None:
        info, alive = await self.registry.worker(worker_id)
        if info is None or (ended and not alive):
            return None  # nobody to ask: the store answers
        return Peer(worker_id, info.api_url, alive)

    def _self_peer(self) -> Peer:
        return Peer(self.worker_id, self.api_url, True)

    async def placements(self) -> list[Peer]:
        self._check_joined()
        try:
            listed = await self.registry.workers()
        except (RedisError, OSError) as exc:
            raise ClusterStateUnavailable(str(exc)) from None
        me = self.info()
        peers = {self.worker_id: self._self_peer()}
        candidates = [Candidate(me.id, me.active_calls, me.capacity, me.draining, alive=True)]
        for info, alive in listed:
            if info.id != self.worker_id:
                peers[info.id] = Peer(info.id, info.api_url, alive)
                candidates.append(Candidate(info.id, info.active_calls, info.capacity, info.draining, alive))
        return [peers[c.id] for c in rank(candidates, self.worker_id)]

    async def workers(self) -> list[dict[str, Any]]:
        self._check_joined()
        try:
            listed = await self.registry.workers()
        except (RedisError, OSError) as exc:
            raise ClusterStateUnavailable(str(exc)) from None
        return [{**info.to_json(alive=alive), "self": info.id == self.worker_id} for info, alive in listed]
