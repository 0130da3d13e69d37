"""One INVITE dialog usage: the signalling half of a call leg."""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import Any

from .dialog import Dialog
from .message import Request, Response
from .session_timer import SessionTimer
from .transaction import ClientTransaction, ServerTransaction

_ids = itertools.count(1)


class SessionState(enum.Enum):
    INCOMING = "incoming"  # INVITE received, no final response yet
    CALLING = "calling"  # INVITE sent, nothing back yet
    EARLY = "early"  # provisional with a to-tag seen/sent
    ANSWERED = "answered"  # 2xx sent, waiting for the ACK
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(slots=True)
class ReliableProvisional:
    """A 1xx sent with 100rel, retransmitted until PRACKed (RFC 3262 §3)."""

    response: Response
    rseq: int
    interval: float
    next_send: float
    give_up_at: float


@dataclass(eq=False, slots=True)
class InviteSession:
    direction: str  # "inbound" or "outbound"
    invite: Request
    state: SessionState
    id: int = field(default_factory=lambda: next(_ids))
    dialog: Dialog | None = None
    server_tx: ServerTransaction | None = None
    client_tx: ClientTransaction | None = None
    source: Any = None  # where the INVITE came from (inbound)
    destination: Any = None  # where we sent the INVITE (outbound)
    local_sdp: bytes | None = None
    remote_sdp: bytes | None = None
    timer: SessionTimer | None = None
    we_refresh: bool = False
    refresh_due: float | None = None
    expires_at: float | None = None
    rseq: int = 0
    pending_prack: ReliableProvisional | None = None
    pending_offer_tx: ServerTransaction | None = None  # re-INVITE/UPDATE awaiting our answer
    pending_reinvite: ClientTransaction | None = None
    ack_wire: bytes | None = None  # the ACK we sent for the 2xx, resent on 2xx retransmits
    cancel_requested: bool = False
    credentials: tuple[str, str] | None = None
    auth_attempts: int = 0
    refer_tx: ClientTransaction | None = None
    incoming_refer_active: bool = False
    end_reason: str | None = None
    app: Any = None  # owner's handle (the call layer's Call)

    @property
    def call_id(self) -> str:
        return self.invite.call_id

    @property
    def is_active(self) -> bool:
        return self.state is not SessionState.TERMINATED

    def __repr__(self) -> str:
        return f"<InviteSession #{self.id} {self.direction} {self.state.value} {self.call_id}>"
