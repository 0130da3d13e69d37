"""REGISTER client (RFC 3261 §10, §22) through the UA core with a fake clock: bytes in, requests and events out."""

from __future__ import annotations

import pytest

from callbridge.sip.address import Address
from callbridge.sip.digest import DigestVerifier, parse_credentials
from callbridge.sip.endpoint import SipEndpoint
from callbridge.sip.events import IncomingCall
from callbridge.sip.message import Request, make_response
from callbridge.sip.parser import parse_message
from callbridge.sip.registration import (
    BACKOFF_MAX_SECONDS,
    Binding,
    Registered,
    Registration,
    RegistrationEvent,
    RegistrationFailed,
    RegistrationState,
    Unregistered,
    backoff_delay,
    refresh_delay,
)
from callbridge.sip.uri import SipUri
from callbridge.sip.useragent import UserAgent, UserAgentConfig

from .sipfixtures import PEER, Harness, invite

REGISTRAR = Address("127.0.0.1", 5080, "udp")
USERNAME, PASSWORD, REALM = "trunkuser", "trunk-s3cret", "carrier.example"


def make_binding(**overrides) -> Binding:
    values = dict(name="carrier", registrar=SipUri(host="127.0.0.1", port=5080),
                  aor=SipUri(host="carrier.example", user=USERNAME),
                  contact=SipUri(host="127.0.0.1", user=USERNAME, port=5060),
                  expires=600, username=USERNAME, password=PASSWORD, destination=REGISTRAR)
    values.update(overrides)
    return Binding(**values)


class RegistrarSide:
    """The harness plus helpers that play the registrar."""

    def __init__(self, binding: Binding | None = None, jitter: float = 1.0) -> None:
        self.h = Harness()
        self.registration = Registration(binding or make_binding(), call_id="reg-call@test", from_tag="ftag",
                                         jitter=lambda: jitter, make_cnonce=lambda: "cafe0001")
        self.verifier = DigestVerifier(REALM, b"registrar-secret", algorithms=("MD5",))

    @property
    def registered_events(self) -> list:
        """Registration changes, as the UA core reports them: through next_event(), like sessions."""
        return [e for e in self.h.events if isinstance(e, RegistrationEvent)]

    def start(self) -> Request:
        self.h.ua.register(self.registration, self.h.now)
        self.h.pump()
        return self.only_request()

    def only_request(self) -> Request:
        sent = self.h.take()
        assert len(sent) == 1, sent
        assert isinstance(sent[0], Request) and sent[0].method == "REGISTER"
        return sent[0]

    def answer(self, request: Request, status: int, headers: list[tuple[str, str]] | None = None) -> None:
        response = make_response(request, status, to_tag="regtag", headers=headers)
        self.h.feed(response.serialize(), REGISTRAR)

    def challenge(self, request: Request, *, stale: bool = False, status: int = 401) -> None:
        header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        self.answer(request, status, [(header, self.verifier.challenge(self.h.now, stale=stale))])

    def grant(self, request: Request, expires: int, *, in_contact: bool = True) -> None:
        if in_contact:
            self.answer(request, 200, [("Contact", f"<{self.registration.binding.contact}>;expires={expires}")])
        else:
            self.answer(request, 200, [("Expires", str(expires))])

    def state(self) -> RegistrationState:
        return self.registration.status(self.h.now).state


def authorised(side: RegistrarSide) -> Request:
    """Run the challenge exchange; returns the authenticated REGISTER."""
    first = side.start()
    side.challenge(first)
    return side.only_request()


def test_first_register_names_the_aor_and_asks_for_the_configured_interval():
    side = RegistrarSide()
    request = side.start()
    assert str(request.uri) == "sip:127.0.0.1:5080"
    assert request.to_addr.uri == SipUri(host="carrier.example", user=USERNAME)
    assert request.from_addr.uri == request.to_addr.uri and request.from_addr.tag == "ftag"
    assert request.contacts[0].params["expires"] == "600" and request.headers.get("Expires") == "600"
    assert request.call_id == "reg-call@test" and request.cseq.number == 1
    assert request.headers.get("Authorization") is None
    assert request.top_via.branch.startswith("z9hG4bK")
    assert side.h.sent == [] and side.state() is RegistrationState.REGISTERING


def test_challenge_is_answered_with_valid_digest_same_call_id_and_next_cseq():
    side = RegistrarSide()
    first = side.start()
    side.challenge(first)
    second = side.only_request()
    assert second.call_id == first.call_id
    assert second.cseq.number == first.cseq.number + 1
    assert second.top_via.branch != first.top_via.branch  # a new transaction (§22.2)
    header = second.headers.get("Authorization")
    result = side.verifier.verify(header, method="REGISTER", password_lookup={USERNAME: PASSWORD}.get, now=side.h.now)
    assert result.ok, result.reason
    credentials = parse_credentials(header)
    assert credentials.uri == "sip:127.0.0.1:5080" and credentials.nc == "00000001"


