"""The server side: inbound requests (RFC 3261 §8.2, §12–§15) and the call layer's answers to them.

:class:`InboundRequests` checks each new request (501, 416, 420, digest), then
handles INVITE, ACK, CANCEL, OPTIONS and, inside a dialog, BYE, re-INVITE and
UPDATE offers, INFO DTMF, REFER, NOTIFY and PRACK. ``ring``, ``answer``,
``accept_offer`` and ``reject_offer`` are what the call layer says back.

Each request's caller is resolved first (a trusted proxy's source header, see
:mod:`callbridge.sip.source_header`); a new INVITE and an out-of-dialog OPTIONS
ask the configured availability before anything else and get the same 503.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import events as ev
from ..bodies import parse_dtmf_info, parse_sipfrag_status
from ..dialog import Dialog, new_tag
from ..errors import SipParseError
from ..message import Request
from ..session import InviteSession, ReliableProvisional, SessionState
from ..session_timer import TooSmall, negotiate_uas
from ..transaction import RequestReceived, ServerTransaction
from ..uri import NameAddr, SipUri, parse_name_addr
from . import actions, timers
from .auth import InboundAuthenticator
from .config import ACCEPTED_TYPES, ALLOWED_METHODS, SUPPORTED_OPTIONS
from .state import UaState

# RFC 3262 §3: give up on an un-PRACKed reliable provisional after 64·T1.
PRACK_TIMEOUT_T1 = 64
# Requests that only make sense inside a dialog: without one they get 481 (RFC 3261 §12.2.2).
IN_DIALOG_ONLY = ("BYE", "INFO", "UPDATE", "PRACK", "REFER", "NOTIFY")

ReferPolicy = Callable[[InviteSession, NameAddr], "tuple[int, str] | None"]
# Where a server transaction keeps who is calling (the transport source, or whom a trusted proxy named).
CALLER = "caller"


def caller_of(session: InviteSession) -> Any:
    """Who is calling on an inbound session: whom a trusted proxy named, else the INVITE's source."""
    tx = session.server_tx
    return tx.context.get(CALLER, session.source) if tx is not None else session.source


def accept_every_refer(session: InviteSession, target: NameAddr) -> tuple[int, str] | None:
    return None


