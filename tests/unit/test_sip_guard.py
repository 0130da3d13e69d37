"""Password-guessing defences on a fake clock: the guard table, the UA core's use of it, and
unknown numbers challenged like known ones (no enumeration)."""

from __future__ import annotations

import ipaddress
import logging

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from callbridge.app.config import config_from
from callbridge.app.metrics import CallMetrics
from callbridge.app.routing import Router
from callbridge.app.security_api import guard_policy, security_routes
from callbridge.call.trunks import InboundTrunkPolicy, TrunkTable
from callbridge.sip import events as ev
from callbridge.sip.address import Address
from callbridge.sip.digest import DigestVerifier, build_authorization, parse_challenge
from callbridge.sip.guard import AuthGuard, GuardPolicy, Verdict, source_key
from callbridge.sip.useragent import InboundAuth, UserAgent, UserAgentConfig
from callbridge.yamlsource import SourceError, load_yaml_text

from .sipfixtures import PEER, Harness, invite

ATTACKER, OTHER = "198.51.100.7", "203.0.113.9"
POLICY = GuardPolicy(failures_before_backoff=3, failures_before_ban=10, failure_window=600, backoff_seconds=1,
                     ban_seconds=600, max_ban_seconds=3600, max_tracked=100)


def fail(guard: AuthGuard, times: int, now: float, host: str = ATTACKER, user: str | None = "alice", **kw):
    for _ in range(times):
        guard.record_failure(host, user, now, **kw)


# -- the table ---------------------------------------------------------------------------


def test_backs_off_after_three_failures_with_doubling_delays():
    guard = AuthGuard(POLICY)
    fail(guard, 2, 0.0)
    assert guard.check(ATTACKER, "alice", 0.0) is Verdict.VERIFY
    fail(guard, 1, 0.0)
    assert guard.check(ATTACKER, "alice", 0.0) is Verdict.REFUSE
    assert guard.check(ATTACKER, "alice", 0.99) is Verdict.REFUSE
    assert guard.check(ATTACKER, "alice", 1.0) is Verdict.VERIFY  # 1 s after the third failure
    fail(guard, 1, 1.0)
    assert guard.check(ATTACKER, "alice", 2.9) is Verdict.REFUSE  # the fourth: 2 s
    assert guard.check(ATTACKER, "alice", 3.0) is Verdict.VERIFY


def test_ten_failures_ban_the_source_which_then_expires():
    guard = AuthGuard(POLICY)
    fail(guard, 10, 5.0)
    assert guard.check(ATTACKER, "alice", 5.0) is Verdict.DROP
    assert guard.source_banned(ATTACKER, 604.9)
    (source_ban, user_ban) = sorted(guard.bans(5.0), key=lambda b: b.kind)
    assert (source_ban.kind, source_ban.key, source_ban.until) == ("source", ATTACKER, 605.0)
    assert (user_ban.kind, user_ban.key) == ("username", "alice")
    assert guard.bans_total == 2 and guard.banned_count("source", 5.0) == 1
    assert not guard.source_banned(ATTACKER, 605.0)
    assert guard.check(ATTACKER, "alice", 605.0) is Verdict.VERIFY
    assert guard.bans(605.0) == []


def test_refused_attempts_count_so_a_burst_reaches_the_ban():
    guard = AuthGuard(POLICY)
    answered = 0
    for _ in range(1000):
        verdict = guard.check(ATTACKER, "alice", 0.0)
        if verdict is Verdict.DROP:
            continue
        answered += 1
        guard.record_failure(ATTACKER, "alice", 0.0, refused=verdict is Verdict.REFUSE)
    assert answered == 10
    assert guard.failures_total == 10 and guard.refused_total == 7


def test_success_resets_both_records():
    guard = AuthGuard(POLICY)
    fail(guard, 2, 0.0)
    guard.record_success(ATTACKER, "alice", 0.0)
    fail(guard, 2, 0.0)
    assert guard.check(ATTACKER, "alice", 0.0) is Verdict.VERIFY