def test_proxy_challenge_gets_proxy_authorization():
    side = RegistrarSide()
    first = side.start()
    side.challenge(first, status=407)
    second = side.only_request()
    assert second.headers.get("Authorization") is None
    assert parse_credentials(second.headers.get("Proxy-Authorization")).username == USERNAME


def test_granted_expiry_comes_from_our_contact_and_refresh_reuses_the_nonce_with_next_nc():
    side = RegistrarSide()
    request = authorised(side)
    side.grant(request, 120)  # the registrar shortens our 600 s (§10.2.4)
    status = side.registration.status(side.h.now)
    assert status.state is RegistrationState.REGISTERED and status.expires_at == pytest.approx(120)
    assert [type(e) for e in side.registered_events] == [Registered]
    # Refresh at the later of half-time and 60 s before expiry: 60 s here.
    side.h.advance(59.9)
    assert side.h.take() == []
    side.h.advance(0.2)
    refresh = side.only_request()
    assert refresh.call_id == request.call_id and refresh.cseq.number == request.cseq.number + 1
    assert refresh.contacts[0].params["expires"] == "600"  # we keep asking for what we want
    credentials = parse_credentials(refresh.headers.get("Authorization"))
    assert credentials.nc == "00000002"
    assert side.verifier.verify(refresh.headers.get("Authorization"), method="REGISTER",
                                password_lookup={USERNAME: PASSWORD}.get, now=side.h.now).ok
    assert side.state() is RegistrationState.REGISTERED  # the old binding holds while refreshing


def test_expires_header_is_used_when_the_contact_carries_none():
    side = RegistrarSide()
    side.grant(side.start(), 30, in_contact=False)
    assert side.registration.status(side.h.now).expires_at == pytest.approx(30)
    side.h.advance(14.9)
    assert side.h.take() == []
    side.h.advance(0.2)  # 30 s interval: refresh at half-time
    assert side.only_request().method == "REGISTER"


def test_refresh_timing_rule():
    assert refresh_delay(3600) == 3540
    assert refresh_delay(120) == 60
    assert refresh_delay(4) == 2


def test_stale_nonce_on_refresh_is_answered_again():
    side = RegistrarSide()
    side.grant(authorised(side), 120)
    side.h.advance(60)
    refresh = side.only_request()
    side.challenge(refresh, stale=True)
    retry = side.only_request()
    credentials = parse_credentials(retry.headers.get("Authorization"))
    refreshed = parse_credentials(refresh.headers.get("Authorization"))
    assert credentials.nc == "00000001" and credentials.nonce != refreshed.nonce
    side.grant(retry, 120)
    assert side.state() is RegistrationState.REGISTERED


def test_second_stale_challenge_after_answering_is_retried():
    side = RegistrarSide()
    answered = authorised(side)
    side.challenge(answered, stale=True)
    again = side.only_request()
    assert again.headers.get("Authorization") is not None
    side.grant(again, 120)
    assert side.state() is RegistrationState.REGISTERED


def test_second_challenge_without_stale_means_wrong_credentials_and_backoff():
    side = RegistrarSide()
    answered = authorised(side)
    side.challenge(answered)
    assert side.h.take() == []
    status = side.registration.status(side.h.now)
    assert status.state is RegistrationState.BACKOFF and status.last_status == 401
    assert "credentials rejected" in status.last_error
    failed = side.registered_events[-1]
    assert isinstance(failed, RegistrationFailed) and failed.retry_at == pytest.approx(5.0)
    # The retry starts afresh, without the refused nonce.
    side.h.advance(5.0)
    assert side.only_request().headers.get("Authorization") is None


def test_challenge_without_credentials_fails_for_good():
    side = RegistrarSide(make_binding(username=None, password=None))
    side.challenge(side.start())
    status = side.registration.status(side.h.now)
    assert status.state is RegistrationState.FAILED and status.next_attempt_at is None
    side.h.advance(3600)
    assert side.h.take() == []


def test_interval_too_brief_retries_with_min_expires():
    side = RegistrarSide(make_binding(expires=30))
    first = side.start()
    side.answer(first, 423, [("Min-Expires", "90")])  # §10.3
    retry = side.only_request()
    assert retry.headers.get("Expires") == "90" and retry.contacts[0].params["expires"] == "90"
    assert retry.cseq.number == 2
    side.grant(retry, 90)
    assert side.state() is RegistrationState.REGISTERED


