"""Every change to a call, as one typed, immutable event.

A call's history is the ordered list of these events; its record (what the
API shows) is their fold (``call/record.py``). Consumers (the journal, SSE,
webhooks, metrics, later Redis) see the same events in the same order, and
nothing changes after it was published: an update is an event of its own
(``TurnUpdated``, ``ToolResult``, ``BargeIn``, ``TurnLatency``), never an edit
of something already sent.

Each event's ``TYPE`` is the word clients see (``event:`` on ``/api/events``,
``type`` in the stored events); the words predate the classes and are kept.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, ClassVar


class CallStatus(enum.StrEnum):
    # The same words LiveKit uses for sip.callStatus, so dashboards port over.
    DIALING = "dialing"
    RINGING = "ringing"
    ACTIVE = "active"
    HANGUP = "hangup"


class EndReason(enum.StrEnum):
    """Why a call ended. CALLER_HANGUP is the remote party leaving in either direction
    (on an outbound call: the callee), so one word covers "they left"."""

    CALLER_HANGUP = "caller_hangup"
    AGENT_HANGUP = "agent_hangup"
    TRANSFER = "transfer"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    REJECTED = "rejected"
    FAILED = "failed"
    TIMEOUT = "timeout"
    ERROR = "error"
    NO_MEDIA_PORTS = "no_media_ports"  # refused with 503: no RTP port pair was free (capacity, not a bug)
    # The cluster worker running the call died (app/cluster/reaper.py): ended at its last heartbeat.
    WORKER_LOST = "worker_lost"
    # A draining worker (app/drain.py) ended the call with BYE: at server.drain_deadline_s, or
    # at once on a second SIGTERM/SIGINT.
    DRAIN_DEADLINE = "drain_deadline"
    # The far end sent no RTP for media.media_timeout_s (call/media_watchdog.py): gone without a BYE.
    MEDIA_TIMEOUT = "media_timeout"
    SHUTDOWN = "shutdown"


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


def frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only copy: what was published cannot be changed through a kept reference."""
    return MappingProxyType(dict(value or {}))


def to_json_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEvent:
    TYPE: ClassVar[str] = "event"
    # Fields whose (mapping) contents are flattened into the event's data instead of nested.
    FLATTEN: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        # A deep copy behind a read-only view: the publisher's dict may change later; the event must not.
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                object.__setattr__(self, f.name, frozen_mapping(to_json_value(value)))

    def data(self) -> dict[str, Any]:
        """The JSON payload clients see (a fresh copy); ``None`` fields are left out."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self.FLATTEN:
                out.update(to_json_value(value))
            elif value is not None:
                out[f.name] = to_json_value(value)
        return out


# -- lifecycle ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChanged(CallEvent):
    TYPE: ClassVar[str] = "status"
    status: CallStatus
    end_reason: EndReason | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded(CallEvent):
    """The last event of every call, after its final status: the record is complete."""

    TYPE: ClassVar[str] = "ended"
    reason: EndReason
    duration_s: float | None = None
    talk_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EndDetail(CallEvent):
    """Our own word for an end ("menu_exhausted", "flow_loop"), behind the coarse EndReason."""

    TYPE: ClassVar[str] = "end_detail"
    detail: str


# -- signalling ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class InviteSent(CallEvent):
    TYPE: ClassVar[str] = "invite"
    target: str
    destination: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InviteReceived(CallEvent):
    TYPE: ClassVar[str] = "invite"
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AckReceived(CallEvent):
    TYPE: ClassVar[str] = "ack"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected(CallEvent):
    TYPE: ClassVar[str] = "rejected"
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reoffered(CallEvent):
    """The peer re-offered media (re-INVITE or UPDATE) and we answered."""

    TYPE: ClassVar[str] = "reoffer"
    method: str
    direction: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reanswered(CallEvent):
    """The peer answered our re-offer."""

    TYPE: ClassVar[str] = "reanswer"
    direction: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DailyCapReached(CallEvent):
    TYPE: ClassVar[str] = "daily_cap_reached"
    scope: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RingingTimedOut(CallEvent):
    TYPE: ClassVar[str] = "ringing_timeout"
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MaxDurationReached(CallEvent):
    TYPE: ClassVar[str] = "max_duration_reached"


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaTimedOut(CallEvent):
    TYPE: ClassVar[str] = "media_timeout"
    silent_s: float  # how long the far end had sent no RTP


# -- keys ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class DtmfReceived(CallEvent):
    TYPE: ClassVar[str] = "dtmf"
    digit: str
    source: str  # "rfc4733" | "info" | "inband"
    duration_ms: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DtmfSent(CallEvent):
    TYPE: ClassVar[str] = "dtmf_sent"
    digits: str
    method: str  # "rfc4733" | "inband"


# -- hold and transfer --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class HoldStarted(CallEvent):
    TYPE: ClassVar[str] = "hold"
    direction: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldEnded(CallEvent):
    TYPE: ClassVar[str] = "unhold"
    direction: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRequested(CallEvent):
    """We asked the peer to transfer the caller (REFER, RFC 3515)."""

    TYPE: ClassVar[str] = "transfer"
    target: str
    method: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferAccepted(CallEvent):
    TYPE: ClassVar[str] = "refer_accepted"
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferFailed(CallEvent):
    TYPE: ClassVar[str] = "refer_failed"
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferProgress(CallEvent):
    """A NOTIFY about the transferee's new call (RFC 3515 §2.4.5)."""

    TYPE: ClassVar[str] = "refer_progress"
    status: int
    final: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferReceived(CallEvent):
    TYPE: ClassVar[str] = "refer_received"
    target: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferDenied(CallEvent):
    TYPE: ClassVar[str] = "refer_denied"
    reason: str
    target: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Bridged(CallEvent):
    TYPE: ClassVar[str] = "bridged"
    target: str
    other_call: str


