"""Load shedding in the UA core and the parser (issue 15), on a fake clock: bytes in, bytes out."""

from __future__ import annotations

import logging

from callbridge.sip import events as ev
from callbridge.sip.address import Address
from callbridge.sip.parser import MAX_HEADER_LINES, MAX_VIAS, PartialRequest, parse_message
from callbridge.sip.useragent import UserAgent, UserAgentConfig

from .sipfixtures import Harness, invite

FLOODER = Address("192.0.2.66", 5060, "udp")
PEER = Address("127.0.0.1", 5070, "udp")


def flood_invite(n: int) -> bytes:
    return invite(branch=f"z9hG4bK-flood{n}", call_id=f"flood-{n}@x")


def limited(rate: float = 10.0, burst: float = 20.0, **kwargs) -> Harness:
    config = UserAgentConfig(host="127.0.0.1", ports={"udp": 5060}, new_requests_per_source=rate,
                             new_requests_burst=burst, **kwargs)
    return Harness(ua=UserAgent(config))


def test_flood_from_one_source_gets_a_few_503s_then_silence():
    h = limited()
    for n in range(1000):  # one second at 1,000/s
        h.now = n / 1000
        h.feed(flood_invite(n), FLOODER)
    calls = [e for e in h.events if isinstance(e, ev.IncomingCall)]
    assert 20 <= len(calls) <= 31  # the burst plus one second at the rate
    responses = h.take()
    rejected = [r for r in responses if r.status == 503]
    assert len(rejected) == 5
    assert all(r.headers.get("Retry-After") == "5" and r.to_addr.tag for r in rejected)
    assert len(responses) == len(calls) + len(rejected)  # 100 Trying per admitted call; the rest: nothing
    limiter = h.ua.limiter
    assert (limiter.admitted, limiter.rejected, limiter.dropped) == (len(calls), 5, 1000 - len(calls) - 5)


def test_a_carrier_listed_by_address_is_not_rate_limited():
    import ipaddress

    from callbridge.call.trunks import InboundTrunkPolicy, TrunkTable

    table = TrunkTable([InboundTrunkPolicy("carrier", networks=[ipaddress.ip_network("192.0.2.0/24")])])
    h = limited()
    h.ua.rate_exempt = table.carrier_source
    for n in range(200):  # 200 calls in 0.2 s from the carrier's address: its business, not a flood
        h.now = n / 1000
        h.feed(flood_invite(n), FLOODER)
    assert sum(isinstance(e, ev.IncomingCall) for e in h.events) == 200
    assert not table.carrier_source("198.51.100.7") and not TrunkTable([]).carrier_source("192.0.2.66")


def test_another_source_and_in_dialog_requests_pass_during_a_flood():
    h = limited()
    h.feed(invite(), PEER)
    session = h.events[0].session
    h.ua.answer(session, b"v=0\r\n", h.now)
    h.pump()
    tag = h.take()[-1].to_addr.tag
    for n in range(500):
        h.feed(flood_invite(n), FLOODER)
    h.take()
    # The live caller's BYE (in the dialog, To tag) and a new caller are not shed.
    h.feed(invite(method="BYE", branch="z9hG4bK-bye", cseq=2, to_tag=tag, body=""), PEER)
    assert any(isinstance(e, ev.CallEnded) for e in h.events)
    h.feed(invite(call_id="other@y", branch="z9hG4bK-new"), Address("198.51.100.7", 5060, "udp"))
    new_calls = [e for e in h.events if isinstance(e, ev.IncomingCall)]
    assert new_calls[-1].session.call_id == "other@y"
    assert sum(e.session.source == FLOODER for e in new_calls) == 20  # the flooder's burst only


def test_too_many_transactions_gets_503():
    h = limited(rate=0, max_server_transactions=50)
    for n in range(60):
        h.feed(invite(method="OPTIONS", branch=f"z9hG4bK-o{n}", call_id=f"o{n}", body=""), PEER)
    statuses = [r.status for r in h.take()]
    assert statuses.count(200) == 50 and statuses.count(503) == 10
    assert h.ua.overload_rejected == 10
    h.advance(40)  # Timer J frees them (64·T1 = 32 s)
    h.feed(invite(method="OPTIONS", branch="z9hG4bK-later", call_id="later", body=""), PEER)
    assert [r.status for r in h.take()] == [200]