def test_interval_too_brief_without_a_larger_minimum_backs_off():
    side = RegistrarSide(make_binding(expires=30))
    side.answer(side.start(), 423, [("Min-Expires", "30")])
    assert side.h.take() == []
    assert side.state() is RegistrationState.BACKOFF


def test_failures_back_off_exponentially_up_to_the_cap():
    side = RegistrarSide()
    request = side.start()
    waits = []
    for _ in range(9):
        side.answer(request, 503)
        status = side.registration.status(side.h.now)
        assert status.state is RegistrationState.BACKOFF and status.last_status == 503
        waits.append(status.next_attempt_at - side.h.now)
        side.h.advance(waits[-1])
        request = side.only_request()
    assert waits == [5, 10, 20, 40, 80, 160, 300, 300, 300]
    assert side.registration.status(side.h.now).consecutive_failures == 9
    side.grant(request, 600)
    assert side.registration.status(side.h.now).consecutive_failures == 0


def test_backoff_is_randomised_between_half_and_all_of_the_wait():
    assert backoff_delay(1, 0.0) == pytest.approx(2.5)
    assert backoff_delay(3, 0.5) == pytest.approx(15.0)
    assert backoff_delay(50, 0.999) <= BACKOFF_MAX_SECONDS


def test_retry_after_stretches_the_backoff():
    side = RegistrarSide()
    side.answer(side.start(), 503, [("Retry-After", "120")])
    assert side.registration.status(side.h.now).next_attempt_at == pytest.approx(120)


def test_forbidden_backs_off_with_last_status():
    side = RegistrarSide()
    side.answer(side.start(), 403)
    status = side.registration.status(side.h.now)
    assert (status.state, status.last_status, status.last_error) == (RegistrationState.BACKOFF, 403, "403 Forbidden")


def test_transaction_timeout_counts_as_408_and_backs_off():
    side = RegistrarSide()
    side.start()
    side.h.advance(31.9)  # Timer E retransmissions only
    assert all(m.method == "REGISTER" and m.cseq.number == 1 for m in side.h.take())
    side.h.advance(0.2)  # Timer F = 64·T1
    status = side.registration.status(side.h.now)
    assert status.state is RegistrationState.BACKOFF and status.last_status == 408


def test_refresh_failure_keeps_retrying_and_the_lapsed_binding_is_not_reported():
    side = RegistrarSide()
    side.grant(side.start(), 120)
    side.h.advance(60)
    side.answer(side.only_request(), 500)
    status = side.registration.status(side.h.now)
    assert status.state is RegistrationState.BACKOFF and status.expires_at == pytest.approx(120)
    side.h.advance(61)  # past the old expiry: the binding is gone
    assert side.registration.status(side.h.now).expires_at is None


def test_stray_and_provisional_responses_are_ignored():
    side = RegistrarSide()
    request = side.start()
    side.answer(request, 100)
    assert side.state() is RegistrationState.REGISTERING
    stale = make_response(request, 200, to_tag="x", headers=[("Contact", "<sip:other@10.0.0.1>;expires=60")])
    stale.headers.set("CSeq", "99 REGISTER")
    side.h.feed(stale.serialize(), REGISTRAR)
    assert side.state() is RegistrationState.REGISTERING


def test_unregister_sends_expires_zero_with_credentials_and_stops():
    side = RegistrarSide()
    request = authorised(side)
    side.grant(request, 120)
    side.h.ua.unregister(side.registration, side.h.now)
    side.h.pump()
    removal = side.only_request()
    assert removal.headers.get("Expires") == "0" and removal.contacts[0].params["expires"] == "0"
    assert removal.call_id == request.call_id and removal.cseq.number == request.cseq.number + 1
    assert parse_credentials(removal.headers.get("Authorization")).nc == "00000002"
    assert side.state() is RegistrationState.UNREGISTERING
    side.answer(removal, 200)
    assert side.state() is RegistrationState.UNREGISTERED
    assert isinstance(side.registered_events[-1], Unregistered)
    side.h.advance(7200)
    assert side.h.take() == []  # no refreshes after unregistering


def test_unregister_when_nothing_is_bound_sends_nothing():
    side = RegistrarSide()
    side.answer(side.start(), 403)
    side.h.ua.unregister(side.registration, side.h.now)
    side.h.pump()
    assert side.h.take() == [] and side.state() is RegistrationState.UNREGISTERED
    side.h.advance(600)
    assert side.h.take() == []


def test_unregister_challenged_is_answered_once():
    side = RegistrarSide()
    side.grant(side.start(), 120)
    side.h.ua.unregister(side.registration, side.h.now)
    side.h.pump()
    removal = side.only_request()
    side.challenge(removal)
    answered = side.only_request()
    assert answered.headers.get("Expires") == "0" and answered.headers.get("Authorization") is not None
    side.challenge(answered)  # refused again: give up quietly
    assert side.h.take() == [] and side.state() is RegistrationState.UNREGISTERED


