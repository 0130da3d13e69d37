"""Keeping one binding registered at a registrar (RFC 3261 §10), sans-IO.

A :class:`Registration` never touches a socket or a clock. Its driver (the
UA core, :meth:`UserAgent.register`) calls :meth:`Registration.start`, asks
:meth:`next_deadline` when to call :meth:`handle_timer`, sends what
:meth:`requests_to_send` returns inside client transactions (adding Via and
Max-Forwards), and routes final responses and transaction timeouts back in
through :meth:`on_response` / :meth:`on_timeout`. Status changes come out of
:meth:`next_event`; :meth:`status` is a snapshot for the API.
"""

from __future__ import annotations

import enum
import random
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .address import Address
from .digest import Challenge, DigestError, build_authorization, choose_challenge
from .errors import SipParseError
from .grammar import parse_uint
from .message import MAX_EXPIRES, Request, Response
from .uri import NameAddr, SipUri

DEFAULT_EXPIRES = 3600
# Refresh at the later of half the interval and this long before expiry: a
# full non-INVITE transaction timeout (Timer F = 64·T1 = 32 s, RFC 3261
# §17.1.2.2) plus slack still lands before the binding lapses. §10.2.4 leaves
# the timing to the UA; short intervals simply refresh at half-time.
REFRESH_MARGIN_SECONDS = 60.0
# RFC 5626 §4.5 flavour: bounded exponential backoff, randomised to 50–100%
# of the wait so many clients behind one failed registrar do not stampede.
BACKOFF_BASE_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 300.0
BACKOFF_JITTER_FLOOR = 0.5
# Retry-After (RFC 3261 §20.33) is honoured, but never beyond this.
MAX_RETRY_AFTER_SECONDS = 3600.0
# Challenges answered for one registration attempt: the first, plus stale
# nonces (RFC 7616 §3.3 stale=true); more than this is a loop.
MAX_CHALLENGES_PER_ATTEMPT = 3
TIMEOUT_STATUS = 408  # RFC 3261 §8.1.3.1: a transaction timeout counts as 408


class RegistrationState(enum.Enum):
    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    UNREGISTERING = "unregistering"
    BACKOFF = "backoff"  # failed; a retry is scheduled
    FAILED = "failed"  # failed in a way retrying cannot fix (configuration)


@dataclass(frozen=True, slots=True)
class Binding:
    """What to register: the AOR in To/From, our Contact, where, and with which credentials."""

    name: str
    registrar: SipUri  # Request-URI: the registrar's domain, no user part (RFC 3261 §10.2)
    aor: SipUri  # address-of-record, in To and From (§10.2)
    contact: SipUri  # where calls for the AOR should reach us
    expires: int = DEFAULT_EXPIRES
    username: str | None = None
    password: str | None = None
    # Where the REGISTER goes when not to the registrar URI's own address (outbound proxy).
    destination: Address | None = None


# -- events --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registered:
    name: str
    expires: int
    refresh_at: float


@dataclass(frozen=True, slots=True)
class RegistrationFailed:
    name: str
    status: int | None
    reason: str
    retry_at: float | None  # None: given up until reconfigured


@dataclass(frozen=True, slots=True)
class Unregistered:
    name: str


RegistrationEvent = Registered | RegistrationFailed | Unregistered


@dataclass(frozen=True, slots=True)
class RegistrationStatus:
    """A snapshot for the API; times are on the driver's clock."""

    name: str
    aor: str
    registrar: str
    state: RegistrationState
    expires_at: float | None
    last_status: int | None
    last_error: str | None
    attempts: int  # REGISTER requests sent, challenge answers included
    consecutive_failures: int
    next_attempt_at: float | None


@dataclass(slots=True)
class _AuthCache:
    """The last challenge of one kind, reused with a growing nc (RFC 7616 §3.4)."""

    challenge: Challenge
    nonce_count: int = 0


@dataclass(slots=True)
class _Pending:
    cseq: int
    unregister: bool
    challenges_answered: int
    # Headers that carried credentials in this request: a repeat challenge
    # of that kind without stale=true means they were refused.
    answered_kinds: frozenset[str] = field(default_factory=frozenset)