def test_flood_invites_never_acked_end_and_are_forgotten():
    # The flood's admitted calls are answered; nobody ACKs. RFC 3261 §13.3.1.4: after 64·T1 the
    # UA sends BYE and the call ends, leaving no session and no transaction behind.
    h = limited(rate=100, burst=100)
    for n in range(50):
        h.feed(flood_invite(n), FLOODER)
    for call in [e for e in h.events if isinstance(e, ev.IncomingCall)]:
        h.ua.answer(call.session, b"v=0\r\n", h.now)
    h.pump()
    assert len(h.ua.sessions) == 50
    h.advance(64 * 0.5 + 1)
    ended = [e for e in h.events if isinstance(e, ev.CallEnded) and e.reason == "no_ack"]
    assert len(ended) == 50
    assert h.ua.sessions == {}
    h.advance(64 * 0.5 + 1)  # the BYEs' own transactions time out too (nobody answers them)
    assert h.ua.transactions.counts == (0, 0)


def test_parse_errors_are_logged_once_per_source_per_interval(caplog):
    h = limited()
    with caplog.at_level(logging.WARNING, logger="callbridge.sip"):
        for n in range(3000):
            h.now = n / 1000
            h.feed(b"\x16\x03\x01 not sip at all\r\n\r\n", FLOODER)
            h.feed(invite(to_tag="x", branch=f"z9hG4bK-m{n}").replace(b"CSeq: 1 INVITE", b"CSeq: one"), FLOODER)
    lines = [r.getMessage() for r in caplog.records]
    assert 2 <= len(lines) <= 4, lines  # one per kind at t=0, none again before 10 s
    assert any("unparseable" in line for line in lines) and any("malformed" in line for line in lines)


def headers_request(extra_lines: list[str]) -> bytes:
    return invite(method="OPTIONS", body="", extra="".join(line + "\r\n" for line in extra_lines))


def test_header_line_cap_answers_513():
    ok = parse_message(headers_request([f"X-H{i}: v" for i in range(MAX_HEADER_LINES - 20)]))
    assert ok.method == "OPTIONS"
    try:
        parse_message(headers_request([f"X-H{i}: v" for i in range(MAX_HEADER_LINES + 1)]))
    except PartialRequest as exc:
        assert exc.status == 513 and exc.respondable
    else:
        raise AssertionError("too many header lines accepted")


def test_via_cap_answers_483_whether_in_lines_or_commas():
    many_lines = [f"Via: SIP/2.0/UDP 10.0.0.{i % 250}:5060;branch=z9hG4bK-{i}" for i in range(MAX_VIAS)]
    one_line = ["Via: " + ", ".join(f"SIP/2.0/UDP 10.0.1.{i % 250};branch=z9hG4bK-{i}" for i in range(MAX_VIAS))]
    for extra in (many_lines, one_line):
        try:
            parse_message(headers_request(extra))
        except PartialRequest as exc:
            assert exc.status == 483 and exc.respondable
        else:
            raise AssertionError("too many Vias accepted")
    assert parse_message(headers_request(many_lines[: MAX_VIAS - 1])).method == "OPTIONS"


def test_ua_answers_the_caps_with_an_error():
    ua = UserAgent(UserAgentConfig(host="127.0.0.1", ports={"udp": 5060}))
    ua.receive(headers_request([f"X-H{i}: v" for i in range(MAX_HEADER_LINES + 50)]), PEER, 0.0)
    ua.receive(headers_request([f"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-{i}" for i in range(100)]), PEER, 0.0)
    # Read the raw bytes: the 483 echoes every Via (RFC 3261 §8.2.6.2), so it is over the cap itself.
    assert [wire.split(b" ", 2)[1] for wire, _ in ua.datagrams_to_send()] == [b"513", b"483"]
