"""Digest authentication of inbound requests (RFC 3261 §22.1, RFC 7616), with the login guard."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import events as ev
from ..dialog import new_tag
from ..digest import DigestError, DigestVerifier, VerifyStatus, parse_credentials
from ..guard import AuthGuard, Verdict
from ..message import Request
from ..transaction import ServerTransaction
from .state import UaState

log = logging.getLogger("callbridge.sip")


@dataclass(slots=True)
class InboundAuth:
    """Digest credentials an inbound trunk demands (RFC 3261 §22.1)."""

    verifier: DigestVerifier
    password_lookup: Callable[[str], str | None]


def no_auth(request: Request, source: Any) -> InboundAuth | None:
    return None


class InboundAuthenticator:
    """Challenges, verifies and counts failures; ``policy`` says per request what is demanded."""

    def __init__(self, state: UaState, guard: AuthGuard | None) -> None:
        self._state = state
        self._guard = guard
        # Decides per request whether credentials are required (the call layer's trunk policy).
        self.policy: Callable[[Request, Any], InboundAuth | None] = no_auth

    def authorised(self, tx: ServerTransaction, caller: Any, now: float) -> bool:
        """True to go on; otherwise the request was answered (401 challenge or 403).

        ``caller`` is who is calling (behind a trusted proxy, whom it named): the policy and
        the guard's per-source counts are about the caller, not the proxy carrying many.
        """
        request = tx.request
        policy = self.policy(request, caller)
        if policy is None:
            return True
        header = request.headers.get("Authorization")
        if header is None:
            self._challenge(tx, policy, now, stale=False)
            return False
        host = getattr(caller, "host", "")
        credentials, problem = None, ""
        try:
            credentials = parse_credentials(header)
        except DigestError as exc:
            problem = str(exc)
        username = credentials.username if credentials is not None else None
        guard = self._guard
        verdict = guard.check(host, username, now) if guard is not None else Verdict.VERIFY
        if verdict is Verdict.DROP:
            # A banned source's request that looked in-dialog to the raw filter: a cheap 403 ends it.
            verdict = Verdict.REFUSE
        if verdict is Verdict.REFUSE:
            # Backing off: 403 without looking, so the right password earns nothing either.
            self._fail(tx, host, username, "backing off", now, refused=True)
            return False
        if credentials is None:
            self._fail(tx, host, None, problem, now)
            return False
        result = policy.verifier.verify(credentials, method=request.method, password_lookup=policy.password_lookup,
                                        now=now)
        if result.ok:
            if guard is not None:
                guard.record_success(host, username, now)
            return True
        if result.status in (VerifyStatus.STALE, VerifyStatus.WRONG_REALM):
            self._challenge(tx, policy, now, stale=result.status is VerifyStatus.STALE)
            return False
        self._fail(tx, host, result.username, result.reason, now)
        return False

    def _fail(self, tx: ServerTransaction, host: str, username: str | None, reason: str, now: float, *,
              refused: bool = False) -> None:
        self._state.emit(ev.AuthFailed(tx.request, username, reason))
        if self._guard is not None:
            self._guard.record_failure(host, username, now, refused=refused)
        if not refused:
            # At most failures_before_ban lines per source and window: the guard throttles the log too.
            log.warning("auth failed for %r from %s: %s", username, host, reason)
        self._state.respond(tx, 403, now)

    def _challenge(self, tx: ServerTransaction, policy: InboundAuth, now: float, *, stale: bool) -> None:
        headers = [("WWW-Authenticate", value) for value in policy.verifier.challenges(now, stale=stale)]
        self._state.respond(tx, 401, now, to_tag=new_tag(), headers=headers)