def _challenge_header(status: int) -> str:
    return "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"


def _authorization_header(challenge_header: str) -> str:
    return "Authorization" if challenge_header == "WWW-Authenticate" else "Proxy-Authorization"


def backoff_delay(consecutive_failures: int, jitter: float) -> float:
    """Seconds to wait after the n-th failure in a row; ``jitter`` in [0, 1)."""
    exponent = max(consecutive_failures - 1, 0)
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * (1 << min(exponent, 16)))
    return ceiling * (BACKOFF_JITTER_FLOOR + (1 - BACKOFF_JITTER_FLOOR) * jitter)


def refresh_delay(granted: int) -> float:
    return max(granted / 2, granted - REFRESH_MARGIN_SECONDS)


def _same_contact(ours: SipUri, theirs: object) -> bool:
    # RFC 3261 §19.1.4, reduced to what a registrar echoes back: user, host, port, scheme.
    return (isinstance(theirs, SipUri) and theirs.scheme == ours.scheme and theirs.user == ours.user
            and theirs.host.lower() == ours.host.lower() and theirs.host_port()[1] == ours.host_port()[1])


class Registration:
    """The client side of one binding: register, answer challenges, refresh, back off, unregister."""

    def __init__(self, binding: Binding, *, call_id: str | None = None, from_tag: str | None = None,
                 jitter: Callable[[], float] = random.random,
                 make_cnonce: Callable[[], str] = lambda: secrets.token_hex(8)) -> None:
        self.binding = binding
        # RFC 3261 §10.2: one Call-ID for every REGISTER of this binding, CSeq growing.
        self.call_id = call_id or f"{secrets.token_hex(12)}@{binding.contact.host}"
        self.from_tag = from_tag or secrets.token_hex(6)
        self.state = RegistrationState.UNREGISTERED
        self.requested_expires = binding.expires
        self._jitter = jitter
        self._make_cnonce = make_cnonce
        self._cseq = 0
        self._pending: _Pending | None = None
        self._next_attempt_at: float | None = None
        self._expires_at: float | None = None
        self._auth: dict[str, _AuthCache] = {}  # challenge header name -> cache
        self._outbox: list[Request] = []
        self._events: deque[RegistrationEvent] = deque()
        self.last_status: int | None = None
        self.last_error: str | None = None
        self.attempts = 0
        self.consecutive_failures = 0

    # -- driver interface -------------------------------------------------------

    def start(self, now: float) -> None:
        """Register now (again, if it had failed or been unregistered)."""
        self.state = RegistrationState.REGISTERING
        self.requested_expires = self.binding.expires
        self.consecutive_failures = 0
        self._pending = None
        self._send_register(now, unregister=False, challenges_answered=0)

    def unregister(self, now: float) -> None:
        """Remove our binding (RFC 3261 §10.2.2: expires=0); no retries afterwards."""
        self._next_attempt_at = None
        bound = self._expires_at is not None and self._expires_at > now
        if self.state in (RegistrationState.UNREGISTERED, RegistrationState.FAILED) or \
                not (bound or self._pending is not None):
            self._finish_unregister()  # nothing bound at the registrar that we know of
            return
        self.state = RegistrationState.UNREGISTERING
        self._send_register(now, unregister=True, challenges_answered=0)

    def next_deadline(self) -> float | None:
        return self._next_attempt_at if self._pending is None else None

    def handle_timer(self, now: float) -> None:
        due = self._next_attempt_at
        if due is None or due > now or self._pending is not None:
            return
        self._next_attempt_at = None
        if self.state is not RegistrationState.REGISTERED:
            self.state = RegistrationState.REGISTERING
        self._send_register(now, unregister=False, challenges_answered=0)

    def requests_to_send(self) -> list[Request]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> RegistrationEvent | None:
        return self._events.popleft() if self._events else None

    def on_response(self, response: Response, now: float) -> None:
        pending = self._pending
        try:
            cseq = response.cseq.number
        except (SipParseError, ValueError):
            return
        if pending is None or cseq != pending.cseq or response.status < 200:
            return  # provisional, or an answer to a request we have since replaced
        self._pending = None
        status = response.status
        self.last_status = status
        if status in (401, 407):
            self._on_challenge(response, pending, now)
        elif pending.unregister:
            self._finish_unregister()  # §10.2.2: whatever the answer, we are done
        elif 200 <= status < 300:
            self._on_registered(response, now)
        elif status == 423:
            self._on_interval_too_brief(response, pending, now)
        else:
            self._fail(now, status, f"{status} {response.reason}".strip(), retry_after=_retry_after(response))

    def on_timeout(self, request: Request, now: float) -> None:
        pending = self._pending
        if pending is None or request.cseq.number != pending.cseq:
            return
        self._pending = None
        self.last_status = TIMEOUT_STATUS
        if pending.unregister:
            self._finish_unregister()
            return
        self._fail(now, TIMEOUT_STATUS, "no response from the registrar")

    def status(self, now: float) -> RegistrationStatus:
        expires_at = self._expires_at if self._expires_at is not None and self._expires_at > now else None
        state = self.state
        if state is RegistrationState.REGISTERED and expires_at is None:
            state = RegistrationState.REGISTERING  # the refresh is still out and the binding lapsed
        return RegistrationStatus(
            name=self.binding.name, aor=str(self.binding.aor), registrar=str(self.binding.registrar),
            state=state, expires_at=expires_at, last_status=self.last_status, last_error=self.last_error,
            attempts=self.attempts, consecutive_failures=self.consecutive_failures,
            next_attempt_at=self._next_attempt_at)

    # -- building requests -----------------------------------------------------------

    def _send_register(self, now: float, *, unregister: bool, challenges_answered: int,
                       answered_kinds: frozenset[str] = frozenset()) -> None:
        """``answered_kinds``: challenge headers answered within this attempt (not preemptively)."""
        self._cseq += 1
        expires = 0 if unregister else self.requested_expires
        binding = self.binding
        request = Request(method="REGISTER", uri=binding.registrar)
        request.headers.add("From", str(NameAddr(binding.aor, params={"tag": self.from_tag})))
        request.headers.add("To", str(NameAddr(binding.aor)))
        request.headers.add("Call-ID", self.call_id)
        request.headers.add("CSeq", f"{self._cseq} REGISTER")
        # §10.2.1.1: the interval both as the Contact parameter and the Expires header.
        request.headers.add("Contact", str(NameAddr(binding.contact, params={"expires": str(expires)})))
        request.headers.add("Expires", str(expires))
        for challenge_header, cache in self._auth.items():
            # §22.3: credentials for later requests reuse the last nonce with the next nc.
            cache.nonce_count += 1
            request.headers.add(_authorization_header(challenge_header), self._authorization(cache, request))
        self._pending = _Pending(self._cseq, unregister, challenges_answered, answered_kinds)
        self.attempts += 1
        self._outbox.append(request)

    def _authorization(self, cache: _AuthCache, request: Request) -> str:
        assert self.binding.username is not None and self.binding.password is not None
        # §22.4: digest-uri is the Request-URI of the request carrying the credentials.
        return build_authorization(cache.challenge, method="REGISTER", uri=str(request.uri),
                                   username=self.binding.username, password=self.binding.password,
                                   cnonce=self._make_cnonce(), nc=cache.nonce_count)

    # -- responses --------------------------------------------------------------------

    def _on_registered(self, response: Response, now: float) -> None:
        granted = self._granted_expires(response)
        if granted <= 0:
            self._fail(now, response.status, "registrar accepted the REGISTER but bound no contact")
            return
        self.state = RegistrationState.REGISTERED
        self.consecutive_failures = 0
        self.last_error = None
        self._expires_at = now + granted
        self._next_attempt_at = now + refresh_delay(granted)
        self._events.append(Registered(self.binding.name, granted, self._next_attempt_at))

    def _granted_expires(self, response: Response) -> int:
        """§10.2.4: our Contact's expires parameter, else the Expires header, else what we asked."""
        try:
            contacts = response.contacts
        except SipParseError:
            contacts = []
        ours = [c for c in contacts if _same_contact(self.binding.contact, c.uri)]
        if not ours and len(contacts) == 1:
            ours = contacts  # a registrar behind NAT may echo our contact rewritten
        for contact in ours:
            value = contact.params.get("expires")
            if value is not None:
                try:
                    return parse_uint(value, "expires", MAX_EXPIRES)
                except SipParseError:
                    break
        try:
            header = response.expires
        except SipParseError:
            header = None
        return header if header is not None else self.requested_expires

    def _on_challenge(self, response: Response, pending: _Pending, now: float) -> None:
        """Retry with credentials once per challenge (RFC 3261 §22.2)."""
        binding = self.binding
        header = _challenge_header(response.status)
        if binding.username is None or binding.password is None:
            self._not_answered(pending, response, now, "the registrar demands credentials and the trunk has none",
                               permanent=True)
            return
        try:
            challenge = choose_challenge(response.headers.get_all(header))
        except DigestError as exc:
            self._not_answered(pending, response, now, f"cannot answer the challenge: {exc}", permanent=True)
            return
        # Challenged again right after answering a challenge: without stale=true
        # (RFC 7616 §3.3) that means the credentials themselves were refused.
        refused = header in pending.answered_kinds and not challenge.stale
        if refused or pending.challenges_answered >= MAX_CHALLENGES_PER_ATTEMPT:
            self._auth.pop(header, None)  # the next attempt starts without this nonce
            self._not_answered(pending, response, now, "credentials rejected" if refused else "too many challenges",
                               permanent=False)
            return
        self._auth[header] = _AuthCache(challenge)
        self._send_register(now, unregister=pending.unregister, challenges_answered=pending.challenges_answered + 1,
                            answered_kinds=pending.answered_kinds | {header})

    def _not_answered(self, pending: _Pending, response: Response, now: float, reason: str, *,
                      permanent: bool) -> None:
        detail = f"{response.status} {response.reason}: {reason}"
        if pending.unregister:
            self._finish_unregister()
        elif permanent:
            self._give_up(response.status, detail)
        else:
            self._fail(now, response.status, detail)

    def _on_interval_too_brief(self, response: Response, pending: _Pending, now: float) -> None:
        # §10.3 / §20.23: retry with an interval of at least Min-Expires.
        raw = response.headers.get("Min-Expires")
        try:
            minimum = parse_uint(raw, "Min-Expires", MAX_EXPIRES) if raw is not None else None
        except SipParseError:
            minimum = None
        if minimum is None or minimum <= self.requested_expires:
            self._fail(now, 423, "423 Interval Too Brief without a usable Min-Expires")
            return
        self.requested_expires = minimum
        self._send_register(now, unregister=False, challenges_answered=pending.challenges_answered,
                            answered_kinds=pending.answered_kinds)

    # -- outcomes --------------------------------------------------------------------

    def _fail(self, now: float, status: int | None, reason: str, *, retry_after: float | None = None) -> None:
        self.consecutive_failures += 1
        self.last_error = reason
        self.state = RegistrationState.BACKOFF
        delay = backoff_delay(self.consecutive_failures, self._jitter())
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
        self._next_attempt_at = now + delay
        self._events.append(RegistrationFailed(self.binding.name, status, reason, self._next_attempt_at))

    def _give_up(self, status: int | None, reason: str) -> None:
        self.consecutive_failures += 1
        self.last_error = reason
        self.state = RegistrationState.FAILED
        self._next_attempt_at = None
        self._expires_at = None
        self._events.append(RegistrationFailed(self.binding.name, status, reason, None))

    def _finish_unregister(self) -> None:
        was_idle = self.state is RegistrationState.UNREGISTERED
        self.state = RegistrationState.UNREGISTERED
        self._pending = None
        self._expires_at = None
        self._next_attempt_at = None
        if not was_idle:
            self._events.append(Unregistered(self.binding.name))


def _retry_after(response: Response) -> float | None:
    # RFC 3261 §20.33: delta-seconds, optionally followed by a comment and params.
    raw = (response.headers.get("Retry-After") or "").split(";")[0].split("(")[0].strip()
    return float(raw) if raw.isdigit() else None


__all__ = [
    "Binding",
    "Registered",
    "Registration",
    "RegistrationEvent",
    "RegistrationFailed",
    "RegistrationState",
    "RegistrationStatus",
    "Unregistered",
    "backoff_delay",
    "refresh_delay",
]
