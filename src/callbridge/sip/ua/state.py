"""What every part of the UA core shares: settings, transactions, sessions, deadlines, and the two outputs.

The parts (``uas``, ``uac``, ``actions``, ``timers``...) are functions and small
objects that take this state explicitly; none of them keeps a copy of it.
Output goes two ways: datagrams into :attr:`UaState.outbox` (or through the
transaction layer) and events into :attr:`UaState.events`.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from ..dialog import new_branch
from ..events import UaEvent
from ..message import Request, Response, make_response
from ..ratelimit import LogThrottle
from ..session import InviteSession, SessionState
from ..session_timer import response_headers
from ..source_header import TrustedProxies
from ..transaction import ServerTransaction, TransactionLayer
from ..uri import NameAddr, SipUri, Via
from .config import ALLOWED_METHODS, SUPPORTED_OPTIONS, UserAgentConfig
from .deadlines import SessionDeadlines

log = logging.getLogger("callbridge.sip")

SessionKey = tuple[str, str]  # (Call-ID, our tag)


class UaState:
    def __init__(self, config: UserAgentConfig) -> None:
        self.config = config
        self.transactions = TransactionLayer(t1=config.t1)
        self.sessions: dict[SessionKey, InviteSession] = {}
        self.deadlines = SessionDeadlines()
        self.events: deque[UaEvent] = deque()
        # Sent outside any transaction: ACKs for 2xx (RFC 3261 §13.2.2.4), 100rel retransmits.
        self.outbox: list[tuple[bytes, Any]] = []
        # Bad input is logged once per source and kind per interval, with a count (never per message).
        self._log_throttle = LogThrottle()
        # Who is calling when a trusted proxy relays the request (sip/source_header.py).
        self.proxies = TrustedProxies(config.trusted_proxies, config.source_header)

    # -- output -------------------------------------------------------------------

    def emit(self, event: UaEvent) -> None:
        self.events.append(event)

    def send(self, wire: bytes, destination: Any) -> None:
        self.outbox.append((wire, destination))

    def respond(self, tx: ServerTransaction, status: int, now: float, *, reason: str | None = None,
                headers: list[tuple[str, str]] | None = None, body: bytes = b"", to_tag: str | None = None,
                content_type: str | None = None) -> Response:
        extra = list(headers or [])
        if content_type and body:
            extra.append(("Content-Type", content_type))
        response = make_response(tx.request, status, reason, to_tag=to_tag, headers=extra, body=body)
        self.transactions.respond(tx, response, now)
        return response

    def warn_source(self, kind: str, source: Any, now: float, msg: str, *args: object) -> None:
        """One line per source and kind per interval, saying how many more there were."""
        self.warn_throttled((kind, getattr(source, "host", str(source))), now, msg, *args)

    def warn_throttled(self, key: object, now: float, msg: str, *args: object) -> None:
        """One line per ``key`` per interval, saying how many more there were."""
        suppressed = self._log_throttle.check(key, now)
        if suppressed is None:
            return
        if suppressed:
            msg += " (and %d more since the last line)"
            args = (*args, suppressed)
        log.warning(msg, *args)

    # -- local identity -------------------------------------------------------------

    def local_via(self, transport: str) -> Via:
        port = self.config.ports.get(transport) or next(iter(self.config.ports.values()))
        return Via(transport=transport.upper(), host=self.config.host, port=port,
                   params={"branch": new_branch(), "rport": None})

    def local_contact(self, transport: str, user: str | None = None, *, sips: bool | None = None) -> NameAddr:
        port = self.config.ports.get(transport) or next(iter(self.config.ports.values()))
        params: dict[str, str | None] = {} if transport == "udp" else {"transport": transport}
        secure = transport == "tls" if sips is None else sips
        uri = SipUri(host=self.config.host, user=user or self.config.user, port=port,
                     scheme="sips" if secure else "sip", params=params)
        return NameAddr(uri)

    def common_headers(self, *, response: bool = False) -> list[tuple[str, str]]:
        # RFC 3261 §20.35 / §20.41: a response names us in Server, a request in User-Agent.
        return [
            ("Allow", ", ".join(ALLOWED_METHODS)),
            ("Supported", ", ".join(sorted(SUPPORTED_OPTIONS))),
            ("Server" if response else "User-Agent", self.config.user_agent),
        ]

    def contact_for(self, session: InviteSession) -> NameAddr:
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

    def answer_headers(self, session: InviteSession, request: Request) -> list[tuple[str, str]]:
        """Contact, capabilities and the negotiated session timer (RFC 4028 §9) for a 2xx."""
        headers = [("Contact", str(self.contact_for(session)))] + self.common_headers(response=True)
        if session.timer is not None:
            headers += response_headers(session.timer, request)
        return headers

    # -- sessions -------------------------------------------------------------------

    def find_session(self, request: Request) -> InviteSession | None:
        """The dialog an in-dialog request belongs to (RFC 3261 §12.2.2), by Call-ID and both tags."""
        tag = request.to_addr.tag
        if tag is None:
            return None
        session = self.sessions.get((request.call_id, tag))
        if session is None or session.dialog is None:
            return None
        if session.dialog.remote_tag not in (None, request.from_addr.tag):
            return None
        return session

    def terminate(self, session: InviteSession, reason: str) -> None:
        session.state = SessionState.TERMINATED
        session.end_reason = session.end_reason or reason
        session.refresh_due = session.expires_at = None
        session.pending_prack = None
        self.deadlines.clear(session)
        if session.dialog is not None:
            self.sessions.pop((session.call_id, session.dialog.local_tag), None)
        else:
            tag = session.invite.from_addr.tag if session.direction == "outbound" else None
            self.sessions.pop((session.call_id, tag or ""), None)
