"""The client side: calls we place (RFC 3261 §13.2), the responses to our requests, and their timeouts.

``invite`` sends a new INVITE. :func:`on_response` takes every response to a
session's request: provisionals (with PRACK for 100rel, RFC 3262 §7.2), the 2xx
and its ACK (§13.2.2.4), a digest retry for 401/407 (§22.2), re-INVITE answers
and REFER outcomes. :func:`on_timeout` ends what a lost transaction leaves dead.
"""

from __future__ import annotations

import logging
import secrets

from .. import events as ev
from ..address import Address, address_for_uri
from ..dialog import Dialog, new_call_id, new_tag
from ..digest import DigestError, build_authorization, choose_challenge
from ..message import Request, Response
from ..session import InviteSession, SessionState
from ..session_timer import negotiate_uac
from ..transaction import ClientTransaction, ServerTransaction, TransactionTimedOut
from ..uri import NameAddr, SipUri
from . import actions, timers
from .state import UaState

log = logging.getLogger("callbridge.sip")

# How many times we answer a 401/407 for one request before giving up.
MAX_AUTH_ATTEMPTS = 2
# Statuses that end a dialog when they answer a request inside it (RFC 3261 §12.2.1.2, §14.1).
DIALOG_GONE = (408, 481)


def invite(state: UaState, target: SipUri, now: float, *, sdp: bytes, destination: Address | None = None,
           from_user: str | None = None, from_display: str | None = None, from_host: str | None = None,
           headers: list[tuple[str, str]] | None = None,
           credentials: tuple[str, str] | None = None) -> InviteSession:
    """Place a call: a new INVITE with our SDP offer and a session timer offer (RFC 4028 §7.1)."""
    config = state.config
    destination = destination or address_for_uri(target)
    transport = destination.transport
    from_addr = NameAddr(SipUri(host=from_host or config.host, user=from_user or config.user),
                         display_name=from_display, params={"tag": new_tag()})
    request = Request(method="INVITE", uri=target)
    request.headers.add("Via", str(state.local_via(transport)))
    request.headers.add("Max-Forwards", "70")
    request.headers.add("From", str(from_addr))
    request.headers.add("To", str(NameAddr(target.without_headers())))
    request.headers.add("Call-ID", new_call_id(config.host))
    request.headers.add("CSeq", "1 INVITE")
    request.headers.add("Contact", str(state.local_contact(transport)))
    for name, value in state.common_headers():
        request.headers.add(name, value)
    request.headers.add("Session-Expires", str(config.session_expires))
    request.headers.add("Min-SE", str(config.min_se))
    for name, value in headers or ():
        request.headers.add(name, value)
    request.headers.add("Content-Type", "application/sdp")
    request.body = sdp
    session = InviteSession(direction="outbound", invite=request, state=SessionState.CALLING,
                            destination=destination, local_sdp=sdp, credentials=credentials)
    session.client_tx = state.transactions.send_request(request, destination, now)
    session.client_tx.context["session"] = session
    state.sessions[(request.call_id, from_addr.tag or "")] = session
    return session


def on_response(state: UaState, response: Response, tx: ClientTransaction, now: float) -> None:
    """A response to one of a session's requests (INVITE, re-INVITE, REFER, BYE...)."""
    session: InviteSession | None = tx.context.get("session")
    if session is None:
        return
    method = tx.request.method
    if method == "INVITE" and tx is session.client_tx:
        _on_invite_response(state, session, response, tx, now)
    elif method == "INVITE":
        _on_reinvite_response(state, session, response, tx, now)
    elif method == "REFER" and response.status >= 300:
        state.emit(ev.ReferFailed(session, response.status))
    elif method == "REFER" and response.status >= 200:
        state.emit(ev.ReferAccepted(session, response.status))
    elif method in ("BYE", "NOTIFY", "INFO", "UPDATE") and response.status in (401, 407):
        log.info("%s on %s was challenged; not retried", method, session.call_id)


def on_timeout(state: UaState, event: TransactionTimedOut, now: float) -> None:
    """A session's transaction timed out: what that means depends on which one it was."""
    tx = event.transaction
    session: InviteSession | None = tx.context.get("session")
    if session is None or session.state is SessionState.TERMINATED:
        return
    if event.reason == "no-ack":
        # RFC 3261 §13.3.1.4: no ACK for our 2xx → end the dialog with BYE.
        state.warn_source("no-ack", session.source, now, "no ACK for 2xx from %s (last: %s)", session.source,
                          session.call_id)
        actions.send_in_dialog(state, session, "BYE", now)
        state.terminate(session, "no_ack")
        state.emit(ev.CallEnded(session, "no_ack"))
    elif isinstance(tx, ServerTransaction):
        return
    elif tx is session.client_tx:
        state.terminate(session, "timeout")
        state.emit(ev.CallFailed(session, 408, "Request Timeout"))
    elif tx.request.method == "REFER":
        state.emit(ev.ReferFailed(session, 408))
    elif tx.request.method in ("INVITE", "UPDATE"):
        actions.bye(state, session, now, reason="timeout")


