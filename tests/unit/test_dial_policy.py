"""The toll-fraud guard (call/dial_policy.py) on a fake clock: patterns, premium, international, caps."""

from __future__ import annotations

import pytest

from callbridge.call.dial_policy import (DENY_CONCURRENT, DENY_DAILY, DENY_GLOBAL_DAILY, DENY_INTERNATIONAL,
                                         DENY_NOT_ALLOWED, DENY_PREMIUM, DENY_RATE, DENY_URI, DialPolicy, TrunkRules,
                                         literal_prefix, normalise, transfer_allowed)


def uri(user: str, host: str = "carrier.example", port: int = 5060) -> str:
    return f"sip:{user}@{host}:{port}"


def admit(policy: DialPolicy, user: str, rules: TrunkRules | None, now: float = 0.0):
    return policy.admit(uri(user), user, rules, now)


@pytest.mark.parametrize("raw, home, expected", [
    ("+1 (900) 555-0100", "+1", "+19005550100"),
    ("19005550100", "+1", "+19005550100"),
    ("9005550100", "+1", "+19005550100"),
    ("011447911123456", "+1", "+447911123456"),
    ("00447911123456", "+44", "+447911123456"),
    ("09012345678", "+44", "+449012345678"),
    ("operator", "+1", None),
    ("+1900x", "+1", None),
])
def test_normalise(raw, home, expected):
    assert normalise(raw, home) == expected


def test_literal_prefix():
    assert literal_prefix("+1900555*") == "+1900555"
    assert literal_prefix("+1?00") == "+1"
    assert literal_prefix("*") == ""


@pytest.mark.parametrize("user", ["+19005550100", "19765550100", "9005550100", "+1 900 555 0100"])
def test_premium_denied_by_default(user):
    decision = admit(DialPolicy(), user, TrunkRules("carrier"))
    assert (decision.allowed, decision.reason) == (False, DENY_PREMIUM)


def test_uk_premium_denied_even_when_uk_is_home():
    rules = TrunkRules("uk", home_country="+44")
    assert admit(DialPolicy(), "+449012345678", rules).reason == DENY_PREMIUM
    assert admit(DialPolicy(), "+449112345678", rules).reason == DENY_PREMIUM
    assert admit(DialPolicy(), "+442071234567", rules).allowed


def test_domestic_allowed_international_denied_by_default():
    policy = DialPolicy()
    assert admit(policy, "+15550102030", TrunkRules("carrier")).allowed
    for user in ("+447911123456", "011447911123456", "+88112345678", "+5355512345"):
        assert admit(policy, user, TrunkRules("carrier")).reason in (DENY_INTERNATIONAL, DENY_PREMIUM), user


def test_a_broad_pattern_does_not_open_premium_or_abroad():
    rules = TrunkRules("carrier", allow=("+1*", "*"))
    policy = DialPolicy()
    assert admit(policy, "+19005550100", rules).reason == DENY_PREMIUM
    assert admit(policy, "+447911123456", rules).reason == DENY_INTERNATIONAL
    assert admit(policy, "+15550102030", rules).allowed


def test_patterns_that_name_premium_or_a_country_open_them():
    rules = TrunkRules("carrier", allow=("+1900555*", "+44*"))
    policy = DialPolicy()
    assert admit(policy, "+19005550100", rules).allowed
    assert admit(policy, "+19005560100", rules).reason == DENY_NOT_ALLOWED
    assert admit(policy, "+447911123456", rules).allowed
    assert admit(policy, "+449012345678", rules).reason == DENY_PREMIUM  # +44* does not name +4490
    assert admit(policy, "+15550102030", rules).reason == DENY_NOT_ALLOWED


def test_names_need_a_uri_pattern():
    policy = DialPolicy()
    assert admit(policy, "sales", TrunkRules("carrier")).reason == DENY_NOT_ALLOWED
    assert admit(policy, "sales", TrunkRules("carrier", allow=("sip:sales@carrier.example:*",))).allowed


def test_bare_uris_only_when_listed():
    policy = DialPolicy(allow_uris=("sip:*@127.0.0.1:*",))
    assert policy.admit("sip:callee@127.0.0.1:5099", "callee", None, 0).allowed
    assert policy.admit("sip:+19005550100@sbc.example:5060", "+19005550100", None, 0).reason == DENY_URI
    assert DialPolicy().admit("sip:callee@127.0.0.1:5099", "callee", None, 0).reason == DENY_URI


