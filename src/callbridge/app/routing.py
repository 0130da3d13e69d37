"""Which flow answers a call: by inbound trunk and called number (DID or SIP user).

Order, most specific first:
1. the trunk's own ``routes`` (number -> flow);
2. the global ``routing.numbers``;
3. the trunk's ``flow`` (its catch-all);
4. a number nobody routes: ``routing.unknown_number`` decides. ``default`` plays
   ``routing.default_flow``; ``reject`` answers 404, as a carrier does for a
   number not in service. With no number routes configured at all, every call
   is "known" and goes to the default flow.

A call's route (``Call.route``, the word the API shows) names what answers
it; :func:`parse_route` reads it as a :class:`Route` of some :class:`RouteKind`.

A 404 is only private behind digest auth: the trunk table challenges unknown
numbers like known ones, so only an authenticated caller ever sees it.
Without auth, 404 for some numbers and an answer for others lists the numbers
to any scanner (svwar); ``unknown_number: default`` answers every number alike.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from ..call.events import Direction
from ..call.trunks import normalise_number
from .config import Config

log = logging.getLogger("callbridge.routing")

TONE_ROUTE = "tone"  # the built-in 440 Hz test line
AGENT_ROUTE_PREFIX = "agent:"  # an API dispatch: "agent:<name>"


class RouteKind(enum.StrEnum):
    FLOW = "flow"  # an IVR flow, by name: the built-in demo, or one the config names
    TONE = "tone"  # the 440 Hz test line
    AGENT = "agent"  # an API dispatch: straight to the named agent, driven by the dispatcher
    LEG = "leg"  # an outbound leg dialled for a bridged transfer: whoever dialled it drives it


class UnknownNumber(enum.StrEnum):
    """``routing.unknown_number``: what a called number no route names gets."""

    DEFAULT = "default"  # the default flow, like every other number
    REJECT = "reject"  # 404, as a carrier does for a number not in service


@dataclass(frozen=True, slots=True)
class Route:
    kind: RouteKind
    name: str | None = None  # the flow or agent; None for a leg (or an inbound call nothing routed)


def parse_route(route: str | None, direction: Direction) -> Route:
    if route is None:
        return Route(RouteKind.LEG if direction is Direction.OUTBOUND else RouteKind.FLOW)
    if route.startswith(AGENT_ROUTE_PREFIX):
        return Route(RouteKind.AGENT, route.removeprefix(AGENT_ROUTE_PREFIX))
    if route == TONE_ROUTE:
        return Route(RouteKind.TONE, route)
    return Route(RouteKind.FLOW, route)


def agent_route(agent: str) -> str:
    """The route word of a call dispatched straight to ``agent``."""
    return f"{AGENT_ROUTE_PREFIX}{agent}"


def _table(routes: dict[str, str]) -> dict[str, str]:
    # Twilio sends "+15550100000"; a softphone dials "15550100000" or a SIP user
    # such as "support": keep the written form and the digits-only form.
    table: dict[str, str] = {}
    for number, flow in routes.items():
        table[number] = flow
        normalised = normalise_number(number)
        if normalised:
            table.setdefault(normalised, flow)
            table.setdefault(normalised.lstrip("+"), flow)
    return table


class Router:
    def __init__(self, config: Config) -> None:
        routing = config.routing
        self.default_flow = routing.default_flow
        self.reject_unknown = UnknownNumber(routing.unknown_number) is UnknownNumber.REJECT
        self.numbers = _table(routing.numbers)
        self.trunk_routes = {t.name: _table(t.routes) for t in config.inbound_trunks}
        self.trunk_flows = {t.name: t.flow for t in config.inbound_trunks if t.flow}
        self.has_number_routes = bool(self.numbers) or any(self.trunk_routes.values())
        open_to_all = not config.inbound_trunks or any(t.auth is None for t in config.inbound_trunks)
        if self.reject_unknown and self.has_number_routes and open_to_all:
            log.warning("routing.unknown_number is reject and some callers need no digest auth: they can tell the "
                        "numbers routed from the rest (404), e.g. with svwar; use auth or unknown_number: default")

    @property
    def reachable_flows(self) -> set[str]:
        """Flows some call can reach: only these need their prompts rendered."""
        return ({self.default_flow} | set(self.numbers.values()) | set(self.trunk_flows.values())
                | {flow for table in self.trunk_routes.values() for flow in table.values()})

    def flow_for(self, trunk: str | None, called: str | None) -> str | None:
        """The flow's name, or None when the call must be rejected (404)."""
        for table in (self.trunk_routes.get(trunk or "", {}), self.numbers):
            flow = _lookup(table, called)
            if flow is not None:
                return flow
        if trunk in self.trunk_flows:
            return self.trunk_flows[trunk]
        if self.reject_unknown and self.has_number_routes:
            return None
        return self.default_flow


def _lookup(table: dict[str, str], called: str | None) -> str | None:
    if not table or called is None:
        return None
    if called in table:
        return table[called]
    normalised = normalise_number(called)
    if normalised:
        return table.get(normalised) or table.get(normalised.lstrip("+"))
    return None