def _on_invite_response(state: UaState, session: InviteSession, response: Response, tx: ClientTransaction,
                        now: float) -> None:
    status = response.status
    if status < 200:
        if session.state is SessionState.CALLING:
            session.state = SessionState.EARLY
        if response.to_addr.tag and "100rel" in response.headers.get_tokens("Require"):
            _send_prack(state, response, tx, now)
        if status > 100:
            state.emit(ev.CallProgress(session, response))
        if session.cancel_requested:
            session.cancel_requested = False
            actions.cancel(state, session, now)
        return
    if status < 300:
        _on_invite_2xx(state, session, response, tx, now)
        return
    if status in (401, 407) and _retry_with_auth(state, session, response, tx, now):
        return
    state.terminate(session, f"failed_{status}")
    state.emit(ev.CallFailed(session, status, response.reason))


def _on_invite_2xx(state: UaState, session: InviteSession, response: Response, tx: ClientTransaction,
                   now: float) -> None:
    if session.ack_wire is not None:
        # RFC 3261 §13.2.2.4: a retransmitted 2xx gets the same ACK again.
        state.send(session.ack_wire, session.dialog.peer_address if session.dialog else tx.destination)
        return
    dialog = Dialog.from_outgoing_invite(tx.request, response, tx.destination)
    session.dialog = dialog
    state.sessions[(session.call_id, dialog.local_tag)] = session
    transport = tx.destination.transport
    ack = dialog.build_request("ACK", state.local_via(transport), state.local_contact(transport),
                               cseq=tx.request.cseq.number)
    first_route = dialog.route_set[0].uri if dialog.route_set else None
    destination = address_for_uri(first_route) if isinstance(first_route, SipUri) else tx.destination
    dialog.peer_address = destination
    session.ack_wire = ack.serialize()
    state.send(session.ack_wire, destination)
    session.remote_sdp = response.body or None
    session.timer = negotiate_uac(response)
    if session.cancel_requested or session.state is SessionState.TERMINATED:
        # The call was abandoned while the 2xx was in flight: ACK and BYE (§15).
        session.state = SessionState.CONFIRMED
        actions.bye(state, session, now)
        return
    session.state = SessionState.CONFIRMED
    dialog.confirmed = True
    timers.arm_session_timer(state, session, now)
    state.emit(ev.CallAnswered(session, response))


def _send_prack(state: UaState, response: Response, tx: ClientTransaction, now: float) -> None:
    rseq = response.headers.get("RSeq")
    if not rseq or not rseq.isdigit():
        return
    dialog = Dialog.from_outgoing_invite(tx.request, response, tx.destination)
    dialog.local_seq = tx.request.cseq.number
    transport = tx.destination.transport
    prack = dialog.build_request("PRACK", state.local_via(transport), state.local_contact(transport))
    prack.headers.add("RAck", f"{rseq} {tx.request.cseq.number} INVITE")  # RFC 3262 §7.2
    state.transactions.send_request(prack, tx.destination, now)


def _retry_with_auth(state: UaState, session: InviteSession, response: Response, tx: ClientTransaction,
                     now: float) -> bool:
    """Resend the INVITE with credentials for the challenge (RFC 3261 §22.2); False if we cannot."""
    if session.credentials is None or session.auth_attempts >= MAX_AUTH_ATTEMPTS:
        return False
    header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
    try:
        challenge = choose_challenge(response.headers.get_all(header))
    except DigestError as exc:
        log.warning("cannot answer %s challenge: %s", response.status, exc)
        return False
    session.auth_attempts += 1
    username, password = session.credentials
    old = tx.request
    request = Request(method="INVITE", uri=old.uri, headers=old.headers.copy(), body=old.body)
    request.headers.set("Via", str(state.local_via(tx.destination.transport)))
    request.headers.set("CSeq", f"{old.cseq.number + 1} INVITE")  # RFC 3261 §22.2: new CSeq
    authorization = build_authorization(challenge, method="INVITE", uri=str(old.uri), username=username,
                                        password=password, cnonce=secrets.token_hex(8))
    request.headers.set("Authorization" if response.status == 401 else "Proxy-Authorization", authorization)
    session.invite = request
    session.client_tx = state.transactions.send_request(request, tx.destination, now)
    session.client_tx.context["session"] = session
    return True


def _on_reinvite_response(state: UaState, session: InviteSession, response: Response, tx: ClientTransaction,
                          now: float) -> None:
    if response.status < 200:
        return
    if session.pending_reinvite is tx:
        session.pending_reinvite = None
    dialog = session.dialog
    if response.status < 300 and dialog is not None:
        transport = tx.destination.transport
        ack = dialog.build_request("ACK", state.local_via(transport), state.local_contact(transport),
                                   cseq=tx.request.cseq.number)
        state.send(ack.serialize(), tx.destination)
        dialog.refresh_target(response)
        timer = negotiate_uac(response)
        if timer is not None:
            session.timer = timer
        timers.arm_session_timer(state, session, now)
        if response.body and not tx.context.get("refresh"):
            session.remote_sdp = response.body
            state.emit(ev.AnswerReceived(session, response.body))
    elif response.status in DIALOG_GONE:
        # RFC 3261 §14.1: the dialog is gone.
        state.terminate(session, "timeout")
        state.emit(ev.CallEnded(session, "timeout"))
