"""What the call layer does to a session in either direction: in-dialog requests and hanging up.

Functions over :class:`~callbridge.sip.ua.state.UaState`: BYE, CANCEL, a final
error to a ringing INVITE, re-INVITE (hold, resume, session refresh), REFER and
its NOTIFYs (RFC 3515).
"""

from __future__ import annotations

import logging

from .. import events as ev
from ..address import address_for_uri
from ..bodies import sipfrag
from ..dialog import new_tag
from ..session import InviteSession, SessionState
from ..transaction import ClientTransaction, request_on_invite_branch
from ..uri import SipUri
from .state import UaState

log = logging.getLogger("callbridge.sip")

# RFC 3515 §2.4.7: implicit subscription lifetime we advertise in NOTIFYs.
REFER_SUBSCRIPTION_SECONDS = 60


def send_in_dialog(state: UaState, session: InviteSession, method: str, now: float, *,
                   headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                   content_type: str | None = None) -> ClientTransaction | None:
    """A request inside the session's dialog (RFC 3261 §12.2.1), in its own client transaction."""
    dialog = session.dialog
    if dialog is None:
        return None
    uri, peer = dialog.request_destination()
    destination = peer if peer is not None else address_for_uri(uri) if isinstance(uri, SipUri) else None
    if destination is None:
        log.warning("no route for in-dialog %s on %s", method, session.call_id)
        return None
    transport = destination.transport
    request = dialog.build_request(method, state.local_via(transport), state.local_contact(transport))
    for name, value in headers or ():
        request.headers.add(name, value)
    if body:
        request.headers.add("Content-Type", content_type or "application/sdp")
        request.body = body
    tx = state.transactions.send_request(request, destination, now)
    tx.context["session"] = session
    return tx


def reject(state: UaState, session: InviteSession, status: int, now: float, *, reason: str | None = None,
           headers: list[tuple[str, str]] | None = None) -> None:
    """A final error to an inbound INVITE not yet answered; the session ends."""
    tx = session.server_tx
    if tx is None or tx.final_sent:
        return
    tag = session.dialog.local_tag if session.dialog else new_tag()
    state.respond(tx, status, now, reason=reason, headers=headers, to_tag=tag)
    state.terminate(session, f"rejected_{status}")


def cancel(state: UaState, session: InviteSession, now: float) -> None:
    """RFC 3261 §9.1: CANCEL only after a provisional; otherwise remember to."""
    tx = session.client_tx
    if tx is None or session.state not in (SessionState.CALLING, SessionState.EARLY):
        return
    if tx.last_response is None:
        session.cancel_requested = True
        return
    invite = tx.request
    request = request_on_invite_branch("CANCEL", invite, invite.headers.get("To") or "")
    state.transactions.send_request(request, tx.destination, now)


def bye(state: UaState, session: InviteSession, now: float, *, reason: str = "local_bye") -> None:
    """Hang up: BYE when confirmed, CANCEL when still ringing out, error when ringing in."""
    if session.state is SessionState.TERMINATED:
        return
    if session.direction == "inbound" and session.server_tx is not None and not session.server_tx.final_sent:
        reject(state, session, 480, now)
    elif session.direction == "outbound" and session.state in (SessionState.CALLING, SessionState.EARLY):
        cancel(state, session, now)
        return
    else:
        send_in_dialog(state, session, "BYE", now)
    state.terminate(session, reason)
    state.emit(ev.CallEnded(session, reason))


def reinvite(state: UaState, session: InviteSession, sdp: bytes, now: float, *, refresh: bool = False) -> None:
    """Send a re-INVITE (hold/resume or a session refresh)."""
    headers = state.common_headers()
    if session.timer is not None:
        refresher = "uas" if session.direction == "inbound" else "uac"
        headers.append(("Session-Expires", f"{session.timer.interval};refresher={refresher}"))
    session.local_sdp = sdp
    tx = send_in_dialog(state, session, "INVITE", now, headers=headers, body=sdp)
    if tx is not None:
        tx.context["refresh"] = refresh
        session.pending_reinvite = tx


def refer(state: UaState, session: InviteSession, target: str, now: float) -> None:
    """Blind transfer (RFC 3515): ask the peer to call ``target``."""
    contact = state.local_contact(getattr(session.source or session.destination, "transport", "udp"))
    headers = [("Refer-To", f"<{target}>"), ("Referred-By", str(contact))]
    session.refer_tx = send_in_dialog(state, session, "REFER", now, headers=headers)


def notify_refer(state: UaState, session: InviteSession, status: int, reason: str, now: float) -> None:
    """Report transfer progress with a message/sipfrag NOTIFY (RFC 3515 §2.4.5)."""
    if not session.incoming_refer_active:
        return
    final = status >= 200
    subscription = "terminated;reason=noresource" if final else f"active;expires={REFER_SUBSCRIPTION_SECONDS}"
    headers = [("Event", "refer"), ("Subscription-State", subscription)]
    send_in_dialog(state, session, "NOTIFY", now, headers=headers, body=sipfrag(status, reason),
                   content_type="message/sipfrag")
    if final:
        session.incoming_refer_active = False
