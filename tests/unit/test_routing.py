"""Which flow answers a call: per-trunk routes, global numbers, trunk catch-alls, unknown numbers."""

from __future__ import annotations

import pytest

from callbridge.app.config import config_from
from callbridge.app.routing import Route, RouteKind, Router, UnknownNumber, agent_route, parse_route
from callbridge.call.events import Direction
from callbridge.yamlsource import SourceError, load_yaml_text

CONFIG = """
flows:
  sales: sales.yaml
  support: support.yaml
routing:
  default_flow: demo
  unknown_number: {unknown}
  numbers:
    "+15550100000": sales
    support: support
inbound_trunks:
  - name: twilio
    allowed_cidrs: [54.172.60.0/30]
    routes:
      "+15550109999": support
  - name: office
    flow: support
"""


def router(unknown: str = "default") -> Router:
    return Router(config_from(load_yaml_text(CONFIG.format(unknown=unknown), "callbridge.yaml")))


@pytest.mark.parametrize("trunk, called, flow", [
    ("twilio", "+15550109999", "support"),    # the trunk's own route
    ("twilio", "15550109999", "support"),     # the same DID without '+'
    ("twilio", "+1 (555) 010-0000", "sales"),  # global number, written with punctuation
    (None, "+15550100000", "sales"),
    (None, "support", "support"),             # a SIP user, not a number
    ("office", "+19999999999", "support"),    # the office trunk's catch-all
    (None, "+19999999999", "demo"),           # unknown: the default flow
    (None, None, "demo"),
])
def test_routes(trunk, called, flow):
    assert router().flow_for(trunk, called) == flow


def test_unknown_number_rejected_when_configured():
    strict = router("reject")
    assert strict.flow_for(None, "+19999999999") is None
    assert strict.flow_for("office", "+19999999999") == "support", "a trunk catch-all is not an unknown number"
    assert strict.flow_for(None, "+15550100000") == "sales"


def test_reachable_flows_are_the_ones_routes_name():
    assert router().reachable_flows == {"demo", "sales", "support"}


def test_reject_with_no_routes_still_answers():
    # Nothing routed means nothing is "unknown": a fresh install must answer.
    config = config_from(load_yaml_text("routing:\n  unknown_number: reject\n", "c.yaml"))
    assert Router(config).flow_for(None, "12345") == "demo"


@pytest.mark.parametrize("text, line, reason", [
    ("routing:\n  default_flow: nosuch\n", 2, "unknown flow 'nosuch'"),
    ("flows:\n  a: a.yaml\nrouting:\n  numbers:\n    '100': b\n", 5, "unknown flow 'b'"),
    ("inbound_trunks:\n  - name: t\n    flow: missing\n", 3, "unknown flow 'missing'"),
    ("inbound_trunks:\n  - name: t\n    routes:\n      '200': gone\n", 4, "unknown flow 'gone'"),
    ("flows:\n  demo: mine.yaml\n", 2, "built-in flow name"),
    ("routing:\n  unknown_number: maybe\n", 2, "unknown_number"),
    ("agents:\n  - name: a\n  - name: a\n", 1, "duplicate agent names"),
    ("outbound_trunks:\n  - name: out\n    port: 5060\n", 2, "host"),
])
def test_bad_routing_config_is_rejected_at_its_line(text, line, reason):
    with pytest.raises(SourceError) as caught:
        config_from(load_yaml_text(text, "c.yaml"))
    assert caught.value.position.line == line, str(caught.value)
    assert reason in str(caught.value)


@pytest.mark.parametrize("word, direction, kind, name", [
    ("sales", "inbound", RouteKind.FLOW, "sales"),
    ("demo", "inbound", RouteKind.FLOW, "demo"),
    ("tone", "inbound", RouteKind.TONE, "tone"),
    (agent_route("assistant"), "outbound", RouteKind.AGENT, "assistant"),
    (None, "outbound", RouteKind.LEG, None),  # a leg we dialled for a bridge
    (None, "inbound", RouteKind.FLOW, None),  # nothing routed it: the phone line's default
])
def test_a_route_word_names_what_answers_the_call(word, direction, kind, name):
    assert parse_route(word, Direction(direction)) == Route(kind, name)
    assert agent_route("assistant") == "agent:assistant"  # the word the API has always shown


def test_unknown_number_policy_is_an_enum():
    assert router("reject").reject_unknown and not router("default").reject_unknown
    assert {u.value for u in UnknownNumber} == {"default", "reject"}