def test_a_username_guessed_from_many_sources_is_locked_but_not_for_a_device_that_logged_in():
    guard = AuthGuard(POLICY)
    guard.record_success(OTHER, "alice", 0.0)  # alice's phone, earlier
    for i in range(10):
        guard.record_failure(f"192.0.2.{i}", "alice", 1.0)  # one guess from each of ten addresses
    assert guard.check("192.0.2.200", "alice", 1.0) is Verdict.REFUSE  # a new address: locked
    assert guard.check("192.0.2.200", "bob", 1.0) is Verdict.VERIFY
    assert guard.check(OTHER, "alice", 1.0) is Verdict.VERIFY  # the phone still logs in
    assert not guard.source_banned("192.0.2.1", 1.0)


def test_repeat_offences_double_the_ban_up_to_the_cap():
    guard = AuthGuard(POLICY)
    ends = []
    now = 0.0
    for _ in range(5):
        fail(guard, 10, now, user=None)
        (ban,) = guard.bans(now)
        ends.append(ban.until - now)
        now = ban.until
    assert ends == [600, 1200, 2400, 3600, 3600]


def test_failures_are_forgotten_after_the_window():
    guard = AuthGuard(POLICY)
    fail(guard, 2, 0.0)
    fail(guard, 1, 601.0)
    assert guard.check(ATTACKER, "alice", 601.0) is Verdict.VERIFY
    assert guard.tracked == 2  # source and username, one failure each


def test_memory_is_bounded_and_a_flood_cannot_push_out_a_ban():
    guard = AuthGuard(POLICY)
    fail(guard, 10, 0.0, user=None)
    for i in range(5000):
        guard.record_failure(str(ipaddress.ip_address(0x0A000000 + i)), f"user{i}", 1.0)
        assert guard.tracked <= POLICY.max_tracked
    assert guard.source_banned(ATTACKER, 2.0)


def test_ipv6_counts_per_64_and_mapped_ipv4_as_ipv4():
    assert source_key("2001:db8:1:2::5") == source_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    guard = AuthGuard(POLICY)
    fail(guard, 10, 0.0, host="2001:db8:1:2::5", user=None)
    assert guard.check("2001:db8:1:2::99", None, 0.0) is Verdict.DROP
    assert guard.lift("source", "2001:db8:1:2::1")
    assert guard.check("2001:db8:1:2::99", None, 0.0) is Verdict.VERIFY


def test_policy_rejects_a_ban_before_the_backoff():
    with pytest.raises(ValueError):
        GuardPolicy(failures_before_backoff=5, failures_before_ban=3)


# -- the UA core -------------------------------------------------------------------------


def digest_harness(policy: GuardPolicy | None = POLICY) -> tuple[Harness, DigestVerifier]:
    h = Harness(ua=UserAgent(UserAgentConfig(host="127.0.0.1", ports={"udp": 5060}, auth_guard=policy)))
    verifier = DigestVerifier("callbridge", b"secret")
    h.ua.inbound_auth = lambda request, source: InboundAuth(verifier, {"alice": "pw"}.get)
    return h, verifier


def guess(h: Harness, verifier: DigestVerifier, password: str, n: int, source: Address = PEER) -> None:
    auth = build_authorization(verifier.challenge(h.now), method="INVITE", uri="sip:demo@127.0.0.1:5060",
                               username="alice", password=password, cnonce=f"c{n}", nc=n)
    h.feed(invite(branch=f"z9hG4bK-g{n}", call_id=f"g{n}", extra=f"Authorization: {auth}\r\n"), source)


def test_a_guessing_burst_gets_ten_answers_and_the_right_password_earns_nothing():
    h, verifier = digest_harness()
    for n in range(1, 6):
        guess(h, verifier, f"wrong{n}", n)
    guess(h, verifier, "pw", 6)  # right, but backing off: refused unchecked
    for n in range(7, 200):
        guess(h, verifier, f"wrong{n}", n)
    assert h.statuses() == [403] * 10
    assert not any(isinstance(e, ev.IncomingCall) for e in h.events)
    assert h.ua.guard.dropped_total == 189