class InboundRequests:
    """Routes each request the transaction layer hands up; ``refer_policy`` may refuse transfers."""

    def __init__(self, state: UaState, auth: InboundAuthenticator) -> None:
        self._state = state
        self._auth = auth
        # Whether an incoming REFER may go ahead: None accepts (202), else (status, reason) refuses it.
        self.refer_policy: ReferPolicy = accept_every_refer
        self._in_dialog: dict[str, Callable[[InviteSession, ServerTransaction, float], None]] = {
            "BYE": self._on_bye,
            "INVITE": self._on_reoffer,
            "UPDATE": self._on_reoffer,
            "INFO": self._on_info,
            "REFER": self._on_refer,
            "NOTIFY": self._on_notify,
            "PRACK": self._on_prack,
            "OPTIONS": self._on_options_in_dialog,
        }

    def on_request(self, event: RequestReceived, now: float) -> None:
        request, tx = event.request, event.transaction
        if tx is None:  # ACK for a 2xx
            self._on_ack(request)
            return
        state = self._state
        method = request.method
        caller = self._resolve_caller(tx, event.source, now)
        if method not in ALLOWED_METHODS:
            # RFC 3261 §8.2.1: unknown methods get 501 with Allow (405 is for known ones).
            state.respond(tx, 501, now, headers=[("Allow", ", ".join(ALLOWED_METHODS))])
            return
        if not isinstance(request.uri, SipUri):
            state.respond(tx, 416, now)  # RFC 3261 §8.2.2.1
            return
        unsupported = request.headers.get_tokens("Require") - SUPPORTED_OPTIONS
        if unsupported and method != "CANCEL":
            # RFC 3261 §8.2.2.3: 420 listing what we lack.
            state.respond(tx, 420, now, headers=[("Unsupported", ", ".join(sorted(unsupported)))])
            return
        if method == "CANCEL":
            self._on_cancel(tx, now)
        elif request.to_addr.tag:
            self._on_in_dialog(tx, now)
        elif method == "INVITE":
            self._on_new_invite(tx, event.source, caller, now)
        elif method == "OPTIONS":
            self._on_options(tx, now)
        elif method in IN_DIALOG_ONLY:
            state.respond(tx, 481, now)

    def _resolve_caller(self, tx: ServerTransaction, source: Any, now: float) -> Any:
        """Who is calling; the source header leaves the request here, believed or not."""
        state = self._state
        caller, problem = state.proxies.resolve(tx.request, source)
        if problem is not None:
            state.warn_source("source-header", source, now, "ignored %s header from %s: %s", state.proxies.header,
                              source, problem)
        tx.context[CALLER] = caller
        return caller

    def _turned_away(self, tx: ServerTransaction, now: float) -> bool:
        """503 + Retry-After (RFC 3261 §21.5.4) when the application takes no new calls now."""
        state = self._state
        unavailable = state.config.availability()
        if unavailable is None:
            return False
        state.respond(tx, 503, now, to_tag=new_tag(), headers=[("Retry-After", str(unavailable.retry_after))])
        state.warn_throttled(("unavailable", unavailable.reason), now,
                             "not taking new calls (%s): INVITE and OPTIONS get 503, Retry-After %d",
                             unavailable.reason, unavailable.retry_after)
        return True

    # -- outside a dialog -------------------------------------------------------------

    def _on_options(self, tx: ServerTransaction, now: float) -> None:
        # RFC 3261 §11.2: the answer is the one an INVITE would get, so a proxy's keep-alive probe
        # (Kamailio's dispatcher) sees a full or draining server as down instead of flapping.
        if self._turned_away(tx, now):
            return
        state = self._state
        state.respond(tx, 200, now, to_tag=new_tag(),
                      headers=state.common_headers(response=True) + [("Accept", ACCEPTED_TYPES)])

    def _on_new_invite(self, tx: ServerTransaction, source: Any, caller: Any, now: float) -> None:
        """``source`` is where the INVITE came from (the dialog's peer); ``caller`` who is calling."""
        state = self._state
        request = tx.request
        # Before the challenge: a caller with the right password would only get 503 after it.
        if self._turned_away(tx, now) or not self._auth.authorised(tx, caller, now):
            return
        negotiated = negotiate_uas(request, min_se=state.config.min_se)
        if isinstance(negotiated, TooSmall):
            # RFC 4028 §8.1: 422 with our Min-SE.
            state.respond(tx, 422, now, headers=[("Min-SE", str(negotiated.min_se))])
            return
        local_tag = new_tag()
        dialog = Dialog.from_incoming_invite(request, local_tag, source)
        session = InviteSession(direction="inbound", invite=request, state=SessionState.INCOMING,
                                dialog=dialog, server_tx=tx, source=source, timer=negotiated,
                                remote_sdp=request.body or None)
        tx.context["session"] = session
        state.sessions[(dialog.call_id, local_tag)] = session
        # RFC 3261 §17.2.1: 100 Trying at once stops the client's Timer A.
        state.respond(tx, 100, now)
        state.emit(ev.IncomingCall(session, request))

    def _on_ack(self, ack: Request) -> None:
        try:
            session = self._state.find_session(ack)
        except SipParseError:
            return
        if session is None:
            return
        if ack.body and session.remote_sdp is None:
            session.remote_sdp = ack.body  # late offer: the answer rides in the ACK
        if session.state is SessionState.ANSWERED:
            session.state = SessionState.CONFIRMED
            if session.dialog:
                session.dialog.confirmed = True
            self._state.emit(ev.CallConfirmed(session))

    def _on_cancel(self, tx: ServerTransaction, now: float) -> None:
        state = self._state
        invite_tx = state.transactions.find_server(tx.request)
        if invite_tx is None:
            state.respond(tx, 481, now)  # RFC 3261 §9.2
            return
        state.respond(tx, 200, now)
        session: InviteSession | None = invite_tx.context.get("session")
        if invite_tx.final_sent:
            return  # too late: the call was already answered or rejected
        to_tag = session.dialog.local_tag if session and session.dialog else new_tag()
        state.respond(invite_tx, 487, now, to_tag=to_tag)
        if session is not None:
            state.terminate(session, "cancelled")
            state.emit(ev.CallCancelled(session))

    # -- inside a dialog ---------------------------------------------------------------

    def _on_in_dialog(self, tx: ServerTransaction, now: float) -> None:
        state = self._state
        request = tx.request
        session = state.find_session(request)
        if session is None or session.state is SessionState.TERMINATED:
            state.respond(tx, 481, now)  # RFC 3261 §12.2.2
            return
        dialog = session.dialog
        assert dialog is not None  # find_session only returns sessions with a dialog
        if not dialog.accept_remote_cseq(request):
            state.respond(tx, 500, now, reason="Out of Order CSeq")
            return
        handler = self._in_dialog.get(request.method)
        if handler is not None:
            handler(session, tx, now)

    def _on_options_in_dialog(self, session: InviteSession, tx: ServerTransaction, now: float) -> None:
        self._state.respond(tx, 200, now, headers=self._state.common_headers(response=True))

    def _on_bye(self, session: InviteSession, tx: ServerTransaction, now: float) -> None:
        state = self._state
        state.respond(tx, 200, now)
        if session.server_tx is not None and not session.server_tx.final_sent:
            # RFC 3261 §15.1.2: BYE on an early dialog → 487 to the INVITE.
            state.respond(session.server_tx, 487, now)
        state.terminate(session, "remote_bye")
        state.emit(ev.CallEnded(session, "remote_bye"))

    def _on_reoffer(self, session: InviteSession, tx: ServerTransaction, now: float) -> None:
        state = self._state
        request = tx.request
        if session.pending_offer_tx is not None or session.pending_reinvite is not None:
            # RFC 3261 §14.2 / RFC 3311 §5.2: offer while one is pending → 491.
            state.respond(tx, 491, now)
            return
        assert session.dialog is not None
        session.dialog.refresh_target(request)
        negotiated = negotiate_uas(request, min_se=state.config.min_se)
        if isinstance(negotiated, TooSmall):
            state.respond(tx, 422, now, headers=[("Min-SE", str(negotiated.min_se))])
            return
        if negotiated is not None:
            session.timer = negotiated
        if not request.body:
            # A session refresh (RFC 4028 §9) or an offerless re-INVITE: answer
            # with our current SDP (for re-INVITE, that SDP is our offer).
            body = session.local_sdp if request.method == "INVITE" else b""
            state.respond(tx, 200, now, headers=state.answer_headers(session, request), body=body or b"",
                          content_type="application/sdp")
            timers.arm_session_timer(state, session, now)
            return
        session.pending_offer_tx = tx
        state.emit(ev.OfferReceived(session, request.method, request.body))

    def _on_info(self, session: InviteSession, tx: ServerTransaction, now: float) -> None:
        request = tx.request
        self._state.respond(tx, 200, now)
        dtmf = parse_dtmf_info(request.content_type, request.body)
        if dtmf is not None:
            self._state.emit(ev.DtmfInfoReceived(session, dtmf.digit, dtmf.duration_ms))

    def _on_refer(self, session: InviteSession, tx: ServerTransaction, now: float) -> None:
        state = self._state
        request = tx.request
        refer_to = request.headers.get("Refer-To")
        if not refer_to:
            state.respond(tx, 400, now, reason="Missing Refer-To")
            return
        try:
            target = parse_name_addr(refer_to)
        except SipParseError:
            state.respond(tx, 400, now, reason="Bad Refer-To")
            return
        # Decided before the 202 (RFC 3515 §2.4.2): a transfer dials out, so policy says no with 403.
        refusal = self.refer_policy(session, target)
        if refusal is not None:
            state.respond(tx, refusal[0], now, reason=refusal[1])
            return
        state.respond(tx, 202, now)  # RFC 3515 §2.4.2
        session.incoming_refer_active = True
        actions.notify_refer(state, session, 100, "Trying", now)  # §2.4.4: an immediate NOTIFY
        state.emit(ev.ReferReceived(session, target, request.headers.get("Referred-By")))

    def _on_notify(self, session: InviteSession, tx: ServerTransaction, now: float) -> None:
        state = self._state
        request = tx.request
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != "refer":
            state.respond(tx, 489, now, reason="Bad Event")  # RFC 6665 §8.3.1
            return
        state.respond(tx, 200, now)
        status = parse_sipfrag_status(request.body)
        subscription = (request.headers.get("Subscription-State") or "").split(";")[0].strip().lower()
        final = subscription == "terminated" or (status is not None and status >= 200)
        if status is not None:
            state.emit(ev.ReferProgress(session, status, final))

    def _on_prack(self, session: InviteSession, tx: ServerTransaction, now: float) -> None:
        pending = session.pending_prack
        rack = (tx.request.headers.get("RAck") or "").split()
        if pending is None or not rack or rack[0] != str(pending.rseq):
            self._state.respond(tx, 481, now)  # RFC 3262 §4: no matching reliable provisional
            return
        timers.stop_prack_wait(self._state, session)
        self._state.respond(tx, 200, now)


