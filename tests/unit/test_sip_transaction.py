"""Client transaction timers (RFC 3261 §17.1) and outbound call flows, with fake time."""

from __future__ import annotations

from callbridge.sip import events as ev
from callbridge.sip.address import Address
from callbridge.sip.digest import DigestVerifier
from callbridge.sip.message import make_response
from callbridge.sip.parser import parse_message
from callbridge.sip.transaction import TransactionLayer, TransactionTimedOut
from callbridge.sip.uri import parse_uri

from .sipfixtures import Harness, invite

CALLEE = Address("127.0.0.1", 5080, "udp")


def options_request(branch="z9hG4bK-c1"):
    return parse_message(invite(method="OPTIONS", body="", branch=branch))


def test_timer_a_doubles_and_timer_b_times_out_invite():
    layer = TransactionLayer()
    layer.send_request(parse_message(invite()), CALLEE, 0.0)
    sends = [0.0]
    now = 0.0
    layer.datagrams_to_send()
    timed_out = None
    while (deadline := layer.next_deadline()) is not None:
        now = deadline
        layer.handle_timer(now)
        if layer.datagrams_to_send():
            sends.append(now)
        if (event := layer.next_event()) is not None:
            timed_out = (event, now)
    # Timer A: 0.5, 1, 2, 4, 8, 16 s gaps; Timer B fires at 64·T1 = 32 s.
    assert sends == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert isinstance(timed_out[0], TransactionTimedOut) and timed_out[0].reason == "B"
    assert timed_out[1] == 32.0


def test_timer_e_caps_at_t2_for_non_invite():
    layer = TransactionLayer()
    layer.send_request(options_request(), CALLEE, 0.0)
    layer.datagrams_to_send()
    sends = []
    while (deadline := layer.next_deadline()) is not None and deadline < 32:
        layer.handle_timer(deadline)
        if layer.datagrams_to_send():
            sends.append(deadline)
    gaps = [round(b - a, 3) for a, b in zip([0.0] + sends, sends, strict=False)]
    assert gaps[:4] == [0.5, 1.0, 2.0, 4.0] and set(gaps[4:]) == {4.0}


def test_reliable_transport_has_no_retransmits():
    layer = TransactionLayer()
    layer.send_request(options_request(), Address("127.0.0.1", 5080, "tcp"), 0.0)
    layer.datagrams_to_send()
    layer.handle_timer(31.0)
    assert layer.datagrams_to_send() == []
    layer.handle_timer(32.0)
    assert isinstance(layer.next_event(), TransactionTimedOut)


def test_non2xx_final_to_invite_is_acked_by_transaction_and_retransmit_reacked():
    layer = TransactionLayer()
    request = parse_message(invite())
    layer.send_request(request, CALLEE, 0.0)
    layer.datagrams_to_send()
    busy = make_response(request, 486, to_tag="callee")
    layer.receive_response(parse_message(busy.serialize()), 0.1)
    (ack_wire, _), = layer.datagrams_to_send()
    ack = parse_message(ack_wire)
    assert ack.method == "ACK" and ack.top_via.branch == request.top_via.branch
    layer.receive_response(parse_message(busy.serialize()), 0.2)
    assert [parse_message(w).method for w, _ in layer.datagrams_to_send()] == ["ACK"]


def outbound(h: Harness, **kwargs):
    session = h.ua.invite(parse_uri("sip:bob@127.0.0.1:5080"), h.now, sdp=b"v=0\r\n", destination=CALLEE, **kwargs)
    h.pump()
    (request,) = h.take()
    return session, request


def test_outbound_answer_sends_ack_and_emits_answered():
    h = Harness()
    session, request = outbound(h)
    h.feed(make_response(request, 180, to_tag="bob").serialize(), CALLEE)
    ok = make_response(request, 200, to_tag="bob", headers=[("Contact", "<sip:bob@127.0.0.1:5080>")], body=b"v=0\r\n")
    h.feed(ok.serialize(), CALLEE)
    (ack,) = h.take()
    assert ack.method == "ACK" and ack.cseq.number == 1 and ack.to_addr.tag == "bob"
    assert [type(e) for e in h.events] == [ev.CallProgress, ev.CallAnswered]
    h.feed(ok.serialize(), CALLEE)  # 2xx retransmission → the same ACK again
    assert [m.method for m in h.take()] == ["ACK"]


def test_outbound_401_is_answered_with_digest_once():
    h = Harness()
    session, request = outbound(h, credentials=("alice", "pw"))
    verifier = DigestVerifier("trunk", b"k")
    challenge = make_response(request, 401, to_tag="x", headers=[("WWW-Authenticate", verifier.challenge(0.0))])
    h.feed(challenge.serialize(), CALLEE)
    sent = h.take()
    retry = next(m for m in sent if getattr(m, "method", None) == "INVITE")
    assert retry.cseq.number == 2
    result = verifier.verify(retry.headers.get("Authorization"), method="INVITE",
                             password_lookup={"alice": "pw"}.get, now=1.0)
    assert result.ok
    # A second challenge for the retry is answered too; a third gives up.
    www_auth = [("WWW-Authenticate", verifier.challenge(0.0))]
    h.feed(make_response(retry, 401, to_tag="x", headers=www_auth).serialize(), CALLEE)
    retry2 = next(m for m in h.take() if getattr(m, "method", None) == "INVITE")
    h.feed(make_response(retry2, 401, to_tag="x", headers=[("WWW-Authenticate", verifier.challenge(0.0))]).serialize(),
           CALLEE)
    assert isinstance(h.events[-1], ev.CallFailed) and h.events[-1].status == 401


def test_cancel_waits_for_provisional_then_487_fails_call():
    h = Harness()
    session, request = outbound(h)
    h.ua.cancel(session, h.now)
    h.pump()
    assert h.take() == []  # RFC 3261 §9.1: no CANCEL before a provisional
    h.feed(make_response(request, 180, to_tag="bob").serialize(), CALLEE)
    (cancel,) = h.take()
    assert cancel.method == "CANCEL" and cancel.top_via.branch == request.top_via.branch
    h.feed(make_response(request, 487, to_tag="bob").serialize(), CALLEE)
    assert isinstance(h.events[-1], ev.CallFailed) and h.events[-1].status == 487