def test_garbage_from_the_registrar_does_not_disturb_the_registration():
    side = RegistrarSide()
    request = side.start()
    side.h.feed(b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n", REGISTRAR)
    side.answer(request, 200, [("Contact", "<sip:trunkuser@127.0.0.1:5060>;expires=banana"), ("Expires", "45")])
    assert side.registration.status(side.h.now).expires_at == pytest.approx(45)


# -- configuration and the trunk binding ---------------------------------------------


def test_trunk_register_section_builds_the_binding():
    from callbridge.app.config import Config
    from callbridge.app.registrations import binding_for
    from callbridge.sip.useragent import UserAgent, UserAgentConfig

    config = Config.model_validate({"outbound_trunks": [{
        "name": "carrier", "host": "sip.carrier.example", "port": 5080, "transport": "tcp",
        "username": "acct", "password": "pw", "register": {"expires": 300, "contact_user": "line1"}}]})
    ua = UserAgent(UserAgentConfig(host="203.0.113.5", ports={"udp": 5060, "tcp": 5062}))
    binding = binding_for(config.outbound_trunks[0], ua)
    assert str(binding.registrar) == "sip:sip.carrier.example:5080;transport=tcp"
    assert str(binding.aor) == "sip:acct@sip.carrier.example"
    assert str(binding.contact) == "sip:line1@203.0.113.5:5062;transport=tcp"
    assert (binding.username, binding.password, binding.expires) == ("acct", "pw", 300)
    assert binding.destination == Address("sip.carrier.example", 5080, "tcp")


@pytest.mark.parametrize(("register", "trunk_auth", "message"), [
    ({}, {}, "register.username: needed"),
    ({"username": "acct"}, {}, "register.password: needed"),
    ({"aor": "tel:+15551234"}, {"username": "u", "password": "p"}, "must be a sip: or sips: URI with a user"),
    ({"expires": 0}, {"username": "u", "password": "p"}, "greater than or equal to 1"),
    ({"refresh": 10}, {"username": "u", "password": "p"}, "Extra inputs are not permitted"),
])
def test_register_section_errors_are_clear(register, trunk_auth, message):
    from pydantic import ValidationError

    from callbridge.app.config import OutboundTrunk

    with pytest.raises(ValidationError, match=message):
        OutboundTrunk.model_validate({"name": "carrier", "host": "h", **trunk_auth, "register": register})


def test_disabled_register_section_needs_no_credentials():
    from callbridge.app.config import OutboundTrunk

    trunk = OutboundTrunk.model_validate({"name": "carrier", "host": "h", "register": {"enabled": False}})
    assert trunk.registration is not None and not trunk.registration.enabled


def test_register_error_in_a_file_points_at_the_trunk(tmp_path):
    from callbridge.app.config import SourceError, load_config

    path = tmp_path / "callbridge.yaml"
    path.write_text("outbound_trunks:\n  - name: carrier\n    host: h\n    register:\n      expires: 60\n")
    with pytest.raises(SourceError, match="register.username"):
        load_config(path)


def test_registration_events_come_out_of_next_event_in_order_with_session_events():
    side = RegistrarSide()
    request = authorised(side)
    side.h.feed(invite())  # a call arrives between the challenge and the grant
    side.grant(request, 120)
    kinds = [type(e) for e in side.h.events]
    assert kinds == [IncomingCall, Registered]


async def test_endpoint_hands_registration_events_to_their_listener_and_session_events_to_the_owner():
    session_events: list = []
    registration_events: list = []
    endpoint = SipEndpoint(UserAgent(UserAgentConfig(host="127.0.0.1")), session_events.append)
    endpoint.on_registration_event = registration_events.append
    await endpoint.start("127.0.0.1", udp_port=0)
    try:
        registration = Registration(make_binding(username=None, password=None), call_id="reg@test", from_tag="ftag")
        endpoint.ua.register(registration, endpoint.now())
        [(wire, _)] = endpoint.ua.datagrams_to_send()  # taken here instead of sent to the (absent) registrar
        register = parse_message(wire)
        assert isinstance(register, Request)
        ok = make_response(register, 200, to_tag="regtag",
                           headers=[("Contact", f"<{registration.binding.contact}>;expires=60")])
        endpoint._on_datagram(ok.serialize(), REGISTRAR)  # what the transport does with a datagram
        endpoint._on_datagram(invite(), PEER)
        assert [type(e) for e in registration_events] == [Registered]
        assert [type(e) for e in session_events] == [IncomingCall]
    finally:
        await endpoint.close()
