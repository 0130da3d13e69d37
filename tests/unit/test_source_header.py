"""The caller's address behind a trusted proxy (sip/source_header.py), and the UA core using it.

Every value here is attacker-controlled unless it comes from a trusted proxy: a bad one is
ignored (the proxy's address counts) and never raises.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from callbridge.app.config import Config
from callbridge.sip import events as ev
from callbridge.sip.address import Address
from callbridge.sip.digest import DigestVerifier, build_authorization
from callbridge.sip.errors import SipParseError
from callbridge.sip.guard import GuardPolicy
from callbridge.sip.parser import parse_message
from callbridge.sip.source_header import (
    CallerAddress,
    SourceHeaderError,
    TrustedProxies,
    parse_source_value,
)
from callbridge.sip.ua.uas import caller_of
from callbridge.sip.useragent import InboundAuth, UserAgent, UserAgentConfig

from .sipfixtures import Harness, invite

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROXY = Address("10.0.0.5", 5060, "udp")
STRANGER = Address("192.0.2.9", 5060, "udp")


@pytest.mark.parametrize("value, expected", [
    ("203.0.113.5;port=5060;proto=udp", ("203.0.113.5", 5060, "udp")),
    ("  203.0.113.5;proto=TLS;port=5061 ", ("203.0.113.5", 5061, "tls")),
    ("203.0.113.5", ("203.0.113.5", None, None)),
    ("2001:db8::1;port=5060;proto=tcp", ("2001:db8::1", 5060, "tcp")),
    ("[2001:db8::1];port=5060", ("2001:db8::1", 5060, None)),
    ("::ffff:198.51.100.7;port=1", ("198.51.100.7", 1, None)),  # what every v4 ACL expects
])
def test_kamailio_values_parse(value, expected):
    caller = parse_source_value(value, PROXY)
    assert (caller.host, caller.port, caller.transport) == expected
    assert caller.proxy == PROXY


@pytest.mark.parametrize("value", [
    "", "   ", "example.com;port=5060", "203.0.113.5:5060", "203.0.113.256", "[203.0.113.5]",
    "fe80::1%eth0", "203.0.113.5;port=0", "203.0.113.5;port=65536", "203.0.113.5;port=+50",
    "203.0.113.5;port=05060", "203.0.113.5;port=5060;port=5061", "203.0.113.5;proto=carrier-pigeon",
    "203.0.113.5;user=phone", "203.0.113.5; port=5060", "203.0.113.5;port", "203.0.113.5;",
    "203.0.113.5;port=5060\x00", "1" * 200, "203.0.113.5,198.51.100.7", "２０３.0.113.5",
])
def test_malformed_values_are_refused(value):
    with pytest.raises(SourceHeaderError):
        parse_source_value(value)


def test_caller_address_prints_with_its_proxy():
    caller = CallerAddress("2001:db8::1", 5060, "udp", PROXY)
    assert str(caller) == "udp:[2001:db8::1]:5060 via udp:10.0.0.5:5060"


def request_with(*values: str, method: str = "INVITE") -> bytes:
    extra = "".join(f"X-Source-IP: {value}\r\n" for value in values)
    return invite(extra=extra, method=method)


def test_resolve_believes_one_header_from_a_trusted_proxy_only():
    proxies = TrustedProxies(["10.0.0.0/24"])
    request = parse_message(request_with("203.0.113.5;port=5062;proto=udp"))
    caller, problem = proxies.resolve(request, PROXY)
    assert problem is None and caller.host == "203.0.113.5" and caller.port == 5062
    assert request.headers.get("X-Source-IP") is None  # removed: it never reaches the record

    request = parse_message(request_with("203.0.113.5"))
    caller, problem = proxies.resolve(request, STRANGER)
    assert caller is STRANGER and problem == "from an untrusted source"
    assert request.headers.get("X-Source-IP") is None  # removed from anyone

    request = parse_message(request_with("203.0.113.5", "198.51.100.7"))
    caller, problem = proxies.resolve(request, PROXY)
    assert caller is PROXY and problem == "2 values"  # a proxy that appended without removing

    request = parse_message(invite())
    assert proxies.resolve(request, PROXY) == (PROXY, None)


def test_header_name_is_configurable_and_case_insensitive():
    proxies = TrustedProxies(["10.0.0.5/32"], header="X-Real-Caller")
    data = invite(extra="x-real-caller: 198.51.100.7;port=5060;proto=udp\r\nX-Source-IP: 203.0.113.5\r\n")
    request = parse_message(data)
    caller, _ = proxies.resolve(request, PROXY)
    assert caller.host == "198.51.100.7"
    assert request.headers.get("X-Source-IP") == "203.0.113.5"  # not ours: the caller's own header
    assert proxies.counted_host(data, PROXY.host) == "198.51.100.7"


@pytest.mark.parametrize("data, counted", [
    (request_with("203.0.113.5;port=5060;proto=udp"), "203.0.113.5"),
    (request_with("203.0.113.5", "198.51.100.7"), "10.0.0.5"),
    (request_with("not-an-address"), "10.0.0.5"),
    (request_with("203.0.113.5,198.51.100.7"), "10.0.0.5"),
    (invite(), "10.0.0.5"),
    # A caller cannot reach the count through the body: only the header section is read.
    (invite(body="v=0\r\nX-Source-IP: 198.51.100.66\r\n"), "10.0.0.5"),
    (invite(extra="X-Source-IP: 203.0.113.5\r\n", body="v=0\r\nX-Source-IP: 198.51.100.66\r\n"), "203.0.113.5"),
    # Folded onto a second line: unfolded as the parser does, "203.0.113.5 ;port=5060" is malformed.
    (invite(extra="X-Source-IP: 203.0.113.5\r\n ;port=5060\r\n"), "10.0.0.5"),
    (invite(extra="X-Source-IP:\r\n 203.0.113.5;port=5060\r\n"), "203.0.113.5"),
    (b"\xff\xfe" + request_with("203.0.113.5"), "203.0.113.5"),
    (request_with("203.0.113.5").replace(b"203.0.113.5", b"203.0.113.\xff"), "10.0.0.5"),
])
def test_raw_peek_counts_the_same_caller_the_parser_names(data, counted):
    proxies = TrustedProxies(["10.0.0.0/24"])
    assert proxies.counted_host(data, PROXY.host) == counted
    assert proxies.counted_host(data, STRANGER.host) == STRANGER.host  # untrusted: never believed


@pytest.mark.parametrize("server, problem", [
    ({"trusted_proxies": ["10.0.0.5/8"]}, "host bits set"),  # a typo that would trust a /8
    ({"trusted_proxies": ["0.0.0.0/0"]}, "trusts every address"),
    ({"trusted_proxies": ["::/0"]}, "trusts every address"),
    ({"trusted_proxies": ["kamailio.local"]}, "does not appear to be"),
    ({"source_header": "Via"}, "is a SIP header"),  # removed from every request: it must be the proxy's own
    ({"source_header": "contact"}, "is a SIP header"),
    ({"source_header": "v"}, "is a SIP header"),
    ({"source_header": "X-Source IP"}, "should match pattern"),
])
def test_config_refuses_what_would_let_anyone_name_a_caller(server, problem):
    with pytest.raises(ValidationError) as refused:
        Config.model_validate({"server": server})
    assert problem in str(refused.value)


def test_config_takes_proxy_networks():
    server = Config.model_validate({"server": {"trusted_proxies": ["10.0.0.5/32", "fd00::/64"],
                                               "source_header": "X-Real-Caller"}}).server
    assert server.trusted_proxies == ["10.0.0.5/32", "fd00::/64"] and server.source_header == "X-Real-Caller"


def test_no_trusted_proxies_trusts_nobody():
    proxies = TrustedProxies()
    assert not proxies and not proxies.trusts("127.0.0.1") and not proxies.trusts("garbage")
    assert TrustedProxies(["::1/128"]).trusts("::1")


# -- the UA core -------------------------------------------------------------------------------


def proxied_ua(**kwargs) -> Harness:
    config = UserAgentConfig(host="127.0.0.1", ports={"udp": 5060}, trusted_proxies=("10.0.0.0/24",), **kwargs)
    return Harness(ua=UserAgent(config))


def incoming(h: Harness) -> list[ev.IncomingCall]:
    return [e for e in h.events if isinstance(e, ev.IncomingCall)]


def test_incoming_call_names_the_caller_and_loses_the_header():
    h = proxied_ua()
    h.feed(request_with("203.0.113.5;port=5062;proto=tcp"), PROXY)
    session = incoming(h)[0].session
    caller = caller_of(session)
    assert (caller.host, caller.port, caller.transport) == ("203.0.113.5", 5062, "tcp")
    assert session.source == PROXY  # the dialog's peer, where in-dialog requests go
    assert "X-Source-IP" not in dict(session.invite.headers)
    assert h.sent[0][1] == PROXY  # 100 Trying goes back to the proxy (Via, RFC 3261 §18.2.2)


def test_a_stranger_cannot_name_a_caller():
    h = proxied_ua()
    h.feed(request_with("203.0.113.5"), STRANGER)
    session = incoming(h)[0].session
    assert caller_of(session) is STRANGER
    assert "X-Source-IP" not in dict(session.invite.headers)


def test_rate_limit_counts_each_caller_behind_the_proxy():
    h = proxied_ua(new_requests_per_source=1.0, new_requests_burst=2.0)
    for n in range(3):  # three calls each from two callers, at the same instant through one proxy
        for caller in ("203.0.113.5", "203.0.113.6"):
            h.feed(invite(branch=f"z9hG4bK-{caller}-{n}", call_id=f"{caller}-{n}",
                          extra=f"X-Source-IP: {caller};port=5060;proto=udp\r\n"), PROXY)
    assert len(incoming(h)) == 4  # each caller's burst of 2
    rejected = [m for m in h.take() if getattr(m, "status", None) == 480]
    assert len(rejected) == 2 and all(m.headers.get("Retry-After") == "5" for m in rejected)


def test_over_the_rate_through_a_proxy_is_answered_never_dropped_and_never_503():
    # Silence would time the proxy's branch out, and 503 means "this server is overloaded":
    # either way a dispatcher would mark the server down for every caller.
    h = proxied_ua(new_requests_per_source=1.0, new_requests_burst=1.0)
    for n in range(12):  # past the 5 503s per window that a direct source gets before silence
        h.feed(invite(branch=f"z9hG4bK-r{n}", call_id=f"r{n}", extra="X-Source-IP: 203.0.113.5\r\n"), PROXY)
    statuses = h.statuses()
    assert statuses == [100] + [480] * 11, statuses


def test_a_banned_caller_behind_the_proxy_is_answered_403_and_others_pass():
    policy = GuardPolicy(failures_before_backoff=1, failures_before_ban=1)
    h = proxied_ua(auth_guard=policy)
    assert h.ua.guard is not None
    h.ua.guard.record_failure("203.0.113.5", None, h.now)  # banned
    h.feed(request_with("203.0.113.5"), PROXY)
    assert h.statuses() == [403] and not incoming(h)
    h.feed(invite(branch="z9hG4bK-other", call_id="other", extra="X-Source-IP: 203.0.113.6\r\n"), PROXY)
    assert h.statuses() == [100] and len(incoming(h)) == 1


# -- properties: whatever the header says ------------------------------------------------------

VALUE_ALPHABET = st.sampled_from(list("0123456789abcdefABCDEF.:;=[]%, \t") + ["port", "proto", "udp", "tcp", "\x00",
                                                                              "é", "\r\n "])


@SETTINGS
@given(st.one_of(st.text(max_size=80), st.lists(VALUE_ALPHABET, max_size=30).map("".join)))
def test_any_value_parses_or_is_refused_with_the_documented_error(value):
    try:
        caller = parse_source_value(value)
    except SourceHeaderError:
        return
    assert ipaddress.ip_address(caller.host) and caller.port in (None, *range(1, 65536))


GOOD_VALUES = st.sampled_from(["203.0.113.5", "2001:db8::1", "[2001:db8::1]", "203.0.113.5;port=5060;proto=udp",
                               "::ffff:198.51.100.7;proto=tls"])
VALUES = st.one_of(GOOD_VALUES, st.tuples(GOOD_VALUES, st.lists(VALUE_ALPHABET, max_size=6).map("".join)).map("".join),
                   st.lists(VALUE_ALPHABET, max_size=30).map("".join))


@SETTINGS
@given(st.lists(VALUES, max_size=3))
def test_raw_peek_and_parser_agree_on_who_is_counted(values):
    """The rate limit and bans (raw bytes) must count the caller the call layer sees (parsed)."""
    proxies = TrustedProxies(["10.0.0.0/24"])
    data = invite(extra="".join(f"X-Source-IP: {value}\r\n" for value in values))
    counted = proxies.counted_host(data, PROXY.host)
    try:
        request = parse_message(data)
    except SipParseError:
        return  # never reaches the call layer
    caller, _ = proxies.resolve(request, PROXY)
    assert counted == caller.host


def test_digest_policy_and_failed_logins_count_the_named_caller():
    """The policy sees the caller, and one caller's wrong passwords ban that caller, not the proxy."""
    h = proxied_ua(auth_guard=GuardPolicy(failures_before_backoff=1, failures_before_ban=1))
    verifier = DigestVerifier("callbridge", b"secret")
    asked: list[str] = []

    def policy(request, caller):
        asked.append(caller.host)
        return InboundAuth(verifier, {"alice": "pw"}.get)

    h.ua.inbound_auth = policy
    guesser = "X-Source-IP: 203.0.113.66;port=5060;proto=udp\r\n"
    h.feed(invite(extra=guesser), PROXY)
    challenge = h.take()[0]
    assert challenge.status == 401
    auth = build_authorization(challenge.headers.get_all("WWW-Authenticate")[0], method="INVITE",
                               uri="sip:demo@127.0.0.1:5060", username="alice", password="guess", cnonce="c1")
    h.feed(invite(branch="z9hG4bK-guess", cseq=2, extra=guesser + f"Authorization: {auth}\r\n"), PROXY)
    assert h.statuses() == [403]
    assert h.ua.guard is not None
    assert [b.key for b in h.ua.guard.bans(h.now) if b.kind == "source"] == ["203.0.113.66"]  # not the proxy
    h.feed(invite(branch="z9hG4bK-again", call_id="again", extra=guesser), PROXY)
    assert h.statuses() == [403]  # banned: answered by the raw check, never challenged again
    h.feed(invite(branch="z9hG4bK-other", call_id="other", extra="X-Source-IP: 203.0.113.7\r\n"), PROXY)
    assert h.statuses() == [401]  # another caller through the same proxy is challenged as usual
    assert asked == ["203.0.113.66", "203.0.113.66", "203.0.113.7"]
