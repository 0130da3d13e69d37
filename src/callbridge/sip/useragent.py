"""The UA core (RFC 3261 §8, §12–§15) over the transaction layer, sans-IO.

Bytes and ``now`` go in through :meth:`UserAgent.receive`; the call layer acts
through methods such as :meth:`UserAgent.answer` (each takes ``now``).
Datagrams come out of :meth:`UserAgent.datagrams_to_send`, events (session
events and registration status changes) out of :meth:`UserAgent.next_event`,
and one timer is driven through :meth:`UserAgent.next_deadline` /
:meth:`UserAgent.handle_timer`.

This class only assembles and dispatches; the work is done by the parts in
:mod:`callbridge.sip.ua` (see its docstring for which does what).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .address import Address
from .errors import SipParseError
from .events import UaEvent
from .guard import AuthGuard
from .message import Request
from .parser import PartialRequest, parse_message
from .ratelimit import NewDialogLimiter
from .registration import Registration
from .session import InviteSession
from .transaction import RequestReceived, ResponseReceived, TransactionLayer, TransactionTimedOut
from .ua import actions, timers, uac, uas
from .ua.admission import Admission, is_stream
from .ua.auth import InboundAuth, InboundAuthenticator
from .ua.config import UserAgentConfig
from .ua.registrations import Registrations
from .ua.state import UaState
from .ua.uas import InboundRequests, ReferPolicy
from .uri import NameAddr, SipUri, Via
from .via import stamp_received

log = logging.getLogger("callbridge.sip")

InboundAuthPolicy = Callable[[Request, Any], InboundAuth | None]


class UserAgent:
    def __init__(self, config: UserAgentConfig | None = None) -> None:
        self.config = config or UserAgentConfig()
        self._state = UaState(self.config)
        self.transactions: TransactionLayer = self._state.transactions
        self.sessions: dict[tuple[str, str], InviteSession] = self._state.sessions  # (Call-ID, local tag)
        # Counts failed digest answers per source and username: back-off, then ban (sip/guard.py).
        policy = self.config.auth_guard
        self.guard: AuthGuard | None = AuthGuard(policy) if policy else None
        rate = self.config.new_requests_per_source
        limiter = NewDialogLimiter(rate, self.config.new_requests_burst) if rate else None
        self._admission = Admission(self._state, self.guard, limiter)
        self._auth = InboundAuthenticator(self._state, self.guard)
        self._inbound = InboundRequests(self._state, self._auth)
        self._registrations = Registrations(self._state)

    # -- policies the call layer sets, and counters it reads -----------------------------

    @property
    def inbound_auth(self) -> InboundAuthPolicy:
        """Decides per request whether credentials are required (the trunk table)."""
        return self._auth.policy

    @inbound_auth.setter
    def inbound_auth(self, policy: InboundAuthPolicy) -> None:
        self._auth.policy = policy

    @property
    def refer_policy(self) -> ReferPolicy:
        """Whether an incoming REFER may go ahead: None accepts (202), else (status, reason)."""
        return self._inbound.refer_policy

    @refer_policy.setter
    def refer_policy(self, policy: ReferPolicy) -> None:
        self._inbound.refer_policy = policy

    @property
    def rate_exempt(self) -> Callable[[str], bool]:
        """Sources the per-source limit spares: carriers listed by address."""
        return self._admission.rate_exempt

    @rate_exempt.setter
    def rate_exempt(self, exempt: Callable[[str], bool]) -> None:
        self._admission.rate_exempt = exempt

    @property
    def limiter(self) -> NewDialogLimiter | None:
        """Sheds floods of new requests per source before they are parsed (sip/ratelimit.py)."""
        return self._admission.limiter

    @property
    def overload_rejected(self) -> int:
        """New requests answered 503 because max_server_transactions was reached."""
        return self._admission.overload_rejected

    @property
    def registrations(self) -> list[Registration]:
        return self._registrations.registrations

    # -- driver interface -------------------------------------------------------------

    def receive(self, data: bytes, source: Any, now: float) -> None:
        """Feed one datagram or one framed stream message. Never raises."""
        if self._admission.turn_away(data, source, now):
            return
        try:
            message = parse_message(data, stream=is_stream(source))
        except PartialRequest as exc:
            self._admission.reject_malformed(exc, source, now)
            return
        except SipParseError as exc:
            self._state.warn_source("unparseable", source, now, "dropped unparseable message from %s: %s", source,
                                    exc.reason)
            return
        try:
            if isinstance(message, Request):
                stamp_received(message, source)
                self.transactions.receive_request(message, source, now)
            else:
                self.transactions.receive_response(message, now)
            self._dispatch(now)
        except SipParseError as exc:
            # A header the core needed turned out unusable: answer if we can.
            if isinstance(message, Request):
                self._admission.reject_malformed(PartialRequest(exc.reason, exc.status, message), source, now)
            else:
                self._state.warn_source("bad-response", source, now, "dropped response from %s: %s", source,
                                        exc.reason)
        except Exception:  # noqa: BLE001 - one bad message must never stop the endpoint
            log.exception("error handling message from %s", source)

    def datagrams_to_send(self) -> list[tuple[bytes, Any]]:
        out = self.transactions.datagrams_to_send()
        state = self._state
        if state.outbox:
            out.extend(state.outbox)
            state.outbox = []
        return out

    def next_event(self) -> UaEvent | None:
        """The next session event or registration status change, in the order they happened."""
        events = self._state.events
        return events.popleft() if events else None

    def next_deadline(self) -> float | None:
        candidates = (self.transactions.next_deadline(), self._state.deadlines.next_deadline(),
                      self._registrations.next_deadline())
        deadlines = [d for d in candidates if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        self.transactions.handle_timer(now)
        timers.fire_due(self._state, now)
        self._registrations.handle_timer(now)
        self._dispatch(now)

    def _dispatch(self, now: float) -> None:
        """Hand what the transaction layer produced to the part that handles it."""
        while (event := self.transactions.next_event()) is not None:
            if isinstance(event, RequestReceived):
                self._inbound.on_request(event, now)
            elif isinstance(event, ResponseReceived):
                if not self._registrations.on_response(event.response, event.transaction, now):
                    uac.on_response(self._state, event.response, event.transaction, now)
            elif isinstance(event, TransactionTimedOut):
                if not self._registrations.on_timeout(event, now):
                    uac.on_timeout(self._state, event, now)

    # -- local identity -----------------------------------------------------------------

    def local_via(self, transport: str) -> Via:
        return self._state.local_via(transport)

    def local_contact(self, transport: str, user: str | None = None, *, sips: bool | None = None) -> NameAddr:
        return self._state.local_contact(transport, user, sips=sips)

    # -- call-layer actions on inbound calls ----------------------------------------------

    def ring(self, session: InviteSession, now: float, *, status: int = 180, sdp: bytes | None = None) -> None:
        """Send 180 (or 183 with early media), reliably when the peer requires 100rel."""
        uas.ring(self._state, session, now, status=status, sdp=sdp)

    def answer(self, session: InviteSession, sdp: bytes, now: float, *,
               headers: list[tuple[str, str]] | None = None) -> None:
        uas.answer(self._state, session, sdp, now, headers=headers)

    def reject(self, session: InviteSession, status: int, now: float, *, reason: str | None = None,
               headers: list[tuple[str, str]] | None = None) -> None:
        actions.reject(self._state, session, status, now, reason=reason, headers=headers)

    def accept_offer(self, session: InviteSession, sdp: bytes, now: float) -> None:
        uas.accept_offer(self._state, session, sdp, now)

    def reject_offer(self, session: InviteSession, status: int, now: float) -> None:
        uas.reject_offer(self._state, session, status, now)

    # -- either direction ----------------------------------------------------------------

    def bye(self, session: InviteSession, now: float, *, reason: str = "local_bye") -> None:
        """Hang up: BYE when confirmed, CANCEL when still ringing out, error when ringing in."""
        actions.bye(self._state, session, now, reason=reason)

    def reinvite(self, session: InviteSession, sdp: bytes, now: float, *, refresh: bool = False) -> None:
        """Send a re-INVITE (hold/resume or a session refresh)."""
        actions.reinvite(self._state, session, sdp, now, refresh=refresh)

    def refer(self, session: InviteSession, target: str, now: float) -> None:
        """Blind transfer (RFC 3515): ask the peer to call ``target``."""
        actions.refer(self._state, session, target, now)

    def notify_refer(self, session: InviteSession, status: int, reason: str, now: float) -> None:
        """Report transfer progress with a message/sipfrag NOTIFY (RFC 3515 §2.4.5)."""
        actions.notify_refer(self._state, session, status, reason, now)

    # -- outbound calls --------------------------------------------------------------------

    def invite(self, target: SipUri, now: float, *, sdp: bytes, destination: Address | None = None,
               from_user: str | None = None, from_display: str | None = None, from_host: str | None = None,
               headers: list[tuple[str, str]] | None = None,
               credentials: tuple[str, str] | None = None) -> InviteSession:
        return uac.invite(self._state, target, now, sdp=sdp, destination=destination, from_user=from_user,
                          from_display=from_display, from_host=from_host, headers=headers, credentials=credentials)

    def cancel(self, session: InviteSession, now: float) -> None:
        """RFC 3261 §9.1: CANCEL only after a provisional; otherwise remember to."""
        actions.cancel(self._state, session, now)

    # -- registrations (RFC 3261 §10) --------------------------------------------------------

    def register(self, registration: Registration, now: float) -> None:
        """Keep ``registration`` bound; its status changes come out of :meth:`next_event`."""
        self._registrations.register(registration, now)

    def unregister(self, registration: Registration, now: float) -> None:
        """Remove the binding (expires=0); the registration stays listed with its final status."""
        self._registrations.unregister(registration, now)


__all__ = ["InboundAuth", "UserAgent", "UserAgentConfig"]