# -- the call layer's answers ------------------------------------------------------------


def ring(state: UaState, session: InviteSession, now: float, *, status: int = 180, sdp: bytes | None = None) -> None:
    """Send 180 (or 183 with early media), reliably when the peer requires 100rel."""
    tx = session.server_tx
    if tx is None or tx.final_sent or session.dialog is None:
        return
    request = session.invite
    require = request.headers.get_tokens("Require")
    supported = request.headers.get_tokens("Supported")
    reliable = "100rel" in require or (state.config.use_100rel == "required" and "100rel" in supported)
    reliable = reliable and session.pending_prack is None  # RFC 3262 §3: one unacknowledged at a time
    headers = [("Contact", str(state.contact_for(session)))]
    if reliable:
        session.rseq += 1
        headers += [("Require", "100rel"), ("RSeq", str(session.rseq))]
    response = state.respond(tx, status, now, headers=headers, body=sdp or b"", to_tag=session.dialog.local_tag,
                             content_type="application/sdp")
    session.state = SessionState.EARLY
    if reliable:
        t1 = state.config.t1
        provisional = ReliableProvisional(response, session.rseq, t1, now + t1, now + PRACK_TIMEOUT_T1 * t1)
        timers.start_prack_wait(state, session, provisional)


def answer(state: UaState, session: InviteSession, sdp: bytes, now: float, *,
           headers: list[tuple[str, str]] | None = None) -> None:
    """200 OK to the INVITE with our SDP; retransmitted until the ACK (RFC 3261 §13.3.1.4)."""
    tx = session.server_tx
    if tx is None or tx.final_sent or session.dialog is None:
        return
    session.local_sdp = sdp
    extra = state.answer_headers(session, session.invite) + list(headers or [])
    state.respond(tx, 200, now, headers=extra, body=sdp, to_tag=session.dialog.local_tag,
                  content_type="application/sdp")
    timers.stop_prack_wait(state, session)  # a 2xx ends provisional retransmission
    session.state = SessionState.ANSWERED
    timers.arm_session_timer(state, session, now)


def accept_offer(state: UaState, session: InviteSession, sdp: bytes, now: float) -> None:
    """Answer the pending re-INVITE/UPDATE offer (RFC 3264 §8) with ``sdp``."""
    tx = session.pending_offer_tx
    if tx is None:
        return
    session.pending_offer_tx = None
    session.local_sdp = sdp
    session.remote_sdp = tx.request.body
    state.respond(tx, 200, now, headers=state.answer_headers(session, tx.request), body=sdp,
                  content_type="application/sdp")
    timers.arm_session_timer(state, session, now)


def reject_offer(state: UaState, session: InviteSession, status: int, now: float) -> None:
    """Refuse the pending offer (e.g. 488); the session goes on as it was (RFC 3261 §14.2)."""
    tx = session.pending_offer_tx
    if tx is None:
        return
    session.pending_offer_tx = None
    state.respond(tx, status, now)
