"""Placing calls: the toll-fraud check, the INVITE with our offer, and the answer that brings media up."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..rtp.socket import RtpSocket
from ..sip import events as sip_events
from ..sip.address import Address, address_for_uri
from ..sip.sdp import SdpError, apply_answer, parse_sdp
from ..sip.uri import SipUri, parse_uri
from . import events as ev
from . import srtp_policy
from .call import Call, CallStatus, Direction, EndReason, Leg
from .dial_policy import DENY_UNAVAILABLE, DialDenied, DialPolicy, DialPolicyUnavailable, TrunkRules

if TYPE_CHECKING:
    from .manager import CallManager

log = logging.getLogger("callbridge.call")

# A toll-fraud attempt comes in bursts: one warning per interval, with a count.
DIAL_DENIED_LOG_INTERVAL_S = 10.0

DialListener = Callable[[str, str, str | None], None]  # (event, reason, trunk): the policy's metrics


def target_text(uri: SipUri) -> str:
    """What dial patterns see: scheme, user, host and port, without parameters or headers."""
    port = uri.port or (5061 if uri.scheme == "sips" else 5060)
    user = f"{uri.user}@" if uri.user else ""
    return f"{uri.scheme}:{user}{uri.host}:{port}"


class OutboundCalls:
    def __init__(self, manager: CallManager) -> None:
        self.manager = manager
        # Toll-fraud guard (call/dial_policy.py): every dial asks it first. None only in a client
        # (the call simulator dials what its operator typed); the server always sets one.
        self.policy: DialPolicy | None = None
        self.rules: Callable[[], list[TrunkRules]] = lambda: []  # the outbound trunks, current
        self.trunk_srtp: Callable[[str | None], str | None] = lambda trunk: None  # an outbound trunk's srtp
        self.dial_listeners: list[DialListener] = []
        self._tickets: dict[str, int] = {}  # call id -> policy ticket, released when the call ends
        self._srtp_offers: dict[str, tuple[str, list]] = {}  # call id -> (mode, our keys) until answered
        self._denied_logged_at = -DIAL_DENIED_LOG_INTERVAL_S
        self._denied_unlogged = 0

    async def dial(self, target: str, *, from_user: str | None = None, headers: list[tuple[str, str]] | None = None,
                   credentials: tuple[str, str] | None = None, destination: Address | None = None,
                   trunk: str | None = None, prepare: Callable[[Call], None] | None = None) -> Call:
        """INVITE ``target``. ``prepare`` sees the call before its first event (to attach a driver, say).

        Raises ValueError for a bad target, DialDenied when policy refuses, and NoMediaPortsError
        (an OSError) when no RTP port is free."""
        manager = self.manager
        uri = parse_uri(target)
        if not isinstance(uri, SipUri):
            raise ValueError(f"not a SIP URI: {target}")
        srtp_mode = srtp_policy.effective_mode(self.trunk_srtp(trunk) or manager.media.policy.srtp,
                                               (destination or address_for_uri(uri)).transport,
                                               where=f"trunk {trunk}" if trunk else "server")  # SrtpRefused: ValueError
        proto, keys = srtp_policy.offer_terms(srtp_mode)
        ticket, cap_reached = await self._admit(uri, trunk)  # DialDenied (an OSError) before anything is opened
        try:
            socket = await manager.media.open_rtp()
        except BaseException:
            self._release(ticket)
            raise
        try:
            offer = manager.media.initial_offer(socket, proto, keys)
            session = manager.ua.invite(uri, manager.now(), sdp=offer.encode(), from_user=from_user,
                                        headers=headers, credentials=credentials, destination=destination)
        except BaseException:
            socket.close()  # the port pair must not outlive a call that was never placed
            self._release(ticket)
            raise
        leg = Leg(session)
        call = Call(direction=Direction.OUTBOUND, leg=leg, called=uri.user, status=CallStatus.DIALING,
                    caller=from_user, trunk=trunk,
                    sip_headers={n: v for n, v in headers or () if n.lower().startswith("x-")})
        leg.pending_socket, leg.offer = socket, offer
        self._srtp_offers[call.id] = (srtp_mode, keys)
        session.app = call
        if ticket is not None:
            self._tickets[call.id] = ticket
        if prepare is not None:
            prepare(call)
        manager.register(call)
        manager.set_status(call, CallStatus.DIALING)
        call.publish(ev.InviteSent(target=str(uri), destination=str(session.destination)))
        if cap_reached is not None:  # this call filled a daily cap: the next one is refused
            call.publish(ev.DailyCapReached(scope=cap_reached))
        manager.endpoint.flush()
        return call

    async def answered(self, call: Call, event: sip_events.CallAnswered) -> None:
        """The callee's 200: apply its answer to our offer and bring the media up."""
        manager = self.manager
        leg = call.leg.sip()  # we dial SIP only
        socket: RtpSocket = leg.pending_socket
        leg.pending_socket = None
        try:
            answer = apply_answer(leg.offer, parse_sdp(event.response.body))
            srtp_mode, keys = self._srtp_offers.pop(call.id, (srtp_policy.OFF, []))
            socket.srtp = srtp_policy.secure_offer_answered(keys, srtp_mode, answer)
        except (SdpError, srtp_policy.SrtpRefused) as exc:
            log.warning("bad SDP answer on %s: %s", call.sip_call_id, exc)
            socket.close()
            manager.hangup_leg(call, EndReason.ERROR)
            return
        leg.sdp_session_id = leg.offer.origin.sess_id
        leg.stream = manager.media.open_stream(call, socket, answer, manager.dtmf_handler(call))
        leg.stream.confirm_remote()  # the callee's own answer to our INVITE
        manager.media.start(call)
        manager.set_status(call, CallStatus.ACTIVE)
        manager.run_app(call)

    def forget(self, call: Call) -> None:
        """The call ended: give its policy ticket back."""
        self._release(self._tickets.pop(call.id, None))
        self._srtp_offers.pop(call.id, None)

    # -- policy -------------------------------------------------------------------------------------

    def rules_for(self, uri: SipUri, trunk: str | None) -> TrunkRules | None:
        """The named trunk's rules; with no name, a trunk whose address the URI spells."""
        rules = self.rules()
        if trunk is not None:
            return next((r for r in rules if r.name == trunk), TrunkRules(name=trunk))
        host, port = uri.host.lower(), uri.port or (5061 if uri.scheme == "sips" else 5060)
        return next((r for r in rules if r.host.lower() == host and r.port == port), None)

    async def _admit(self, uri: SipUri, trunk: str | None) -> tuple[int | None, str | None]:
        """(ticket, daily cap this dial filled) for an allowed dial; DialDenied otherwise, and
        DialPolicyUnavailable (a DialDenied) when a cluster's shared ledger cannot count the dial."""
        if self.policy is None:
            return None, None
        rules = self.rules_for(uri, trunk)
        decision = await self.policy.decide(target_text(uri), uri.user_decoded, rules, self.manager.now())
        if not decision.allowed:
            self.denied(decision.reason, decision.detail, decision.trunk)
            if decision.reason == DENY_UNAVAILABLE:
                raise DialPolicyUnavailable(decision.reason, decision.detail)
            raise DialDenied(decision.reason, decision.detail)
        if decision.cap_reached is not None:
            log.warning("outbound daily cap reached", extra={"scope": decision.cap_reached})
            self._tell("daily_cap_reached", decision.cap_reached, decision.trunk)
        return decision.ticket, decision.cap_reached

    def _release(self, ticket: int | None) -> None:
        if self.policy is not None:
            self.policy.release(ticket)

    def denied(self, reason: str, detail: str, trunk: str | None) -> None:
        """Count and (throttled) log a dial the policy refused."""
        self._denied_unlogged += 1
        now = time.monotonic()
        if now - self._denied_logged_at >= DIAL_DENIED_LOG_INTERVAL_S:
            log.warning("outbound call refused by policy: %s (%d refused since the last warning)", detail,
                        self._denied_unlogged, extra={"reason": reason, "trunk": trunk})
            self._denied_logged_at, self._denied_unlogged = now, 0
        self._tell("denied", reason, trunk)

    def _tell(self, event: str, reason: str, trunk: str | None) -> None:
        for listener in self.dial_listeners:
            listener(event, reason, trunk)