def test_a_banned_source_is_ignored_but_its_dialogs_and_other_sources_are_not():
    h, verifier = digest_harness()
    for n in range(1, 11):
        guess(h, verifier, "wrong", n)
    h.take()
    h.feed(invite(method="OPTIONS", branch="z9hG4bK-o1", body=""))
    assert h.statuses() == []
    h.feed(invite(method="BYE", branch="z9hG4bK-b1", to_tag="gone", body=""))  # in a dialog: still answered
    assert h.statuses() == [481]
    other = Address("127.0.0.2", 5070, "udp")
    h.feed(invite(method="OPTIONS", branch="z9hG4bK-o2", body=""), other)
    assert h.statuses() == [200]
    h.advance(600)  # the ban ends
    h.take()  # our unACKed 403s, retransmitted meanwhile (RFC 3261 §17.2.1)
    h.feed(invite(method="OPTIONS", branch="z9hG4bK-o3", body=""))
    assert h.statuses() == [200]


def test_a_login_resets_the_count():
    h, verifier = digest_harness()
    for n in (1, 2):
        guess(h, verifier, "wrong", n)
    guess(h, verifier, "pw", 3)
    for n in (4, 5):
        guess(h, verifier, "wrong", n)
    guess(h, verifier, "pw", 6)
    assert h.statuses() == [403, 403, 100, 403, 403, 100]


def test_without_a_guard_every_guess_is_checked():
    h, verifier = digest_harness(policy=None)
    for n in range(1, 21):
        guess(h, verifier, "wrong", n)
    assert h.statuses() == [403] * 20


def test_responses_name_the_product_in_server_without_a_version():
    h = Harness()
    h.feed(invite(method="OPTIONS", body=""))
    (ok,) = h.take()
    assert ok.headers.get("Server") == "callbridge" and ok.headers.get("User-Agent") is None
    custom = Harness(ua=UserAgent(UserAgentConfig(host="127.0.0.1", ports={"udp": 5060}, user_agent="acme-pbx")))
    custom.feed(invite(method="OPTIONS", body=""))
    assert custom.take()[0].headers.get("Server") == "acme-pbx"


# -- unknown numbers look like known ones --------------------------------------------------


def office_table(*extra: InboundTrunkPolicy) -> TrunkTable:
    office = InboundTrunkPolicy("office", numbers=["1001"], username="alice", password="pw")
    return TrunkTable([office, *extra])


def numbered_invite(number: str, n: int, authorization: str | None = None) -> bytes:
    data = invite(branch=f"z9hG4bK-n{n}", call_id=f"n{n}",
                  extra=f"Authorization: {authorization}\r\n" if authorization else "")
    return data.replace(b"sip:demo@", f"sip:{number}@".encode())


def shape(response) -> tuple:
    """Everything a scanner can compare, less what is random per response (nonce, tags)."""
    challenges = [parse_challenge(v) for v in response.headers.get_all("WWW-Authenticate")]
    return (response.status, response.reason, [name for name, _ in response.headers],
            [(c.realm, c.algorithm, c.qop, c.opaque, c.stale) for c in challenges])


def test_an_unknown_number_gets_the_same_challenge_as_a_known_one():
    h = Harness()
    h.ua.inbound_auth = office_table().auth_policy
    h.feed(numbered_invite("1001", 1))
    h.feed(numbered_invite("9999", 2))
    known, unknown = h.take()
    assert known.status == 401 and shape(known) == shape(unknown)
    assert not h.events


def test_only_an_authenticated_caller_gets_past_the_challenge_for_an_unknown_number():
    h = Harness()
    h.ua.inbound_auth = office_table().auth_policy
    h.feed(numbered_invite("9999", 1))
    challenge = h.take()[0].headers.get_all("WWW-Authenticate")[0]
    right = build_authorization(challenge, method="INVITE", uri="sip:9999@127.0.0.1:5060", username="alice",
                                password="pw", cnonce="c1")
    wrong = build_authorization(challenge, method="INVITE", uri="sip:9999@127.0.0.1:5060", username="alice",
                                password="nope", cnonce="c2", nc=2)
    h.feed(numbered_invite("9999", 2, wrong))
    assert h.statuses() == [403]
    h.feed(numbered_invite("9999", 3, right))
    assert h.statuses() == [100]  # then the call layer finds no trunk and answers 404
    assert isinstance(h.events[-1], ev.IncomingCall)


