"""Prometheus metrics in the text exposition format (version 0.0.4), written by hand.

Only counters, gauges read at scrape time, and histograms: all this service needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..call import events as ev
from ..call.call import Call

if TYPE_CHECKING:
    from ..sip.guard import AuthGuard

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds from the caller's last word to the agent's first audio packet.
TURN_LATENCY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
# Interarrival jitter (RFC 3550 §6.4.1) per call, in seconds.
JITTER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16)

Labels = tuple[tuple[str, str], ...]


def escape_label(value: str) -> str:
    # The exposition format escapes backslash, double quote and line feed in label values.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if value != int(value) else str(int(value))


class Renders(Protocol):
    """Anything that writes its own exposition lines (metrics owned by other modules)."""

    def render(self) -> Iterable[str]: ...


def _series(name: str, labels: Labels, value: float) -> str:
    if not labels:
        return f"{name} {format_value(value)}"
    inner = ",".join(f'{key}="{escape_label(str(val))}"' for key, val in labels)
    return f"{name}{{{inner}}} {format_value(value)}"


@dataclass
class Counter:
    name: str
    help: str
    label_names: tuple[str, ...] = ()
    values: dict[Labels, float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def _key(self, labels: dict[str, str]) -> Labels:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {sorted(labels)}")
        return tuple((name, str(labels[name])) for name in self.label_names)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        if not self.values and not self.label_names:
            yield _series(self.name, (), 0)
        for labels, value in sorted(self.values.items()):
            yield _series(self.name, labels, value)


@dataclass
class Gauge:
    """A value read when scraped (active calls, ports in use...)."""

    name: str
    help: str
    read: Callable[[], float]

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        yield _series(self.name, (), self.read())


@dataclass
class CounterView:
    """A counter kept elsewhere (a protocol core's own tally), read when scraped."""

    name: str
    help: str
    read: Callable[[], float]

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        yield _series(self.name, (), self.read())


@dataclass
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...]
    counts: list[int] = field(init=False)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if list(self.buckets) != sorted(self.buckets):
            raise ValueError("histogram buckets must be sorted")
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.total += value
        self.count += 1
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for bound, count in zip(self.buckets, self.counts, strict=True):
            yield _series(f"{self.name}_bucket", (("le", format_value(bound)),), count)
        yield _series(f"{self.name}_bucket", (("le", "+Inf"),), self.count)
        yield _series(f"{self.name}_sum", (), self.total)
        yield _series(f"{self.name}_count", (), self.count)


class CallMetrics:
    """What /metrics shows about calls, agents and media."""

    def __init__(self, active_calls: Callable[[], float], rtp_ports_in_use: Callable[[], float]) -> None:
        self.active_calls = Gauge("callbridge_active_calls", "Calls not yet hung up.", active_calls)
        self.rtp_ports = Gauge("callbridge_rtp_ports_in_use", "RTP ports held by calls.", rtp_ports_in_use)
        self.status_changes = Counter("callbridge_calls_total", "Calls that reached each status.",
                                      ("direction", "status"))
        self.ended = Counter("callbridge_calls_ended_total", "Finished calls by end reason.",
                             ("direction", "end_reason"))
        self.turn_latency = Histogram("callbridge_agent_turn_latency_seconds",
                                      "Caller's end of speech to the agent's first audio.", TURN_LATENCY_BUCKETS)
        self.renewals = Counter("callbridge_agent_session_renewals_total", "Model sessions renewed mid-call.")
        self.rtp_received = Counter("callbridge_rtp_packets_received_total", "RTP packets received by finished calls.")
        self.rtp_lost = Counter("callbridge_rtp_packets_lost_total",
                                "RTP packets lost (RTCP-style count) by finished calls.")
        self.jitter = Histogram("callbridge_rtp_jitter_seconds", "Interarrival jitter at the end of each call.",
                                JITTER_BUCKETS)
        self.extra: list[Renders] = []

    def watch_auth_guard(self, guard: "AuthGuard | None", now: Callable[[], float]) -> None:
        """Failed logins, back-off and bans (sip/guard.py); ``now`` is the clock the guard is fed."""
        if guard is None:
            return
        from ..sip.guard import SOURCE, USERNAME

        self.extra += [
            CounterView("callbridge_auth_failures_total", "Failed digest logins, checked or refused unchecked.",
                        lambda: guard.failures_total),
            CounterView("callbridge_auth_refused_total", "Logins answered 403 unchecked while backing off.",
                        lambda: guard.refused_total),
            CounterView("callbridge_auth_dropped_total", "SIP requests from banned sources dropped unanswered.",
                        lambda: guard.dropped_total),
            CounterView("callbridge_auth_bans_total", "Bans started (sources and usernames).",
                        lambda: guard.bans_total),
            Gauge("callbridge_banned_sources", "Source addresses banned now.",
                  lambda: guard.banned_count(SOURCE, now())),
            Gauge("callbridge_banned_usernames", "Usernames locked now.", lambda: guard.banned_count(USERNAME, now())),
        ]

    def __call__(self, call: Call, published: ev.Published) -> None:
        """A consumer of every call's event stream: counts as things happen, nothing is polled."""
        event = published.event
        if isinstance(event, ev.StatusChanged):
            self.status_changes.inc(direction=call.direction.value, status=event.status.value)
        elif isinstance(event, ev.CallEnded):
            self.ended.inc(direction=call.direction.value, end_reason=event.reason.value)
        elif isinstance(event, ev.TurnLatency):
            self.turn_latency.observe(event.total / 1000)
        elif isinstance(event, ev.SessionRenewed):
            self.renewals.inc()
        elif isinstance(event, ev.MediaStats):
            received = event.stats.get("packets_received") or 0
            self.rtp_received.inc(max(0, received))
            self.rtp_lost.inc(max(0, event.stats.get("packets_lost") or 0))
            if received:
                self.jitter.observe((event.stats.get("jitter_ms") or 0.0) / 1000)

    def render(self) -> str:
        metrics: tuple[Renders, ...] = (self.active_calls, self.rtp_ports, self.status_changes, self.ended,
                                        self.turn_latency, self.renewals, self.rtp_received, self.rtp_lost,
                                        self.jitter, *self.extra)
        return "\n".join(line for metric in metrics for line in metric.render()) + "\n"
