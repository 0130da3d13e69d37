"""The console's metrics overview, computed from the store's last hour and the live calls (sans-IO).

Calls per minute, end reasons and statuses over the window, and the agents' turn latency (caller's end
of speech to the agent's first packet) at p50/p95 by nearest rank (no interpolation between two turns).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

WINDOW_S = 3600.0
BUCKET_S = 60.0


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``fraction`` of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def overview(now: float, calls: Iterable[dict[str, Any]], turn_latency_ms: list[float], *, active: int,
             live_statuses: Iterable[str], truncated: bool = False) -> dict[str, Any]:
    """``calls``: {created_at, status, end_reason} of the calls created in the window (store and memory)."""
    start = now - WINDOW_S
    buckets = [0] * int(WINDOW_S // BUCKET_S)
    reasons: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    total = 0
    for call in calls:
        created = call.get("created_at") or 0.0
        if not start <= created <= now:
            continue
        total += 1
        buckets[min(int((created - start) // BUCKET_S), len(buckets) - 1)] += 1
        statuses[str(call.get("status"))] += 1
        if call.get("end_reason"):
            reasons[str(call["end_reason"])] += 1
    return {
        "window_s": WINDOW_S, "bucket_s": BUCKET_S, "since": start, "now": now,
        "calls": total, "calls_per_minute": buckets, "active_calls": active,
        "live": dict(Counter(live_statuses)), "statuses": dict(statuses),
        "end_reasons": dict(reasons.most_common()),
        "turn_latency_ms": {"count": len(turn_latency_ms), "p50": percentile(turn_latency_ms, 0.5),
                            "p95": percentile(turn_latency_ms, 0.95)},
        "truncated": truncated,
    }


__all__ = ["BUCKET_S", "WINDOW_S", "overview", "percentile"]
