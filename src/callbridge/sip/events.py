"""What the UA core tells its owner: session events (each names its session) and registration events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .message import Request, Response
from .registration import RegistrationEvent
from .uri import NameAddr

if TYPE_CHECKING:
    from .session import InviteSession


@dataclass(slots=True)
class IncomingCall:
    """A new INVITE passed every check; answer with ring/answer/reject."""

    session: "InviteSession"
    request: Request


@dataclass(slots=True)
class CallConfirmed:
    """The ACK for our 2xx arrived (RFC 3261 §13.3.1.4): the call is up both ways."""

    session: "InviteSession"


@dataclass(slots=True)
class CallProgress:
    """An outgoing call got a provisional (180 ringing, 183 early media)."""

    session: "InviteSession"
    response: Response


@dataclass(slots=True)
class CallAnswered:
    session: "InviteSession"
    response: Response


@dataclass(slots=True)
class CallFailed:
    """An outgoing INVITE ended without a 2xx (status 408 when nothing answered)."""

    session: "InviteSession"
    status: int
    reason: str


@dataclass(slots=True)
class CallCancelled:
    session: "InviteSession"


@dataclass(slots=True)
class CallEnded:
    """The dialog is over. ``reason``: remote_bye, local_bye, no_ack, session_expired, timeout."""

    session: "InviteSession"
    reason: str


@dataclass(slots=True)
class OfferReceived:
    """A re-INVITE or UPDATE (RFC 3311) carried an SDP offer; reply with accept_offer/reject_offer."""

    session: "InviteSession"
    method: str
    sdp: bytes


@dataclass(slots=True)
class AnswerReceived:
    """Our re-INVITE (hold/resume) was answered with this SDP."""

    session: "InviteSession"
    sdp: bytes


@dataclass(slots=True)
class DtmfInfoReceived:
    session: "InviteSession"
    digit: str
    duration_ms: int


@dataclass(slots=True)
class ReferReceived:
    """The peer asks us to transfer (RFC 3515); report progress with notify_refer."""

    session: "InviteSession"
    refer_to: NameAddr
    referred_by: str | None


@dataclass(slots=True)
class ReferProgress:
    """NOTIFY about a REFER we sent. ``final`` when the subscription terminated."""

    session: "InviteSession"
    status: int
    final: bool


@dataclass(slots=True)
class ReferAccepted:
    """The transferee took our REFER (202, RFC 3515 §2.4.2); NOTIFYs will follow."""

    session: "InviteSession"
    status: int


@dataclass(slots=True)
class ReferFailed:
    session: "InviteSession"
    status: int


@dataclass(slots=True)
class AuthFailed:
    """An inbound request was rejected for bad credentials (logged by the app)."""

    request: Request
    username: str | None
    reason: str


SessionEvent = (
    IncomingCall | CallConfirmed | CallProgress | CallAnswered | CallFailed | CallCancelled | CallEnded
    | OfferReceived | AnswerReceived | DtmfInfoReceived | ReferReceived | ReferAccepted | ReferProgress | ReferFailed
    | AuthFailed
)
# Everything UserAgent.next_event() hands out: session events, and the status changes of the
# outbound registrations it keeps (Registered, RegistrationFailed, Unregistered; sip/registration.py).
UaEvent = SessionEvent | RegistrationEvent
