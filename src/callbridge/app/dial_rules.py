"""The dial policy (call/dial_policy.py) from the config, and what /metrics shows about it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..call.dial_policy import DialPolicy, TrunkRules
from .metrics import Counter, _series

if TYPE_CHECKING:
    from ..call.manager import CallManager
    from .config import Config, OutboundTrunk


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
                        now: Callable[[], float]) -> DialPolicyMetrics:
    """Every dial the manager places now goes through the policy; returns its metrics."""
    policy = DialPolicy(allow_uris=tuple(config.outbound.allow_uris), max_per_day=config.outbound.max_per_day)
    manager.dial_policy = policy
    manager.outbound_rules = lambda: [trunk_rules(t) for t in outbound()]
    metrics = DialPolicyMetrics(policy, manager.outbound_rules, now)
    manager.dial_listeners.append(metrics.on_dial)
    return metrics
