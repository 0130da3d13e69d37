"""Session timers (RFC 4028): negotiate Session-Expires and decide who refreshes."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SipParseError
from .grammar import parse_params
from .message import Request, Response

# RFC 4028 §4: Min-SE may not be below 90 s; 1800 s is the recommended interval.
MIN_SE_FLOOR = 90
DEFAULT_SESSION_EXPIRES = 1800


@dataclass(slots=True, frozen=True)
class SessionTimer:
    interval: int
    refresher: str  # "uac" or "uas"

    def refresh_after(self) -> float:
        # RFC 4028 §10: the refresher refreshes at half the interval.
        return self.interval / 2

    def expire_after(self) -> float:
        # RFC 4028 §10: the other side gives up at interval − min(32, interval/3).
        return self.interval - min(32, self.interval / 3)


@dataclass(slots=True, frozen=True)
class TooSmall:
    """The offered interval is below our Min-SE: answer 422 (RFC 4028 §8.1)."""

    min_se: int


def parse_session_expires(value: str) -> tuple[int, str | None]:
    head, _, params = value.partition(";")
    head = head.strip()
    if not head.isdigit():
        raise SipParseError(f"bad Session-Expires: {value!r}")
    refresher = parse_params(";" + params if params else "").get("refresher")
    if refresher is not None and refresher.lower() not in ("uac", "uas"):
        raise SipParseError(f"bad refresher: {refresher!r}")
    return int(head), refresher.lower() if refresher else None


def negotiate_uas(request: Request, *, min_se: int = MIN_SE_FLOOR) -> SessionTimer | TooSmall | None:
    """UAS side of RFC 4028 §9: what to put in the 2xx, or a 422."""
    raw = request.headers.get("Session-Expires")
    if raw is None:
        return None
    interval, refresher = parse_session_expires(raw)
    if interval < min_se:
        return TooSmall(min_se)
    if refresher is None:
        # §9: if the UAC supports timers but left the choice to us, we refresh.
        supported = "timer" in request.headers.get_tokens("Supported")
        refresher = "uac" if supported else "uas"
    return SessionTimer(interval, refresher)


def response_headers(timer: SessionTimer, request: Request) -> list[tuple[str, str]]:
    headers = [("Session-Expires", f"{timer.interval};refresher={timer.refresher}")]
    # §9: Require: timer only when the UAC said it supports it.
    if "timer" in request.headers.get_tokens("Supported"):
        headers.append(("Require", "timer"))
    return headers


def negotiate_uac(response: Response) -> SessionTimer | None:
    """UAC side (§7.2): the 2xx tells us the interval and refresher."""
    raw = response.headers.get("Session-Expires")
    if raw is None:
        return None
    interval, refresher = parse_session_expires(raw)
    return SessionTimer(interval, refresher or "uac")