def test_no_challenge_when_no_digest_trunk_admits_the_source():
    carrier = InboundTrunkPolicy("office", numbers=["1001"], username="alice", password="pw",
                                 networks=[ipaddress.ip_network("54.172.60.0/30")])
    table = TrunkTable([carrier])
    assert table.unknown_number_auth("127.0.0.1") is None
    assert table.unknown_number_auth("54.172.60.1") is not None


def test_unknown_numbers_accept_only_credentials_of_the_first_admitting_realm():
    other_realm = InboundTrunkPolicy("pbx", numbers=["2001"], username="bob", password="pw2", realm="pbx")
    same_realm = InboundTrunkPolicy("desk", numbers=["3001"], username="carol", password="pw3")
    auth = office_table(other_realm, same_realm).unknown_number_auth("127.0.0.1")
    assert auth is not None and auth.verifier.realm == "callbridge"
    assert (auth.password_lookup("alice"), auth.password_lookup("carol"), auth.password_lookup("bob")) == (
        "pw", "pw3", None)


# -- config, routing, metrics and the API ----------------------------------------------------


def load(text: str):
    return config_from(load_yaml_text(text, "callbridge.yaml"))


def test_security_settings_reach_the_guard_policy():
    config = load("security: {auth_failures_before_ban: 5, ban_seconds: 30}\nserver: {user_agent: acme}\n")
    policy = guard_policy(config.security)
    assert (policy.failures_before_backoff, policy.failures_before_ban, policy.ban_seconds) == (3, 5, 30)
    assert config.server.user_agent == "acme"
    assert load("{}").server.user_agent == "callbridge"


@pytest.mark.parametrize("text", [
    "security: {auth_failures_before_backoff: 5, auth_failures_before_ban: 4}\n",
    "security: {ban_seconds: 0}\n",
    'server: {user_agent: "x\\r\\nVia: evil"}\n',
])
def test_bad_security_settings_point_at_the_key(text):
    with pytest.raises(SourceError):
        load(text)


def test_reject_without_auth_warns_that_numbers_can_be_listed(caplog):
    text = "routing: {unknown_number: reject, numbers: {'1001': tone}}\n"
    with caplog.at_level(logging.WARNING, logger="callbridge.routing"):
        Router(load(text))
    assert "svwar" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="callbridge.routing"):
        Router(load(text + "inbound_trunks: [{name: office, auth: {username: a, password: b}}]\n"))
    assert caplog.text == ""


def test_metrics_show_failures_and_bans():
    guard = AuthGuard(POLICY)
    metrics = CallMetrics(lambda: 0, lambda: 0)
    metrics.watch_auth_guard(guard, lambda: 1.0)
    fail(guard, 10, 0.0)
    text = metrics.render()
    assert "callbridge_auth_failures_total 10\n" in text
    assert "callbridge_banned_sources 1\n" in text and "callbridge_banned_usernames 1\n" in text


def test_the_api_lists_and_lifts_bans():
    guard = AuthGuard(POLICY)
    fail(guard, 10, 0.0, user=None)
    client = TestClient(Starlette(routes=security_routes(lambda: guard, lambda: 100.0)))
    body = client.get("/api/security/bans").json()
    assert body["bans"][0]["key"] == ATTACKER and body["bans"][0]["expires_in_s"] == 500.0
    assert body["policy"]["ban_seconds"] == 600
    assert client.delete("/api/security/bans/nonsense/x").status_code == 422
    assert client.delete(f"/api/security/bans/source/{ATTACKER}").status_code == 200
    assert client.get("/api/security/bans").json()["bans"] == []
    assert client.delete(f"/api/security/bans/source/{ATTACKER}").status_code == 404


def test_unreadable_credentials_count_as_failures():
    h, _ = digest_harness()
    for n in range(1, 30):
        h.feed(invite(branch=f"z9hG4bK-m{n}", call_id=f"m{n}", extra="Authorization: Digest nonsense\r\n"))
    assert h.statuses() == [403] * 10
    assert h.ua.guard.source_banned(PEER.host, h.now)
