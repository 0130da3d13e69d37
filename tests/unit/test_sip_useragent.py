"""The UA core fed bytes with a fake clock: RFC 3261 behaviour without sockets or sleeps."""

from __future__ import annotations

import pytest

from callbridge.sip import events as ev
from callbridge.sip.digest import DigestVerifier, build_authorization
from callbridge.sip.useragent import InboundAuth

from .sipfixtures import Harness, invite

ACK = (
    "ACK sip:demo@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-ack1;rport\r\n"
    "From: <sip:alice@127.0.0.1:5070>;tag=alice-tag\r\nTo: <sip:demo@127.0.0.1:5060>;tag={tag}\r\n"
    "Call-ID: call-1@peer\r\nCSeq: {cseq} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def answered_call(h: Harness):
    h.feed(invite())
    call = next(e for e in h.events if isinstance(e, ev.IncomingCall))
    h.ua.answer(call.session, b"v=0\r\n", h.now)
    h.pump()
    return call.session


def test_invite_gets_100_then_incoming_call_event():
    h = Harness()
    h.feed(invite())
    assert h.statuses() == [100]
    assert isinstance(h.events[0], ev.IncomingCall)


def test_retransmitted_invite_is_absorbed_and_last_response_resent():
    h = Harness()
    h.feed(invite())
    session = h.events[0].session
    h.ua.ring(session, h.now)
    h.pump()
    assert h.statuses() == [100, 180]
    h.feed(invite())  # same branch: a retransmission
    assert h.statuses() == [180]
    assert len([e for e in h.events if isinstance(e, ev.IncomingCall)]) == 1


def test_2xx_retransmitted_with_backoff_until_ack():
    h = Harness()
    session = answered_call(h)
    responses = h.take()
    assert responses[-1].status == 200
    tag = responses[-1].to_addr.tag
    # RFC 3261 §13.3.1.4: T1, 2·T1, 4·T1 ... capped at T2.
    h.advance(0.5)
    assert h.statuses() == [200]
    h.advance(1.0)
    assert h.statuses() == [200]
    h.feed(ACK.format(tag=tag, cseq=1).encode())
    assert any(isinstance(e, ev.CallConfirmed) and e.session is session for e in h.events)
    h.advance(10)
    assert h.statuses() == []


def test_retransmitted_invite_after_2xx_resends_the_2xx():
    h = Harness()
    answered_call(h)
    h.take()
    h.feed(invite())
    assert h.statuses() == [200]


def test_missing_ack_ends_call_with_bye_after_64_t1():
    h = Harness()
    session = answered_call(h)
    h.take()
    h.advance(33)
    sent = h.take()
    assert sent[-1].method == "BYE"
    assert any(isinstance(e, ev.CallEnded) and e.reason == "no_ack" for e in h.events)
    assert not session.is_active


def test_bye_in_dialog_gets_200_and_ends_call():
    h = Harness()
    answered_call(h)
    tag = h.take()[-1].to_addr.tag
    h.feed(ACK.format(tag=tag, cseq=1).encode())
    h.feed(invite(method="BYE", branch="z9hG4bK-bye", cseq=2, to_tag=tag, body=""))
    assert h.statuses() == [200]
    assert isinstance(h.events[-1], ev.CallEnded) and h.events[-1].reason == "remote_bye"


def test_bye_for_unknown_dialog_gets_481():
    h = Harness()
    h.feed(invite(method="BYE", branch="z9hG4bK-bye", cseq=2, to_tag="nope", body=""))
    assert h.statuses() == [481]


def test_cancel_during_ringing_gives_200_and_487():
    h = Harness()
    h.feed(invite())
    h.ua.ring(h.events[0].session, h.now)
    h.pump()
    h.take()
    h.feed(invite(method="CANCEL", body=""))  # same branch as the INVITE (RFC 3261 §9.1)
    sent = h.take()
    assert [(m.status, m.cseq.method) for m in sent] == [(200, "CANCEL"), (487, "INVITE")]
    assert isinstance(h.events[-1], ev.CallCancelled)


def test_cancel_without_matching_invite_gets_481():
    h = Harness()
    h.feed(invite(method="CANCEL", body="", branch="z9hG4bK-other"))
    assert h.statuses() == [481]


def test_options_gets_200_with_allow_and_accept():
    h = Harness()
    h.feed(invite(method="OPTIONS", body="", branch="z9hG4bK-opt"))
    (response,) = h.take()
    assert response.status == 200
    assert "INVITE" in response.headers.get("Allow")
    assert "application/sdp" in response.headers.get("Accept")


def test_unknown_method_gets_501_with_allow():
    h = Harness()
    h.feed(invite(method="FROBNICATE", body="", branch="z9hG4bK-x"))
    (response,) = h.take()
    assert response.status == 501 and "BYE" in response.headers.get("Allow")


def test_unsupported_require_gets_420():
    h = Harness()
    h.feed(invite(extra="Require: foo, 100rel\r\n"))
    (response,) = h.take()
    assert response.status == 420 and response.headers.get("Unsupported") == "foo"


def test_malformed_request_gets_400_not_a_crash():
    h = Harness()
    h.feed(invite(body="short").replace(b"Content-Length: 5", b"Content-Length: 50"))
    (response,) = h.take()
    assert response.status == 400


def test_garbage_is_dropped():
    h = Harness()
    h.feed(b"\x00\xffnot sip at all\r\n\r\n")
    assert h.take() == []


def test_info_dtmf_relay_becomes_event():
    h = Harness()
    answered_call(h)
    tag = h.take()[-1].to_addr.tag
    body = "Signal=5\r\nDuration=160\r\n"
    h.feed(invite(method="INFO", branch="z9hG4bK-info", cseq=2, to_tag=tag, body=body).replace(
        b"application/sdp", b"application/dtmf-relay"))
    assert h.statuses() == [200]
    assert isinstance(h.events[-1], ev.DtmfInfoReceived) and h.events[-1].digit == "5"


def test_session_timer_too_small_gets_422():
    h = Harness()
    h.feed(invite(extra="Session-Expires: 30\r\nSupported: timer\r\n"))
    (response,) = h.take()
    assert response.status == 422 and response.headers.get("Min-SE") == "90"


def test_session_timer_negotiated_and_expiry_sends_bye():
    h = Harness()
    h.feed(invite(extra="Session-Expires: 120\r\nSupported: timer\r\n"))
    session = h.events[0].session
    h.ua.answer(session, b"v=0\r\n", h.now)
    h.pump()
    ok = h.take()[-1]
    assert ok.headers.get("Session-Expires") == "120;refresher=uac"
    assert ok.headers.get("Require") == "timer"
    h.feed(ACK.format(tag=ok.to_addr.tag, cseq=1).encode())
    # RFC 4028 §10: without a refresh, give up at 120 − min(32, 40) = 88 s.
    h.advance(87)
    assert session.is_active
    h.advance(2)
    assert not session.is_active
    assert "BYE" in [getattr(m, "method", None) for m in h.take()]


def test_100rel_required_sends_reliable_180_until_prack():
    h = Harness()
    h.feed(invite(extra="Require: 100rel\r\n"))
    session = h.events[0].session
    h.ua.ring(session, h.now)
    h.pump()
    ringing = h.take()[-1]
    assert ringing.status == 180 and ringing.headers.get("RSeq") == "1"
    h.advance(0.6)
    assert h.statuses() == [180]  # retransmitted
    prack = invite(method="PRACK", branch="z9hG4bK-prack", cseq=2, to_tag=ringing.to_addr.tag, body="",
                   extra="RAck: 1 1 INVITE\r\n")
    h.feed(prack)
    assert h.statuses() == [200]
    h.advance(5)
    assert h.statuses() == []


def test_refer_sent_and_notify_progress_reported():
    h = Harness()
    session = answered_call(h)
    tag = h.take()[-1].to_addr.tag
    h.feed(ACK.format(tag=tag, cseq=1).encode())
    h.ua.refer(session, "sip:operator@127.0.0.1:5099", h.now)
    h.pump()
    (refer,) = h.take()
    assert refer.method == "REFER" and refer.headers.get("Refer-To") == "<sip:operator@127.0.0.1:5099>"
    notify = invite(method="NOTIFY", branch="z9hG4bK-n1", cseq=2, to_tag=tag, body="SIP/2.0 200 OK\r\n",
                    extra="Event: refer\r\nSubscription-State: terminated;reason=noresource\r\n").replace(
        b"application/sdp", b"message/sipfrag")
    h.feed(notify)
    assert h.statuses() == [200]
    progress = h.events[-1]
    assert isinstance(progress, ev.ReferProgress) and progress.status == 200 and progress.final


def test_digest_challenge_then_accept():
    h = Harness()
    verifier = DigestVerifier("callbridge", b"secret")
    h.ua.inbound_auth = lambda request, source: InboundAuth(verifier, {"alice": "pw"}.get)
    h.feed(invite())
    (challenge,) = h.take()
    assert challenge.status == 401
    value = challenge.headers.get_all("WWW-Authenticate")[0]
    auth = build_authorization(value, method="INVITE", uri="sip:127.0.0.1:5060", username="alice", password="pw",
                               cnonce="c1")
    h.feed(invite(branch="z9hG4bK-inv2", cseq=2, extra=f"Authorization: {auth}\r\n"))
    assert h.statuses() == [100]
    assert isinstance(h.events[-1], ev.IncomingCall)


@pytest.mark.parametrize("password", ["wrong", ""])
def test_digest_wrong_password_gets_403(password):
    h = Harness()
    verifier = DigestVerifier("callbridge", b"secret")
    h.ua.inbound_auth = lambda request, source: InboundAuth(verifier, {"alice": "pw"}.get)
    h.feed(invite())
    value = h.take()[0].headers.get_all("WWW-Authenticate")[0]
    auth = build_authorization(value, method="INVITE", uri="sip:demo@127.0.0.1:5060", username="alice",
                               password=password, cnonce="c1")
    h.feed(invite(branch="z9hG4bK-inv2", cseq=2, extra=f"Authorization: {auth}\r\n"))
    assert h.statuses() == [403]
    assert not any(isinstance(e, ev.IncomingCall) for e in h.events)


def test_incoming_refer_gets_202_and_a_trying_notify():
    h = Harness()
    answered_call(h)
    tag = h.take()[-1].to_addr.tag
    h.feed(ACK.format(tag=tag, cseq=1).encode())
    h.feed(invite(method="REFER", branch="z9hG4bK-ref", cseq=2, to_tag=tag, body="",
                  extra="Refer-To: <sip:bob@127.0.0.1:5099>\r\n"))
    sent = h.take()
    assert sent[0].status == 202
    notify = sent[1]
    # RFC 3515 §2.4.4: an immediate NOTIFY with a 100 Trying sipfrag.
    assert notify.method == "NOTIFY" and notify.headers.get("Event") == "refer"
    assert notify.body.startswith(b"SIP/2.0 100")
    refer = h.events[-1]
    assert isinstance(refer, ev.ReferReceived) and str(refer.refer_to.uri) == "sip:bob@127.0.0.1:5099"
    h.ua.notify_refer(refer.session, 200, "OK", h.now)
    h.pump()
    (final,) = h.take()
    assert final.body.startswith(b"SIP/2.0 200") and final.headers.get("Subscription-State").startswith("terminated")
