"""The dial policy (call/dial_policy.py) from the config, and what /metrics shows about it.

Which ledger counts the caps: a single process counts alone (LocalLedger); a cluster worker
(``cluster.redis_url`` set) counts in Redis with every other worker (cluster/dial_ledger.py), so
the caps hold for the cluster. :func:`install_dial_policy` picks the Redis ledger on a client of its
own as soon as the URL is set, so no worker of a cluster ever counts alone; the cluster node then
lends its client with :func:`use_cluster_ledger` and closes the ledger when it stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..call.dial_policy import DialLedger, DialPolicy, TrunkRules
from .metrics import Counter, _series

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ..call.manager import CallManager
    from .cluster.dial_ledger import RedisDialLedger
    from .config import Config, OutboundTrunk

_retiring: set[asyncio.Task[None]] = set()  # a replaced ledger's close, kept referenced until done


def trunk_rules(trunk: "OutboundTrunk") -> TrunkRules:
    policy = trunk.policy
    return TrunkRules(name=trunk.name, host=trunk.host, port=trunk.port, allow=tuple(policy.allow),
                      home_country=policy.home_country, max_concurrent=policy.max_concurrent,
                      max_per_minute=policy.max_per_minute, max_per_day=policy.max_per_day)


class DialPolicyMetrics:
    """callbridge_outbound_denied_total{reason,trunk}, callbridge_outbound_daily_cap_reached_total{scope}
    and the gauge callbridge_outbound_daily_cap_reached{scope} (1 while a daily cap is full)."""

    def __init__(self, policy: DialPolicy, rules: Callable[[], list[TrunkRules]], now: Callable[[], float]) -> None:
        self.policy, self.rules, self.now = policy, rules, now
        self.denied = Counter("callbridge_outbound_denied_total", "Outbound dials and REFERs refused by policy.",
                              ("reason", "trunk"))
        self.cap_events = Counter("callbridge_outbound_daily_cap_reached_total",
                                  "Times a daily outbound cap filled up.", ("scope",))

    def on_dial(self, event: str, reason: str, trunk: str | None) -> None:
        if event == "denied":
            self.denied.inc(reason=reason, trunk=trunk or "")
        elif event == "daily_cap_reached":
            self.cap_events.inc(scope=reason)

    def render(self) -> Iterable[str]:
        yield from self.denied.render()
        yield from self.cap_events.render()
        name = "callbridge_outbound_daily_cap_reached"
        yield f"# HELP {name} 1 while the daily outbound cap (per trunk, or global) is full."
        yield f"# TYPE {name} gauge"
        for scope, full in sorted(self.policy.daily_cap_reached(self.rules(), self.now()).items()):
            yield _series(name, (("scope", scope),), 1 if full else 0)


def install_dial_policy(config: "Config", manager: "CallManager", outbound: Callable[[], list["OutboundTrunk"]],
                        now: Callable[[], float], *, redis: "Redis | None" = None) -> DialPolicyMetrics:
    """Every dial the manager places now goes through the policy; returns its metrics.

    The caps are counted in Redis, for the whole cluster, when ``redis`` is given or
    ``config.cluster.redis_url`` is set (then on a client of the ledger's own); in this process
    alone otherwise."""
    ledger: DialLedger | None = None
    cluster = config.cluster
    if redis is not None or cluster.redis_url:
        from .cluster.dial_ledger import RedisDialLedger, redis_client

        try:
            client = redis if redis is not None else redis_client(cluster.redis_url or "", cluster.worker_id)
        except ValueError as exc:  # an OSError stops start-up with the reason, as the cluster node's does
            raise OSError(f"cluster.redis_url is not a usable Redis URL: {exc}") from None
        ledger = RedisDialLedger(client, worker_id=cluster.worker_id, owns_client=redis is None)
    policy = DialPolicy(allow_uris=tuple(config.outbound.allow_uris), max_per_day=config.outbound.max_per_day,
                        ledger=ledger)
    manager.outbound.policy = policy
    manager.outbound.rules = lambda: [trunk_rules(t) for t in outbound()]
    metrics = DialPolicyMetrics(policy, manager.outbound.rules, now)
    manager.outbound.dial_listeners.append(metrics.on_dial)
    return metrics


def use_cluster_ledger(manager: "CallManager", redis: "Redis", *, worker_id: str | None = None,
                       lease_s: float | None = None) -> "RedisDialLedger | None":
    """Count the manager's outbound caps in ``redis``, shared with every worker of the cluster.

    For the cluster node, once its client exists (after :func:`install_dial_policy`, before dials):
    ``self.dial_ledger = use_cluster_ledger(calls, self.redis, worker_id=self.worker_id)``, and in
    ``stop()``: ``await self.dial_ledger.close()`` (it gives back the leases still held). A ledger
    :func:`install_dial_policy` had opened on a client of its own is closed. Returns None when the
    manager has no dial policy (a client, not a server)."""
    from .cluster.dial_ledger import DEFAULT_LEASE_S, RedisDialLedger

    policy = manager.outbound.policy
    if policy is None:
        return None
    ledger = RedisDialLedger(redis, worker_id=worker_id, lease_s=lease_s or DEFAULT_LEASE_S)
    previous, policy.ledger = policy.ledger, ledger
    if isinstance(previous, RedisDialLedger) and previous.owns_client:
        _retire(previous)
    return ledger


def _retire(ledger: "RedisDialLedger") -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # no loop has run yet: its client never connected, nothing to close
    task = loop.create_task(ledger.close(), name="dial-ledger-retire")
    _retiring.add(task)
    task.add_done_callback(_retiring.discard)
