"""Session timers (RFC 4028) and reliable-provisional retransmission (RFC 3262 §3), on the deadline heap.

Every change to ``session.refresh_due``, ``session.expires_at`` or
``session.pending_prack`` goes through here, so the heap in
:mod:`~callbridge.sip.ua.deadlines` always has the session's current deadlines.
A popped deadline is checked against the session before it acts.
"""

from __future__ import annotations

import logging

from .. import events as ev
from ..session import InviteSession, ReliableProvisional, SessionState
from . import actions
from .deadlines import Due
from .state import UaState

log = logging.getLogger("callbridge.sip")


def arm_session_timer(state: UaState, session: InviteSession, now: float) -> None:
    """Start (or restart, after a refresh) the negotiated session timer (RFC 4028 §10)."""
    timer = session.timer
    if timer is None:
        return
    session.we_refresh = (timer.refresher == "uas") == (session.direction == "inbound")
    if session.we_refresh:
        session.refresh_due, session.expires_at = now + timer.refresh_after(), None
        state.deadlines.arm(session, Due.REFRESH, session.refresh_due)
        state.deadlines.cancel(session, Due.EXPIRE)
    else:
        session.refresh_due, session.expires_at = None, now + timer.expire_after()
        state.deadlines.arm(session, Due.EXPIRE, session.expires_at)
        state.deadlines.cancel(session, Due.REFRESH)


def start_prack_wait(state: UaState, session: InviteSession, provisional: ReliableProvisional) -> None:
    """Retransmit ``provisional`` until it is PRACKed (RFC 3262 §3)."""
    session.pending_prack = provisional
    state.deadlines.arm(session, Due.PRACK, provisional.next_send)


def stop_prack_wait(state: UaState, session: InviteSession) -> None:
    """The PRACK came, or a 2xx ended provisional retransmission."""
    session.pending_prack = None
    state.deadlines.cancel(session, Due.PRACK)


def fire_due(state: UaState, now: float) -> None:
    """Run every session deadline at or before ``now``, earliest first."""
    while (due := state.deadlines.pop_due(now)) is not None:
        session, kind = due
        if kind is Due.PRACK:
            _prack_due(state, session, now)
        elif kind is Due.EXPIRE:
            _expired(state, session, now)
        else:
            _refresh_due(state, session, now)


def _prack_due(state: UaState, session: InviteSession, now: float) -> None:
    pending = session.pending_prack
    if pending is None or pending.next_send > now:
        return
    tx = session.server_tx
    if now >= pending.give_up_at:
        session.pending_prack = None
        # RFC 3262 §3: reject the INVITE when the peer never PRACKs.
        if tx is not None and not tx.final_sent:
            actions.reject(state, session, 504, now, reason="No PRACK")
            state.emit(ev.CallEnded(session, "timeout"))
        return
    if tx is not None:
        state.send(pending.response.serialize(), tx.response_destination)
    pending.interval *= 2  # RFC 3262 §3: like Timer A, doubling from T1
    pending.next_send = now + pending.interval
    state.deadlines.arm(session, Due.PRACK, pending.next_send)


def _expired(state: UaState, session: InviteSession, now: float) -> None:
    if session.expires_at is None or session.expires_at > now:
        return
    session.expires_at = None
    log.info("session timer expired for %s", session.call_id)
    actions.bye(state, session, now, reason="session_expired")


def _refresh_due(state: UaState, session: InviteSession, now: float) -> None:
    """We are the refresher: re-INVITE with the current SDP (RFC 4028 §7.4/§9)."""
    if session.refresh_due is None or session.refresh_due > now:
        return
    session.refresh_due = None
    if session.state is not SessionState.CONFIRMED or session.pending_reinvite is not None:
        arm_session_timer(state, session, now)
        return
    actions.reinvite(state, session, session.local_sdp or b"", now, refresh=True)