def test_concurrent_cap_and_release():
    rules = TrunkRules("carrier", max_concurrent=2)
    policy = DialPolicy()
    first, second = admit(policy, "+15550100001", rules), admit(policy, "+15550100002", rules)
    assert first.allowed and second.allowed
    assert admit(policy, "+15550100003", rules).reason == DENY_CONCURRENT
    policy.release(first.ticket)
    policy.release(first.ticket)  # twice is harmless
    assert policy.active("carrier") == 1
    assert admit(policy, "+15550100003", rules).allowed


def test_rate_cap_slides_with_the_clock():
    rules = TrunkRules("carrier", max_per_minute=3)
    policy = DialPolicy()
    for second in range(3):
        policy.release(admit(policy, "+15550100001", rules, now=100.0 + second).ticket)
    assert admit(policy, "+15550100001", rules, now=130.0).reason == DENY_RATE
    assert admit(policy, "+15550100001", rules, now=160.5).allowed  # the first left the window


def test_daily_cap_reports_the_filling_call_then_refuses():
    rules = TrunkRules("carrier", max_per_day=2)
    policy = DialPolicy()
    assert admit(policy, "+15550100001", rules, now=0).cap_reached is None
    assert admit(policy, "+15550100001", rules, now=10).cap_reached == "trunk:carrier"
    assert admit(policy, "+15550100001", rules, now=20).reason == DENY_DAILY
    assert policy.daily_cap_reached([rules], 20) == {"global": False, "carrier": True}
    assert admit(policy, "+15550100001", rules, now=86400.5).allowed  # a sliding day
    assert policy.denied == {DENY_DAILY: 1}


def test_global_daily_cap_across_trunks():
    policy = DialPolicy(max_per_day=2, allow_uris=("sip:*@127.0.0.1:*",))
    assert admit(policy, "+15550100001", TrunkRules("a"), now=1).allowed
    assert policy.admit("sip:x@127.0.0.1:5060", "x", None, 2).cap_reached == "global"
    assert admit(policy, "+15550100001", TrunkRules("b"), now=3).reason == DENY_GLOBAL_DAILY


def test_denied_dials_are_not_counted_against_caps():
    rules = TrunkRules("carrier", max_per_minute=1)
    policy = DialPolicy()
    for _ in range(5):
        assert admit(policy, "+19005550100", rules).reason == DENY_PREMIUM
    assert admit(policy, "+15550100001", rules).allowed


def test_transfer_targets():
    assert not transfer_allowed("sip:+15550100001@carrier:5060", "+15550100001", ())
    assert transfer_allowed("sip:+15550100001@carrier:5060", "+15550100001", ("+1555*",))
    assert transfer_allowed("sip:15550100001@carrier:5060", "15550100001", ("+1555*",))
    assert not transfer_allowed("sip:+19005550100@carrier:5060", "+19005550100", ("+1555*",))
    assert transfer_allowed("sip:desk@pbx.example:5060", "desk", ("sip:*@pbx.example:*",))
    assert not transfer_allowed("sip:desk@evil.example:5060", "desk", ("sip:*@pbx.example:*",))


def test_ua_core_asks_the_refer_policy_before_answering_202():
    from callbridge.sip import events as ev

    from .sipfixtures import Harness, invite
    from .test_sip_useragent import ACK, answered_call

    h = Harness()
    asked = []
    h.ua.refer_policy = lambda session, target: asked.append(str(target.uri)) or (403, "Forbidden")
    answered_call(h)
    tag = h.take()[-1].to_addr.tag
    h.feed(ACK.format(tag=tag, cseq=1).encode())
    h.feed(invite(method="REFER", branch="z9hG4bK-ref", cseq=2, to_tag=tag, body="",
                  extra="Refer-To: <sip:+19005550100@127.0.0.1:5099>\r\n"))
    sent = h.take()
    assert [m.status for m in sent] == [403]  # no 202, no NOTIFY
    assert asked == ["sip:+19005550100@127.0.0.1:5099"]
    assert not any(isinstance(e, ev.ReferReceived) for e in h.events)
