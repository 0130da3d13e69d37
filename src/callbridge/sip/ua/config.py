"""The UA core's settings and the capabilities it advertises (RFC 3261 §20.5, §20.37)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..guard import GuardPolicy
from ..ratelimit import NEW_REQUESTS_BURST, NEW_REQUESTS_PER_SOURCE
from ..session_timer import DEFAULT_SESSION_EXPIRES, MIN_SE_FLOOR
from ..source_header import DEFAULT_SOURCE_HEADER

ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "REFER", "NOTIFY", "UPDATE", "PRACK")
SUPPORTED_OPTIONS = frozenset({"100rel", "timer", "norefersub"})
ACCEPTED_TYPES = "application/sdp, application/dtmf-relay, application/dtmf, message/sipfrag"
# Our product token in User-Agent (requests) and Server (responses). RFC 3261 §20.35/§20.41:
# a version helps attackers pick known holes, so it SHOULD be configurable; ours has none by default.
DEFAULT_PRODUCT = "callbridge"
# Live server transactions beyond which new requests get 503 (RFC 3261 §21.5.4). Each one lives
# ~32 s (Timer H/J = 64·T1), so 20,000 is ~600 new requests/s sustained: twice what one process
# sets up (docs/BENCHMARKS.md), and ~40 MB of requests held at most.
MAX_SERVER_TRANSACTIONS = 20_000


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Why this server takes no new calls now ("full", "draining", "starting"), and when to ask again."""

    reason: str
    retry_after: int  # seconds, for Retry-After (RFC 3261 §20.33)


# Asked at request time for each new INVITE and out-of-dialog OPTIONS: None admits.
Availability = Callable[[], "Unavailable | None"]


def always_available() -> Unavailable | None:
    return None


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
    # Proxies (CIDRs) whose ``source_header`` names the caller (sip/source_header.py).
    trusted_proxies: tuple[str, ...] = ()
    source_header: str = DEFAULT_SOURCE_HEADER
    # Whether new calls are admitted; the application's single answer for INVITE and OPTIONS alike.
    availability: Availability = always_available
