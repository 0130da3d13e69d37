"""The UA core (RFC 3261 §8, §12–§15) over the transaction layer, sans-IO.

Bytes and ``now`` go in through :meth:`UserAgent.receive`; the call layer acts
through methods such as :meth:`UserAgent.answer` (each takes ``now``).
Datagrams come out of :meth:`UserAgent.datagrams_to_send`, session events
out of :meth:`UserAgent.next_event`, and one timer is driven through
:meth:`UserAgent.next_deadline` / :meth:`UserAgent.handle_timer`.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import events as ev
from .address import Address, address_for_uri
from .bodies import dtmf_relay_body, parse_dtmf_info, parse_sipfrag_status, sipfrag
from .dialog import Dialog, new_branch, new_call_id, new_tag
from .digest import (
    DigestError,
    DigestVerifier,
    VerifyStatus,
    build_authorization,
    choose_challenge,
    parse_credentials,
)
from .errors import SipParseError
from .guard import AuthGuard, GuardPolicy, Verdict
from .message import Request, Response, make_response
from .parser import PartialRequest, parse_message
from .ratelimit import NEW_REQUESTS_BURST, NEW_REQUESTS_PER_SOURCE, RETRY_AFTER_SECONDS, LogThrottle, NewDialogLimiter
from .ratelimit import Verdict as Admission
from .ratelimit import new_dialog_method
from .registration import Registration, RegistrationEvent
from .session import InviteSession, ReliableProvisional, SessionState
from .session_timer import (
    DEFAULT_SESSION_EXPIRES,
    MIN_SE_FLOOR,
    SessionTimer,
    TooSmall,
    negotiate_uac,
    negotiate_uas,
    response_headers,
)
from .transaction import (
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TransactionLayer,
    TransactionTimedOut,
    stamp_received,
)
from .uri import NameAddr, SipUri, Via, parse_name_addr

log = logging.getLogger("callbridge.sip")

ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "REFER", "NOTIFY", "UPDATE", "PRACK")
SUPPORTED_OPTIONS = frozenset({"100rel", "timer", "norefersub"})
ACCEPTED_TYPES = "application/sdp, application/dtmf-relay, application/dtmf, message/sipfrag"
# RFC 3262 §3: give up on an un-PRACKed reliable provisional after 64·T1.
PRACK_TIMEOUT_T1 = 64
# How many times we answer a 401/407 for one request before giving up.
MAX_AUTH_ATTEMPTS = 2
# RFC 3515 §2.4.7: implicit subscription lifetime we advertise in NOTIFYs.
REFER_SUBSCRIPTION_SECONDS = 60
# Our product token in User-Agent (requests) and Server (responses). RFC 3261 §20.35/§20.41:
# a version helps attackers pick known holes, so it SHOULD be configurable; ours has none by default.
DEFAULT_PRODUCT = "callbridge"
# A To header with a tag (full or compact form, RFC 3261 §7.3.3): the request belongs to a dialog.
# Read from the raw bytes, because parsing costs ~50x more and a banned flood must stay cheap.
_TO_TAG = re.compile(rb"\n(?:to|t)[ \t]*:[^\r\n]*;[ \t]*tag[ \t]*=", re.IGNORECASE)
# Live server transactions beyond which new requests get 503 (RFC 3261 §21.5.4). Each one lives
# ~32 s (Timer H/J = 64·T1), so 20,000 is ~600 new requests/s sustained: twice what one process
# sets up (docs/BENCHMARKS.md), and ~40 MB of requests held at most.
MAX_SERVER_TRANSACTIONS = 20_000


@dataclass(slots=True)
class InboundAuth:
    """Digest credentials an inbound trunk demands (RFC 3261 §22.1)."""

    verifier: DigestVerifier
    password_lookup: Callable[[str], str | None]


@dataclass(slots=True)
class UserAgentConfig:
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: {"udp": 5060})
    user: str = "callbridge"
    user_agent: str = DEFAULT_PRODUCT
    min_se: int = MIN_SE_FLOOR
    session_expires: int = DEFAULT_SESSION_EXPIRES
    use_100rel: str = "supported"  # "required" peers always get it; "supported" uses it when offered
    t1: float = 0.5
    # Back-off and ban for failed digest logins; None turns the guard off.
    auth_guard: GuardPolicy | None = field(default_factory=GuardPolicy)
    # Dialog-creating requests per second per source IP (sip/ratelimit.py); None or 0: no limit.
    new_requests_per_source: float | None = NEW_REQUESTS_PER_SOURCE
    new_requests_burst: float = NEW_REQUESTS_BURST
    max_server_transactions: int = MAX_SERVER_TRANSACTIONS


class UserAgent:
    def __init__(self, config: UserAgentConfig | None = None) -> None:
        self.config = config or UserAgentConfig()
        self.transactions = TransactionLayer(t1=self.config.t1)
        self.sessions: dict[tuple[str, str], InviteSession] = {}  # (Call-ID, local tag)
        self._events: deque[ev.SessionEvent] = deque()
        self._outbox: list[tuple[bytes, Any]] = []
        # Decides per request whether credentials are required (trunk policy).
        self.inbound_auth: Callable[[Request, Any], InboundAuth | None] = lambda request, source: None
        # Whether an incoming REFER may go ahead: None accepts (202), else (status, reason) refuses it.
        self.refer_policy: Callable[[InviteSession, Any], tuple[int, str] | None] = lambda session, target: None
        # Counts failed digest answers per source and username: back-off, then ban (sip/guard.py).
        self.guard: AuthGuard | None = AuthGuard(self.config.auth_guard) if self.config.auth_guard else None
        # Sheds floods of new requests per source before they are parsed (sip/ratelimit.py).
        rate = self.config.new_requests_per_source
        self.limiter: NewDialogLimiter | None = NewDialogLimiter(rate, self.config.new_requests_burst) if rate else None
        # Sources the per-source limit spares: carriers listed by address (the call layer's trunks).
        self.rate_exempt: Callable[[str], bool] = lambda host: False
        self.overload_rejected = 0  # new requests answered 503 because max_server_transactions was reached
        # Bad input is logged once per source and kind per interval, with a count (never per message).
        self._log_throttle = LogThrottle()
        # Outbound registrations (RFC 3261 §10) this UA keeps alive, and who hears of their changes.
        self.registrations: list[Registration] = []
        self.on_registration_event: Callable[[RegistrationEvent], None] = lambda event: None

    # -- driver interface -------------------------------------------------------

    def receive(self, data: bytes, source: Any, now: float) -> None:
        """Feed one datagram or one framed stream message. Never raises."""
        if self.guard is not None and self._from_banned_source(data, source, now):
            return
        if self._shed(data, source, now):
            return
        try:
            message = parse_message(data, stream=getattr(source, "transport", "udp") != "udp")
        except PartialRequest as exc:
            self._reject_malformed(exc, source, now)
            return
        except SipParseError as exc:
            self._warn_source("unparseable", source, now, "dropped unparseable message from %s: %s", source, exc.reason)
            return
        try:
            if isinstance(message, Request):
                stamp_received(message, source)
                self.transactions.receive_request(message, source, now)
            else:
                self.transactions.receive_response(message, now)
            self._process_transaction_events(now)
        except SipParseError as exc:
            # A header the core needed turned out unusable: answer if we can.
            if isinstance(message, Request):
                self._reject_malformed(PartialRequest(exc.reason, exc.status, message), source, now)
            else:
                self._warn_source("bad-response", source, now, "dropped response from %s: %s", source, exc.reason)
        except Exception:  # noqa: BLE001 - one bad message must never stop the endpoint
            log.exception("error handling message from %s", source)

    def datagrams_to_send(self) -> list[tuple[bytes, Any]]:
        out = self.transactions.datagrams_to_send()
        if self._outbox:
            out.extend(self._outbox)
            self._outbox = []
        return out

    def next_event(self) -> ev.SessionEvent | None:
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self.transactions.next_deadline(),) if d is not None]
        for session in self.sessions.values():
            for deadline in (session.refresh_due, session.expires_at):
                if deadline is not None:
                    deadlines.append(deadline)
            if session.pending_prack is not None:
                deadlines.append(session.pending_prack.next_send)
        deadlines += [d for r in self.registrations if (d := r.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        self.transactions.handle_timer(now)
        for session in list(self.sessions.values()):
            self._session_timers(session, now)
        for registration in list(self.registrations):
            registration.handle_timer(now)
            self._drive_registration(registration, now)
        self._process_transaction_events(now)

    # -- local identity -------------------------------------------------------------

    def local_via(self, transport: str) -> Via:
        port = self.config.ports.get(transport) or next(iter(self.config.ports.values()))
        return Via(transport=transport.upper(), host=self.config.host, port=port, params={"branch": new_branch(), "rport": None})

    def local_contact(self, transport: str, user: str | None = None, *, sips: bool | None = None) -> NameAddr:
        port = self.config.ports.get(transport) or next(iter(self.config.ports.values()))
        params = {} if transport == "udp" else {"transport": transport}
        secure = transport == "tls" if sips is None else sips
        uri = SipUri(host=self.config.host, user=user or self.config.user, port=port,
                     scheme="sips" if secure else "sip", params=params)
        return NameAddr(uri)

    def _common_headers(self, *, response: bool = False) -> list[tuple[str, str]]:
        # RFC 3261 §20.35 / §20.41: a response names us in Server, a request in User-Agent.
        return [
            ("Allow", ", ".join(ALLOWED_METHODS)),
            ("Supported", ", ".join(sorted(SUPPORTED_OPTIONS))),
            ("Server" if response else "User-Agent", self.config.user_agent),
        ]

    # -- inbound requests -----------------------------------------------------------

    def _shed(self, data: bytes, source: Any, now: float) -> bool:
        """Load shedding on the raw bytes, before the parser (~50x the cost of this peek).

        A request that would create state (no To tag; not ACK/CANCEL) counts against its
        source's rate: over it, a few get 503 with Retry-After and the rest are dropped. With
        too many transactions alive, every new request gets 503 (RFC 3261 §21.5.4).
        """
        method = new_dialog_method(data)
        if method is None:
            return False
        host = getattr(source, "host", "")
        if self.limiter is not None and not self.rate_exempt(host):
            verdict = self.limiter.check(host, now)
            if verdict is Admission.DROP:
                self._warn_source("rate", source, now, "new-request rate exceeded by %s: dropped", host)
                return True
            if verdict is Admission.REJECT:
                self._warn_source("rate", source, now, "new-request rate exceeded by %s: 503", host)
                self._answer_overloaded(data, source)
                return True
        if self.transactions.counts[0] >= self.config.max_server_transactions:
            self.overload_rejected += 1
            self._warn_source("overload", source, now, "%d transactions alive: 503 to %s", self.transactions.counts[0],
                              host)
            self._answer_overloaded(data, source)
            return True
        return False

    def _answer_overloaded(self, data: bytes, source: Any) -> None:
        """503 + Retry-After, statelessly (no transaction is kept for a shed request)."""
        try:
            request = parse_message(data, stream=getattr(source, "transport", "udp") != "udp")
        except SipParseError:
            return
        if not isinstance(request, Request):
            return
        stamp_received(request, source)
        response = make_response(request, 503, to_tag=new_tag(), headers=[("Retry-After", str(RETRY_AFTER_SECONDS))])
        self.transactions.send_stateless(response, source)

    def _warn_source(self, kind: str, source: Any, now: float, msg: str, *args: object) -> None:
        """One line per source and kind per interval, saying how many more there were."""
        suppressed = self._log_throttle.check((kind, getattr(source, "host", str(source))), now)
        if suppressed is None:
            return
        if suppressed:
            msg += " (and %d more since the last line)"
            args = (*args, suppressed)
        log.warning(msg, *args)

    def _reject_malformed(self, exc: PartialRequest, source: Any, now: float = 0.0) -> None:
        request = exc.partial
        self._warn_source("malformed", source, now, "malformed %s from %s: %s", request.method, source, exc.reason)
        if request.method == "ACK":
            return  # RFC 3261 §17: never respond to an ACK
        if not exc.respondable:
            return  # nothing to route or match a response by (RFC 4475 insuf, badinv01)
        try:
            reason = f"Bad Request ({exc.reason})"[:120] if exc.status == 400 else None
            response = make_response(request, exc.status, reason.replace("\r", " ").replace("\n", " ") if reason else None)
            self.transactions.send_stateless(response, source)
        except (SipParseError, ValueError):
            log.warning("could not answer malformed request from %s", source)

    def _process_transaction_events(self, now: float) -> None:
        while (event := self.transactions.next_event()) is not None:
            if isinstance(event, RequestReceived):
                self._on_request(event, now)
            elif isinstance(event, ResponseReceived):
                self._on_response(event.response, event.transaction, now)
            elif isinstance(event, TransactionTimedOut):
                self._on_timeout(event, now)

    def _respond(self, tx: ServerTransaction, status: int, now: float, *, reason: str | None = None,
                 headers: list[tuple[str, str]] | None = None, body: bytes = b"", to_tag: str | None = None,
                 content_type: str | None = None) -> Response:
        extra = list(headers or [])
        if content_type and body:
            extra.append(("Content-Type", content_type))
        response = make_response(tx.request, status, reason, to_tag=to_tag, headers=extra, body=body)
        self.transactions.respond(tx, response, now)
        return response

    def _on_request(self, event: RequestReceived, now: float) -> None:
        request, tx = event.request, event.transaction
        if tx is None:  # ACK for a 2xx
            self._on_ack(request, now)
            return
        method = request.method
        if method not in ALLOWED_METHODS:
            # RFC 3261 §8.2.1: unknown methods get 501 with Allow (405 is for known ones).
            self._respond(tx, 501, now, headers=[("Allow", ", ".join(ALLOWED_METHODS))])
            return
        if not isinstance(request.uri, SipUri):
            self._respond(tx, 416, now)  # RFC 3261 §8.2.2.1
            return
        unsupported = request.headers.get_tokens("Require") - SUPPORTED_OPTIONS
        if unsupported and method not in ("CANCEL",):
            # RFC 3261 §8.2.2.3: 420 listing what we lack.
            self._respond(tx, 420, now, headers=[("Unsupported", ", ".join(sorted(unsupported)))])
            return
        if method == "CANCEL":
            self._on_cancel(tx, now)
            return
        if request.to_addr.tag:
            self._on_in_dialog(tx, now)
            return
        if method == "INVITE":
            self._on_new_invite(tx, event.source, now)
        elif method == "OPTIONS":
            # RFC 3261 §11.2: capabilities; also serves as a keep-alive ping.
            self._respond(tx, 200, now, to_tag=new_tag(),
                          headers=self._common_headers(response=True) + [("Accept", ACCEPTED_TYPES)])
        elif method in ("BYE", "INFO", "UPDATE", "PRACK", "REFER", "NOTIFY"):
            self._respond(tx, 481, now)  # needs a dialog (RFC 3261 §12.2.2)

    def _from_banned_source(self, data: bytes, source: Any, now: float) -> bool:
        """A banned source's new requests get no answer at all, unparsed (sip/guard.py).

        Responses, ACKs and requests inside a dialog (To tag) still pass: a call
        set up before the ban ends normally, and an ACK only absorbs our last answer.
        """
        guard = self.guard
        if guard is None or not guard.source_banned(getattr(source, "host", ""), now):
            return False
        if data.startswith((b"SIP/2.0 ", b"ACK ")) or _TO_TAG.search(data):
            return False
        guard.record_dropped()
        return True

    def _authorised(self, tx: ServerTransaction, source: Any, now: float) -> bool:
        request = tx.request
        policy = self.inbound_auth(request, source)
        if policy is None:
            return True
        header = request.headers.get("Authorization")
        if header is None:
            self._challenge(tx, policy, now, stale=False)
            return False
        host = getattr(source, "host", "")
        credentials, problem = None, ""
        try:
            credentials = parse_credentials(header)
        except DigestError as exc:
            problem = str(exc)
        username = credentials.username if credentials is not None else None
        verdict = self.guard.check(host, username, now) if self.guard is not None else Verdict.VERIFY
        if verdict is Verdict.DROP:
            # A banned source's request that looked in-dialog to the raw filter: a cheap 403 ends it.
            verdict = Verdict.REFUSE
        if verdict is Verdict.REFUSE:
            # Backing off: 403 without looking, so the right password earns nothing either.
            self._fail_auth(tx, host, username, "backing off", now, refused=True)
            return False
        if credentials is None:
            self._fail_auth(tx, host, None, problem, now)
            return False
        result = policy.verifier.verify(credentials, method=request.method, password_lookup=policy.password_lookup,
                                        now=now)
        if result.ok:
            if self.guard is not None:
                self.guard.record_success(host, username, now)
            return True
        if result.status in (VerifyStatus.STALE, VerifyStatus.WRONG_REALM):
            self._challenge(tx, policy, now, stale=result.status is VerifyStatus.STALE)
            return False
        self._fail_auth(tx, host, result.username, result.reason, now)
        return False

    def _fail_auth(self, tx: ServerTransaction, host: str, username: str | None, reason: str, now: float, *,
                   refused: bool = False) -> None:
        self._events.append(ev.AuthFailed(tx.request, username, reason))
        if self.guard is not None:
            self.guard.record_failure(host, username, now, refused=refused)
        if not refused:
            # At most failures_before_ban lines per source and window: the guard throttles the log too.
            log.warning("auth failed for %r from %s: %s", username, host, reason)
        self._respond(tx, 403, now)

    def _challenge(self, tx: ServerTransaction, policy: InboundAuth, now: float, *, stale: bool) -> None:
        headers = [("WWW-Authenticate", value) for value in policy.verifier.challenges(now, stale=stale)]
        self._respond(tx, 401, now, to_tag=new_tag(), headers=headers)

    def _on_new_invite(self, tx: ServerTransaction, source: Any, now: float) -> None:
        request = tx.request
        if not self._authorised(tx, source, now):
            return
        negotiated = negotiate_uas(request, min_se=self.config.min_se)
        if isinstance(negotiated, TooSmall):
            # RFC 4028 §8.1: 422 with our Min-SE.
            self._respond(tx, 422, now, headers=[("Min-SE", str(negotiated.min_se))])
            return
        local_tag = new_tag()
        dialog = Dialog.from_incoming_invite(request, local_tag, source)
        session = InviteSession(direction="inbound", invite=request, state=SessionState.INCOMING,
                                dialog=dialog, server_tx=tx, source=source, timer=negotiated,
                                remote_sdp=request.body or None)
        tx.context["session"] = session
        self.sessions[(dialog.call_id, local_tag)] = session
        # RFC 3261 §17.2.1: 100 Trying at once stops the client's Timer A.
        self._respond(tx, 100, now)
        self._events.append(ev.IncomingCall(session, request))

    def _find_session(self, request: Request) -> InviteSession | None:
        tag = request.to_addr.tag
        if tag is None:
            return None
        session = self.sessions.get((request.call_id, tag))
        if session is None or session.dialog is None:
            return None
        if session.dialog.remote_tag not in (None, request.from_addr.tag):
            return None
        return session

    def _on_in_dialog(self, tx: ServerTransaction, now: float) -> None:
        request = tx.request
        session = self._find_session(request)
        if session is None or session.state is SessionState.TERMINATED:
            self._respond(tx, 481, now)  # RFC 3261 §12.2.2
            return
        dialog = session.dialog
        assert dialog is not None
        if not dialog.accept_remote_cseq(request):
            self._respond(tx, 500, now, reason="Out of Order CSeq")
            return
        handler = {
            "BYE": self._on_bye,
            "INVITE": self._on_reoffer,
            "UPDATE": self._on_reoffer,
            "INFO": self._on_info,
            "REFER": self._on_refer,
            "NOTIFY": self._on_notify,
            "PRACK": self._on_prack,
            "OPTIONS": lambda s, t, n: self._respond(t, 200, n, headers=self._common_headers(response=True)),
        }.get(request.method)
        if handler is not None:
            handler(session, tx, now)

    def _on_ack(self, ack: Request, now: float) -> None:
        try:
            session = self._find_session(ack)
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
            self._events.append(ev.CallConfirmed(session))

    def _on_cancel(self, tx: ServerTransaction, now: float) -> None:
        invite_tx = self.transactions.find_server(tx.request)
        if invite_tx is None:
            self._respond(tx, 481, now)  # RFC 3261 §9.2
            return
        self._respond(tx, 200, now)
        session: InviteSession | None = invite_tx.context.get("session")
        if invite_tx.final_sent:
            return  # too late: the call was already answered or rejected
        to_tag = session.dialog.local_tag if session and session.dialog else new_tag()
        self._respond(invite_tx, 487, now, to_tag=to_tag)
        if session is not None:
            self._terminate(session, "cancelled")
            self._events.append(ev.CallCancelled(session))

    def _on_bye(self, session: InviteSession, tx: ServerTransaction, now: float) -> None:
        self._respond(tx, 200, now)
        if session.server_tx is not None and not session.server_tx.final_sent:
            # RFC 3261 §15.1.2: BYE on an early dialog → 487 to the INVITE.
            self._respond(session.server_tx, 487, now)
        self._terminate(session, "remote_bye")
        self._events.append(ev.CallEnded(session, "remote_bye"))

    def _on_reoffer(self, session: InviteSession, tx: ServerTransaction, now: float) -> None:
        request = tx.request
        if session.pending_offer_tx is not None or session.pending_reinvite is not None:
            # RFC 3261 §14.2 / RFC 3311 §5.2: offer while one is pending → 491.
            self._respond(tx, 491, now)
            return
        assert session.dialog is not None
        session.dialog.refresh_target(request)
        negotiated = negotiate_uas(request, min_se=self.config.min_se)
        if isinstance(negotiated, TooSmall):
            self._respond(tx, 422, now, headers=[("Min-SE", str(negotiated.min_se))])
            return
        if negotiated is not None:
            session.timer = negotiated
        if not request.body:
            # A session refresh (RFC 4028 §9) or an offerless re-INVITE: answer
            # with our current SDP (for re-INVITE, that SDP is our offer).
            body = session.local_sdp if request.method == "INVITE" else b""
            self._respond(tx, 200, now, headers=self._answer_headers(session, request), body=body or b"",
                          content_type="application/sdp")
            self._arm_session_timer(session, now)
            return
        session.pending_offer_tx = tx
        self._events.append(ev.OfferReceived(session, request.method, request.body))

    def _on_info(self, session: InviteSession, tx: ServerTransaction, now: float) -> None:
        request = tx.request
        self._respond(tx, 200, now)
        dtmf = parse_dtmf_info(request.content_type, request.body)
        if dtmf is not None:
            self._events.append(ev.DtmfInfoReceived(session, dtmf.digit, dtmf.duration_ms))

    def _on_refer(self, session: InviteSession, tx: ServerTransaction, now: float) -> None:
        request = tx.request
        refer_to = request.headers.get("Refer-To")
        if not refer_to:
            self._respond(tx, 400, now, reason="Missing Refer-To")
            return
        try:
            target = parse_name_addr(refer_to)
        except SipParseError:
            self._respond(tx, 400, now, reason="Bad Refer-To")
            return
        # Decided before the 202 (RFC 3515 §2.4.2): a transfer dials out, so policy says no with 403.
        refusal = self.refer_policy(session, target)
        if refusal is not None:
            self._respond(tx, refusal[0], now, reason=refusal[1])
            return
        self._respond(tx, 202, now)  # RFC 3515 §2.4.2
        session.incoming_refer_active = True
        self.notify_refer(session, 100, "Trying", now)  # §2.4.4: an immediate NOTIFY
        self._events.append(ev.ReferReceived(session, target, request.headers.get("Referred-By")))

    def _on_notify(self, session: InviteSession, tx: ServerTransaction, now: float) -> None:
        request = tx.request
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != "refer":
            self._respond(tx, 489, now, reason="Bad Event")  # RFC 6665 §8.3.1
            return
        self._respond(tx, 200, now)
        status = parse_sipfrag_status(request.body)
        state = (request.headers.get("Subscription-State") or "").split(";")[0].strip().lower()
        final = state == "terminated" or (status is not None and status >= 200)
        if status is not None:
            self._events.append(ev.ReferProgress(session, status, final))

    def _on_prack(self, session: InviteSession, tx: ServerTransaction, now: float) -> None:
        pending = session.pending_prack
        rack = (tx.request.headers.get("RAck") or "").split()
        if pending is None or not rack or rack[0] != str(pending.rseq):
            self._respond(tx, 481, now)  # RFC 3262 §4: no matching reliable provisional
            return
        session.pending_prack = None
        self._respond(tx, 200, now)

    # -- call-layer actions on inbound calls ------------------------------------------

    def ring(self, session: InviteSession, now: float, *, status: int = 180, sdp: bytes | None = None) -> None:
        """Send 180 (or 183 with early media), reliably when the peer requires 100rel."""
        tx = session.server_tx
        if tx is None or tx.final_sent or session.dialog is None:
            return
        request = session.invite
        require = request.headers.get_tokens("Require")
        supported = request.headers.get_tokens("Supported")
        reliable = "100rel" in require or (self.config.use_100rel == "required" and "100rel" in supported)
        headers = [("Contact", str(self._contact_for(session)))]
        if reliable and session.pending_prack is None:
            session.rseq += 1
            headers += [("Require", "100rel"), ("RSeq", str(session.rseq))]
        body = sdp or b""
        response = self._respond(tx, status, now, headers=headers, body=body, to_tag=session.dialog.local_tag,
                                 content_type="application/sdp")
        session.state = SessionState.EARLY
        if reliable and session.pending_prack is None:
            session.pending_prack = ReliableProvisional(response, session.rseq, self.config.t1,
                                                        now + self.config.t1, now + PRACK_TIMEOUT_T1 * self.config.t1)

    def answer(self, session: InviteSession, sdp: bytes, now: float, *, headers: list[tuple[str, str]] | None = None) -> None:
        tx = session.server_tx
        if tx is None or tx.final_sent or session.dialog is None:
            return
        session.local_sdp = sdp
        extra = self._answer_headers(session, session.invite) + list(headers or [])
        self._respond(tx, 200, now, headers=extra, body=sdp, to_tag=session.dialog.local_tag, content_type="application/sdp")
        session.pending_prack = None  # a 2xx ends provisional retransmission
        session.state = SessionState.ANSWERED
        self._arm_session_timer(session, now)

    def reject(self, session: InviteSession, status: int, now: float, *, reason: str | None = None,
               headers: list[tuple[str, str]] | None = None) -> None:
        tx = session.server_tx
        if tx is None or tx.final_sent:
            return
        tag = session.dialog.local_tag if session.dialog else new_tag()
        self._respond(tx, status, now, reason=reason, headers=headers, to_tag=tag)
        self._terminate(session, f"rejected_{status}")

    def accept_offer(self, session: InviteSession, sdp: bytes, now: float) -> None:
        tx = session.pending_offer_tx
        if tx is None:
            return
        session.pending_offer_tx = None
        session.local_sdp = sdp
        session.remote_sdp = tx.request.body
        self._respond(tx, 200, now, headers=self._answer_headers(session, tx.request), body=sdp, content_type="application/sdp")
        self._arm_session_timer(session, now)

    def reject_offer(self, session: InviteSession, status: int, now: float) -> None:
        tx = session.pending_offer_tx
        if tx is None:
            return
        session.pending_offer_tx = None
        self._respond(tx, status, now)

    def _answer_headers(self, session: InviteSession, request: Request) -> list[tuple[str, str]]:
        headers = [("Contact", str(self._contact_for(session)))] + self._common_headers(response=True)
        if session.timer is not None:
            headers += response_headers(session.timer, request)
        return headers

    def _contact_for(self, session: InviteSession) -> NameAddr:
        transport = getattr(session.source or session.destination, "transport", "udp")
        invite = session.invite if session.source is not None else None
        if invite is None or transport != "tls":
            return self.local_contact(transport)
        # RFC 3261 §12.1.1: our Contact is a SIPS URI when the caller's Request-URI, or its top
        # Record-Route (else its Contact), was one; a sip:...;transport=tls caller gets sip: back
        # (some stacks, e.g. libre in baresip 1.0, cannot send to a sips: target and drop the call).
        route = (invite.headers.get_all("Record-Route") or invite.headers.get_all("Contact") or [""])[0]
        sips = getattr(invite.uri, "scheme", "") == "sips" or route.lstrip(' "<').lower().startswith("sips:") \
            or "<sips:" in route.lower()
        return self.local_contact(transport, sips=sips)

    # -- session timers (RFC 4028) and 100rel retransmits ------------------------------

    def _arm_session_timer(self, session: InviteSession, now: float) -> None:
        timer = session.timer
        if timer is None:
            return
        session.we_refresh = (timer.refresher == "uas") == (session.direction == "inbound")
        if session.we_refresh:
            session.refresh_due, session.expires_at = now + timer.refresh_after(), None
        else:
            session.refresh_due, session.expires_at = None, now + timer.expire_after()

    def _session_timers(self, session: InviteSession, now: float) -> None:
        pending = session.pending_prack
        if pending is not None and pending.next_send <= now:
            if now >= pending.give_up_at:
                session.pending_prack = None
                # RFC 3262 §3: reject the INVITE when the peer never PRACKs.
                if session.server_tx and not session.server_tx.final_sent:
                    self.reject(session, 504, now, reason="No PRACK")
                    self._events.append(ev.CallEnded(session, "timeout"))
            else:
                self._outbox.append((pending.response.serialize(), session.server_tx.response_destination))  # type: ignore[union-attr]
                pending.interval *= 2
                pending.next_send = now + pending.interval
        if session.expires_at is not None and session.expires_at <= now:
            session.expires_at = None
            log.info("session timer expired for %s", session.call_id)
            self.bye(session, now, reason="session_expired")
        if session.refresh_due is not None and session.refresh_due <= now:
            session.refresh_due = None
            self._refresh_session(session, now)

    def _refresh_session(self, session: InviteSession, now: float) -> None:
        """We are the refresher: re-INVITE with the current SDP (RFC 4028 §7.4/§9)."""
        if session.state is not SessionState.CONFIRMED or session.pending_reinvite is not None:
            self._arm_session_timer(session, now)
            return
        self.reinvite(session, session.local_sdp or b"", now, refresh=True)

    # -- outbound requests within a dialog ---------------------------------------------

    def _send_in_dialog(self, session: InviteSession, method: str, now: float, *,
                        headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                        content_type: str | None = None) -> ClientTransaction | None:
        dialog = session.dialog
        if dialog is None:
            return None
        uri, peer = dialog.request_destination()
        destination = peer if peer is not None else address_for_uri(uri) if isinstance(uri, SipUri) else None
        if destination is None:
            log.warning("no route for in-dialog %s on %s", method, session.call_id)
            return None
        transport = destination.transport
        request = dialog.build_request(method, self.local_via(transport), self.local_contact(transport))
        for name, value in headers or ():
            request.headers.add(name, value)
        if body:
            request.headers.add("Content-Type", content_type or "application/sdp")
            request.body = body
        tx = self.transactions.send_request(request, destination, now)
        tx.context["session"] = session
        return tx

    def bye(self, session: InviteSession, now: float, *, reason: str = "local_bye") -> None:
        """Hang up: BYE when confirmed, CANCEL when still ringing out, error when ringing in."""
        if session.state is SessionState.TERMINATED:
            return
        if session.direction == "inbound" and session.server_tx is not None and not session.server_tx.final_sent:
            self.reject(session, 480, now)
        elif session.direction == "outbound" and session.state in (SessionState.CALLING, SessionState.EARLY):
            self.cancel(session, now)
            return
        else:
            self._send_in_dialog(session, "BYE", now)
        self._terminate(session, reason)
        self._events.append(ev.CallEnded(session, reason))

    def reinvite(self, session: InviteSession, sdp: bytes, now: float, *, refresh: bool = False) -> None:
        """Send a re-INVITE (hold/resume or a session refresh)."""
        headers = self._common_headers()
        if session.timer is not None:
            headers.append(("Session-Expires", f"{session.timer.interval};refresher={'uas' if session.direction == 'inbound' else 'uac'}"))
        session.local_sdp = sdp
        tx = self._send_in_dialog(session, "INVITE", now, headers=headers, body=sdp)
        if tx is not None:
            tx.context["refresh"] = refresh
            session.pending_reinvite = tx

    def send_info_dtmf(self, session: InviteSession, digit: str, now: float, duration_ms: int = 160) -> None:
        self._send_in_dialog(session, "INFO", now, body=dtmf_relay_body(digit, duration_ms), content_type="application/dtmf-relay")

    def refer(self, session: InviteSession, target: str, now: float) -> None:
        """Blind transfer (RFC 3515): ask the peer to call ``target``."""
        contact = self.local_contact(getattr(session.source or session.destination, "transport", "udp"))
        tx = self._send_in_dialog(session, "REFER", now, headers=[("Refer-To", f"<{target}>"), ("Referred-By", str(contact))])
        session.refer_tx = tx

    def notify_refer(self, session: InviteSession, status: int, reason: str, now: float) -> None:
        """Report transfer progress with a message/sipfrag NOTIFY (RFC 3515 §2.4.5)."""
        if not session.incoming_refer_active:
            return
        final = status >= 200
        state = "terminated;reason=noresource" if final else f"active;expires={REFER_SUBSCRIPTION_SECONDS}"
        headers = [("Event", "refer"), ("Subscription-State", state)]
        self._send_in_dialog(session, "NOTIFY", now, headers=headers, body=sipfrag(status, reason), content_type="message/sipfrag")
        if final:
            session.incoming_refer_active = False

    # -- outbound calls -----------------------------------------------------------------

    def invite(self, target: SipUri, now: float, *, sdp: bytes, destination: Address | None = None,
               from_user: str | None = None, from_display: str | None = None, from_host: str | None = None,
               headers: list[tuple[str, str]] | None = None, credentials: tuple[str, str] | None = None) -> InviteSession:
        destination = destination or address_for_uri(target)
        transport = destination.transport
        host = from_host or self.config.host
        from_addr = NameAddr(SipUri(host=host, user=from_user or self.config.user), display_name=from_display,
                             params={"tag": new_tag()})
        request = Request(method="INVITE", uri=target)
        request.headers.add("Via", str(self.local_via(transport)))
        request.headers.add("Max-Forwards", "70")
        request.headers.add("From", str(from_addr))
        request.headers.add("To", str(NameAddr(target.without_headers())))
        request.headers.add("Call-ID", new_call_id(self.config.host))
        request.headers.add("CSeq", "1 INVITE")
        request.headers.add("Contact", str(self.local_contact(transport)))
        for name, value in self._common_headers():
            request.headers.add(name, value)
        request.headers.add("Session-Expires", str(self.config.session_expires))
        request.headers.add("Min-SE", str(self.config.min_se))
        for name, value in headers or ():
            request.headers.add(name, value)
        request.headers.add("Content-Type", "application/sdp")
        request.body = sdp
        session = InviteSession(direction="outbound", invite=request, state=SessionState.CALLING,
                                destination=destination, local_sdp=sdp, credentials=credentials)
        session.client_tx = self.transactions.send_request(request, destination, now)
        session.client_tx.context["session"] = session
        self.sessions[(request.call_id, from_addr.tag or "")] = session
        return session

    def cancel(self, session: InviteSession, now: float) -> None:
        """RFC 3261 §9.1: CANCEL only after a provisional; otherwise remember to."""
        tx = session.client_tx
        if tx is None or session.state not in (SessionState.CALLING, SessionState.EARLY):
            return
        if tx.last_response is None:
            session.cancel_requested = True
            return
        invite = tx.request
        cancel = Request(method="CANCEL", uri=invite.uri)
        cancel.headers.add("Via", invite.headers.get_all("Via")[0])
        for route in invite.headers.get_all("Route"):
            cancel.headers.add("Route", route)
        cancel.headers.add("Max-Forwards", "70")
        cancel.headers.add("From", invite.headers.get("From") or "")
        cancel.headers.add("To", invite.headers.get("To") or "")
        cancel.headers.add("Call-ID", invite.call_id)
        cancel.headers.add("CSeq", f"{invite.cseq.number} CANCEL")
        self.transactions.send_request(cancel, tx.destination, now)

    # -- registrations (RFC 3261 §10) ---------------------------------------------------

    def register(self, registration: Registration, now: float) -> None:
        """Start keeping ``registration`` bound; its REGISTERs and their answers flow through here."""
        if registration not in self.registrations:
            self.registrations.append(registration)
        registration.start(now)
        self._drive_registration(registration, now)

    def unregister(self, registration: Registration, now: float) -> None:
        """Remove the binding (expires=0); the registration stays listed with its final status."""
        registration.unregister(now)
        self._drive_registration(registration, now)

    def _drive_registration(self, registration: Registration, now: float) -> None:
        """Send what the registration wants sent, each REGISTER in its own client transaction."""
        binding = registration.binding
        destination = binding.destination or address_for_uri(binding.registrar)
        for request in registration.requests_to_send():
            request.headers.prepend("Max-Forwards", "70")
            request.headers.prepend("Via", str(self.local_via(destination.transport)))
            for name, value in self._common_headers():
                request.headers.add(name, value)
            tx = self.transactions.send_request(request, destination, now)
            tx.context["registration"] = registration
        while (event := registration.next_event()) is not None:
            try:
                self.on_registration_event(event)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop signalling
                log.exception("registration listener failed for %s", type(event).__name__)

    # -- responses ----------------------------------------------------------------------

    def _on_response(self, response: Response, tx: ClientTransaction, now: float) -> None:
        registration: Registration | None = tx.context.get("registration")
        if registration is not None:
            registration.on_response(response, now)
            self._drive_registration(registration, now)
            return
        session: InviteSession | None = tx.context.get("session")
        if session is None:
            return
        method = tx.request.method
        if method == "INVITE" and tx is session.client_tx:
            self._on_invite_response(session, response, tx, now)
        elif method == "INVITE":
            self._on_reinvite_response(session, response, tx, now)
        elif method == "REFER" and response.status >= 300:
            self._events.append(ev.ReferFailed(session, response.status))
        elif method == "REFER" and response.status >= 200:
            self._events.append(ev.ReferAccepted(session, response.status))
        elif method in ("BYE", "NOTIFY", "INFO", "UPDATE") and response.status in (401, 407):
            log.info("%s on %s was challenged; not retried", method, session.call_id)

    def _on_invite_response(self, session: InviteSession, response: Response, tx: ClientTransaction, now: float) -> None:
        status = response.status
        if status < 200:
            if session.state is SessionState.CALLING:
                session.state = SessionState.EARLY
            if response.to_addr.tag and "100rel" in response.headers.get_tokens("Require"):
                self._send_prack(session, response, tx, now)
            if status > 100:
                self._events.append(ev.CallProgress(session, response))
            if session.cancel_requested:
                session.cancel_requested = False
                self.cancel(session, now)
            return
        if status < 300:
            self._on_invite_2xx(session, response, tx, now)
            return
        if status in (401, 407) and self._retry_with_auth(session, response, tx, now):
            return
        self._terminate(session, f"failed_{status}")
        self._events.append(ev.CallFailed(session, status, response.reason))

    def _on_invite_2xx(self, session: InviteSession, response: Response, tx: ClientTransaction, now: float) -> None:
        if session.ack_wire is not None:
            # RFC 3261 §13.2.2.4: a retransmitted 2xx gets the same ACK again.
            self._outbox.append((session.ack_wire, session.dialog.peer_address if session.dialog else tx.destination))
            return
        dialog = Dialog.from_outgoing_invite(tx.request, response, tx.destination)
        old_key = (session.call_id, dialog.local_tag)
        session.dialog = dialog
        self.sessions[old_key] = session
        ack = dialog.build_request("ACK", self.local_via(tx.destination.transport),
                                   self.local_contact(tx.destination.transport), cseq=tx.request.cseq.number)
        if dialog.route_set:
            destination = address_for_uri(dialog.route_set[0].uri) if isinstance(dialog.route_set[0].uri, SipUri) else tx.destination
        else:
            destination = tx.destination
        dialog.peer_address = destination
        session.ack_wire = ack.serialize()
        self._outbox.append((session.ack_wire, destination))
        session.remote_sdp = response.body or None
        session.timer = negotiate_uac(response)
        if session.cancel_requested or session.state is SessionState.TERMINATED:
            # The call was abandoned while the 2xx was in flight: ACK and BYE (§15).
            session.state = SessionState.CONFIRMED
            self.bye(session, now)
            return
        session.state = SessionState.CONFIRMED
        dialog.confirmed = True
        self._arm_session_timer(session, now)
        self._events.append(ev.CallAnswered(session, response))

    def _send_prack(self, session: InviteSession, response: Response, tx: ClientTransaction, now: float) -> None:
        rseq = response.headers.get("RSeq")
        if not rseq or not rseq.isdigit():
            return
        dialog = Dialog.from_outgoing_invite(tx.request, response, tx.destination)
        dialog.local_seq = tx.request.cseq.number
        transport = tx.destination.transport
        prack = dialog.build_request("PRACK", self.local_via(transport), self.local_contact(transport))
        prack.headers.add("RAck", f"{rseq} {tx.request.cseq.number} INVITE")  # RFC 3262 §7.2
        self.transactions.send_request(prack, tx.destination, now)

    def _retry_with_auth(self, session: InviteSession, response: Response, tx: ClientTransaction, now: float) -> bool:
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
        request.headers.set("Via", str(self.local_via(tx.destination.transport)))
        request.headers.set("CSeq", f"{old.cseq.number + 1} INVITE")  # RFC 3261 §22.2: new CSeq
        authorization = build_authorization(challenge, method="INVITE", uri=str(old.uri), username=username,
                                            password=password, cnonce=secrets.token_hex(8))
        request.headers.set("Authorization" if response.status == 401 else "Proxy-Authorization", authorization)
        session.invite = request
        session.client_tx = self.transactions.send_request(request, tx.destination, now)
        session.client_tx.context["session"] = session
        return True

    def _on_reinvite_response(self, session: InviteSession, response: Response, tx: ClientTransaction, now: float) -> None:
        if response.status < 200:
            return
        if session.pending_reinvite is tx:
            session.pending_reinvite = None
        dialog = session.dialog
        if response.status < 300 and dialog is not None:
            ack = dialog.build_request("ACK", self.local_via(tx.destination.transport),
                                       self.local_contact(tx.destination.transport), cseq=tx.request.cseq.number)
            self._outbox.append((ack.serialize(), tx.destination))
            dialog.refresh_target(response)
            timer = negotiate_uac(response)
            if timer is not None:
                session.timer = timer
            self._arm_session_timer(session, now)
            if response.body and not tx.context.get("refresh"):
                session.remote_sdp = response.body
                self._events.append(ev.AnswerReceived(session, response.body))
        elif response.status in (408, 481):
            # RFC 3261 §14.1: the dialog is gone.
            self._terminate(session, "timeout")
            self._events.append(ev.CallEnded(session, "timeout"))

    # -- timeouts and teardown -----------------------------------------------------------

    def _on_timeout(self, event: TransactionTimedOut, now: float) -> None:
        tx = event.transaction
        registration: Registration | None = tx.context.get("registration")
        if registration is not None:
            registration.on_timeout(tx.request, now)
            self._drive_registration(registration, now)
            return
        session: InviteSession | None = tx.context.get("session")
        if session is None or session.state is SessionState.TERMINATED:
            return
        if event.reason == "no-ack":
            # RFC 3261 §13.3.1.4: no ACK for our 2xx → end the dialog with BYE.
            self._warn_source("no-ack", session.source, now, "no ACK for 2xx from %s (last: %s)", session.source,
                              session.call_id)
            self._send_in_dialog(session, "BYE", now)
            self._terminate(session, "no_ack")
            self._events.append(ev.CallEnded(session, "no_ack"))
        elif isinstance(tx, ClientTransaction) and tx is session.client_tx:
            self._terminate(session, "timeout")
            self._events.append(ev.CallFailed(session, 408, "Request Timeout"))
        elif isinstance(tx, ClientTransaction) and tx.request.method == "REFER":
            self._events.append(ev.ReferFailed(session, 408))
        elif isinstance(tx, ClientTransaction) and tx.request.method in ("INVITE", "UPDATE"):
            self.bye(session, now, reason="timeout")

    def _terminate(self, session: InviteSession, reason: str) -> None:
        session.state = SessionState.TERMINATED
        session.end_reason = session.end_reason or reason
        session.refresh_due = session.expires_at = None
        session.pending_prack = None
        if session.dialog is not None:
            self.sessions.pop((session.call_id, session.dialog.local_tag), None)
        else:
            tag = session.invite.from_addr.tag if session.direction == "outbound" else None
            self.sessions.pop((session.call_id, tag or ""), None)