# -- application ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class RouteChosen(CallEvent):
    TYPE: ClassVar[str] = "route"
    route: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Played(CallEvent):
    TYPE: ClassVar[str] = "play"
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IvrStep(CallEvent):
    """One entry of the IVR path: a node entered, a prompt played, digits or speech heard, a choice."""

    TYPE: ClassVar[str] = "ivr"
    FLATTEN: ClassVar[tuple[str, ...]] = ("details",)
    kind: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class HandedOff(CallEvent):
    """The IVR handed the call to a voice agent, with this context (caller, choices, X-headers)."""

    TYPE: ClassVar[str] = "handoff"
    agent: str
    context: Mapping[str, Any] = field(default_factory=dict)


# -- the agent conversation ------------------------------------------------------------------------
# ``turn`` is the entry's index in the call's transcript: updates name the turn they change.

@dataclass(frozen=True, slots=True, kw_only=True)
class TurnAdded(CallEvent):
    """A transcript entry: a user or agent turn, or a note (dtmf, error, usage, fallback)."""

    TYPE: ClassVar[str] = "transcript"
    FLATTEN: ClassVar[tuple[str, ...]] = ("details",)
    turn: int
    role: str
    text: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnUpdated(CallEvent):
    """More of a turn: the provider's next final sentence, or a mark such as ``cut_by_error``."""

    TYPE: ClassVar[str] = "turn_updated"
    FLATTEN: ClassVar[tuple[str, ...]] = ("changes",)
    turn: int
    changes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCalled(CallEvent):
    TYPE: ClassVar[str] = "tool_call"
    turn: int
    name: str
    # a mapping, or the model's JSON text exactly as it produced it (what the record has always shown)
    arguments: Mapping[str, Any] | str = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult(CallEvent):
    TYPE: ClassVar[str] = "tool_result"
    turn: int
    name: str
    ok: bool
    duration_ms: float
    result: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BargeIn(CallEvent):
    """The caller talked over the agent: its turn was cut where the caller stopped hearing it."""

    TYPE: ClassVar[str] = "barge_in"
    turn: int
    planned: str
    heard: str
    heard_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnLatency(CallEvent):
    """From the caller's end of speech to the agent's first packet on the wire, by stage (ms)."""

    TYPE: ClassVar[str] = "latency"
    turn: int
    vad: int
    stt: int
    brain: int
    tts_first_audio: int
    total: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRenewed(CallEvent):
    """The agent moved to a new provider session (scheduled, forced, expired or recovered)."""

    TYPE: ClassVar[str] = "renewal"
    turn: int
    session: int
    reason: str
    prepare_ms: float
    handover_ms: float
    replayed_ms: float


# -- media -------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class MediaStats(CallEvent):
    """The call's RTP and jitter-buffer counters, as the media stream closed."""

    TYPE: ClassVar[str] = "media"
    FLATTEN: ClassVar[tuple[str, ...]] = ("stats",)
    stats: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingStarted(CallEvent):
    """Recording began (at the call's confirmation); the file grows until RecordingReady."""

    TYPE: ClassVar[str] = "recording_started"
    path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingReady(CallEvent):
    """The recording is closed: its header is final and it can be downloaded whole."""

    TYPE: ClassVar[str] = "recording"
    path: str
    url: str


@dataclass(frozen=True, slots=True)
class Published:
    """An event as appended to one call's stream: numbered from 1, stamped with wall time."""

    call_id: str
    seq: int
    at: float
    event: CallEvent

    @property
    def type(self) -> str:
        return self.event.TYPE

    def data(self) -> dict[str, Any]:
        return self.event.data()

    def to_entry(self) -> dict[str, Any]:
        """The shape of a record's ``events`` list (and of the stored events)."""
        return {"at": self.at, "type": self.type, **self.data()}
