"""What is turned away before the UA core: banned sources, floods, overload, malformed requests.

The checks on raw bytes run before the parser, which costs ~50 times a regex
peek: a flood must stay cheap. Answers here are stateless (no transaction is
kept for a request we shed).

Behind a trusted proxy the checks count the caller the proxy names
(sip/source_header.py), not the proxy: otherwise one caller's flood or failed
logins would shut out everyone the proxy carries. And the proxy always gets an
answer that is about that caller: silence would make it time the branch out, and
a 503 says the whole server is overloaded (RFC 3261 §21.5.4); either makes a
dispatcher mark this server down for everyone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..dialog import new_tag
from ..errors import SipParseError
from ..guard import AuthGuard
from ..message import Request, make_response
from ..parser import PartialRequest, parse_message
from ..ratelimit import RETRY_AFTER_SECONDS, NewDialogLimiter, Verdict, has_to_tag, new_dialog_method
from ..via import stamp_received
from .state import UaState

log = logging.getLogger("callbridge.sip")

# Our reason phrase for a 400 repeats the parser's complaint, cut to this length.
MAX_REASON_LENGTH = 120
# A caller over its rate behind a trusted proxy: "try later" about this caller, with Retry-After
# (RFC 3261 §20.33 allows it on 480), which a proxy relays instead of failing the server over.
PROXIED_RATE_STATUS = 480
PROXIED_RATE_REASON = "Too Many Requests"


def no_exemption(host: str) -> bool:
    return False


def is_stream(source: Any) -> bool:
    return getattr(source, "transport", "udp") != "udp"


class Admission:
    """Sheds new requests per source and under overload; drops banned sources; answers bad requests."""

    def __init__(self, state: UaState, guard: AuthGuard | None, limiter: NewDialogLimiter | None) -> None:
        self._state = state
        self._guard = guard
        # Sheds floods of new requests per source before they are parsed (sip/ratelimit.py).
        self.limiter = limiter
        # Sources the per-source limit spares: carriers listed by address (the call layer's trunks).
        self.rate_exempt: Callable[[str], bool] = no_exemption
        self.overload_rejected = 0  # new requests answered 503 because max_server_transactions was reached

    def turn_away(self, data: bytes, source: Any, now: float) -> bool:
        """True if ``data`` must not reach the parser (it was dropped, or answered 503)."""
        host = getattr(source, "host", "")
        proxies = self._state.proxies
        proxied = proxies.trusts(host)
        counted = proxies.counted_host(data, host) if proxied else host
        return (self._from_banned_source(data, source, counted, proxied, now)
                or self._shed(data, source, counted, proxied, now))

    def _from_banned_source(self, data: bytes, source: Any, host: str, proxied: bool, now: float) -> bool:
        """A banned source's new requests get no answer at all, unparsed (sip/guard.py).

        Responses, ACKs and requests inside a dialog (To tag) still pass: a call
        set up before the ban ends normally, and an ACK only absorbs our last answer.
        A banned caller behind a trusted proxy gets 403 instead of silence.
        """
        guard = self._guard
        if guard is None or not guard.source_banned(host, now):
            return False
        if data.startswith((b"SIP/2.0 ", b"ACK ")) or has_to_tag(data):
            return False
        guard.record_dropped()
        if proxied:
            self._answer_stateless(data, source, 403)
        return True

    def _shed(self, data: bytes, source: Any, host: str, proxied: bool, now: float) -> bool:
        """Load shedding on the raw bytes.

        A request that would create state (no To tag; not ACK/CANCEL) counts against its
        source's rate: over it, a few get 503 with Retry-After and the rest are dropped
        (through a trusted proxy: all get 480 with Retry-After). With too many transactions
        alive, every new request gets 503 (RFC 3261 §21.5.4).
        """
        if new_dialog_method(data) is None:
            return False
        state = self._state
        if self.limiter is not None and not self.rate_exempt(host):
            verdict = self.limiter.check(host, now)
            if verdict is not Verdict.ADMIT and proxied:
                state.warn_source("rate", host, now, "new-request rate exceeded by %s behind proxy %s: %d", host,
                                  source, PROXIED_RATE_STATUS)
                self._answer_stateless(data, source, PROXIED_RATE_STATUS,
                                       [("Retry-After", str(RETRY_AFTER_SECONDS))], PROXIED_RATE_REASON)
                return True
            if verdict is Verdict.DROP:
                state.warn_source("rate", host, now, "new-request rate exceeded by %s: dropped", host)
                return True
            if verdict is Verdict.REJECT:
                state.warn_source("rate", host, now, "new-request rate exceeded by %s: 503", host)
                self._answer_overloaded(data, source)
                return True
        alive = state.transactions.counts[0]
        if alive >= state.config.max_server_transactions:
            self.overload_rejected += 1
            state.warn_source("overload", source, now, "%d transactions alive: 503 to %s", alive, host)
            self._answer_overloaded(data, source)
            return True
        return False

    def _answer_overloaded(self, data: bytes, source: Any) -> None:
        """503 + Retry-After, statelessly."""
        self._answer_stateless(data, source, 503, [("Retry-After", str(RETRY_AFTER_SECONDS))])

    def _answer_stateless(self, data: bytes, source: Any, status: int,
                          headers: list[tuple[str, str]] | None = None, reason: str | None = None) -> None:
        try:
            request = parse_message(data, stream=is_stream(source))
        except SipParseError:
            return
        if not isinstance(request, Request):
            return
        stamp_received(request, source)
        response = make_response(request, status, reason, to_tag=new_tag(), headers=headers)
        self._state.transactions.send_stateless(response, source)

    def reject_malformed(self, exc: PartialRequest, source: Any, now: float) -> None:
        """Answer a request the parser (or the core) found broken, if it can be answered at all."""
        request = exc.partial
        self._state.warn_source("malformed", source, now, "malformed %s from %s: %s", request.method, source,
                                exc.reason)
        if request.method == "ACK":
            return  # RFC 3261 §17: never respond to an ACK
        if not exc.respondable:
            return  # nothing to route or match a response by (RFC 4475 insuf, badinv01)
        try:
            reason = None
            if exc.status == 400:
                reason = f"Bad Request ({exc.reason})"[:MAX_REASON_LENGTH].replace("\r", " ").replace("\n", " ")
            response = make_response(request, exc.status, reason)
            self._state.transactions.send_stateless(response, source)
        except (SipParseError, ValueError):
            log.warning("could not answer malformed request from %s", source)
