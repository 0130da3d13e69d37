"""A call: one or more legs, a lifecycle, and the record the API shows."""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from ..media.stream import AudioStream
from ..sip.session import InviteSession


# Why a call ended. "caller_hangup" is the remote party hanging up in either
# direction (on an outbound call: the callee), so one word covers "they left".
# "no_media_ports": refused with 503 because no RTP port pair was free (capacity, not a bug).
END_REASONS = frozenset({"caller_hangup", "agent_hangup", "transfer", "busy", "no_answer", "rejected",
                         "failed", "timeout", "error", "no_media_ports"})

CallObserver = Callable[["Call", str, dict[str, Any]], None]


class Transcript(list):
    """The agent conversation; tells an observer about each new entry as it is appended."""

    def __init__(self, *entries: Any) -> None:
        super().__init__(*entries)
        self.on_append: Callable[[dict[str, Any]], None] | None = None

    def append(self, entry: Any) -> None:
        super().append(entry)
        if self.on_append is not None:
            self.on_append(entry)


class CallStatus(enum.Enum):
    # The same words LiveKit uses for sip.callStatus, so dashboards port over.
    DIALING = "dialing"
    RINGING = "ringing"
    ACTIVE = "active"
    HANGUP = "hangup"


@dataclass(eq=False)
class Leg:
    """One SIP dialog of a call, with its media stream."""

    session: InviteSession
    stream: AudioStream | None = None
    # Outbound legs hold their RTP port and SDP offer until the answer arrives.
    pending_socket: Any = None
    offer: Any = None  # our latest SDP offer (initial INVITE or a hold/resume re-INVITE)
    sdp_session_id: int | None = None  # o= session id, kept across re-offers (RFC 3264 §8)

    @property
    def sip_call_id(self) -> str:
        return self.session.call_id


@dataclass(eq=False)
class Call:
    direction: str  # "inbound" | "outbound"
    leg: Leg
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: CallStatus = CallStatus.RINGING
    end_reason: str | None = None
    caller: str | None = None
    caller_name: str | None = None
    called: str | None = None
    trunk: str | None = None
    sip_headers: dict[str, str] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    ended_at: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    dtmf: list[dict[str, Any]] = field(default_factory=list)  # each key press once, in order
    recording: str | None = None
    route: str | None = None  # the flow that answers this call
    ivr: list[dict[str, Any]] = field(default_factory=list)  # the IVR path: nodes, prompts, digits, choices
    handoff: dict[str, Any] | None = None  # the context handed to the voice agent
    transcript: Transcript = field(default_factory=Transcript)  # agent conversation: turns, tools, latency
    app_task: Any = None  # the asyncio task running this call's application
    dispatch: dict[str, Any] | None = None  # an API-dispatched call: agent, room, identity, metadata
    observer: CallObserver | None = None  # told about every event (persisted, then published)

    @property
    def sip_call_id(self) -> str:
        return self.leg.sip_call_id

    def log_event(self, kind: str, **data: Any) -> None:
        entry = {"at": time.time(), "type": kind, **data}
        self.events.append(entry)
        if self.observer is not None:
            self.observer(self, kind, entry)

    def add_dtmf(self, digit: str, source: str, duration_ms: float | None = None) -> None:
        entry = {"digit": digit, "source": source, "at": time.time()}
        if duration_ms is not None:
            entry["duration_ms"] = round(duration_ms, 1)
        self.dtmf.append(entry)
        self.log_event("dtmf", digit=digit, source=source)

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "direction": self.direction,
            "sip_call_id": self.sip_call_id,
            "status": self.status.value,
            "end_reason": self.end_reason,
            "caller": self.caller,
            "caller_name": self.caller_name,
            "called": self.called,
            "trunk": self.trunk,
            "sip_headers": self.sip_headers,
            "created_at": self.created_at,
            "answered_at": self.answered_at,
            "ended_at": self.ended_at,
            "events": self.events,
            "dtmf": self.dtmf,
            "recording": self.recording,
            "route": self.route,
            "ivr": self.ivr,
            "handoff": self.handoff,
            "transcript": list(self.transcript),
            "dispatch": self.dispatch,
            "recording_url": f"/api/calls/{self.id}/recording" if self.recording else None,
            "duration_s": _duration(self.created_at, self.ended_at),
            "talk_s": _duration(self.answered_at, self.ended_at),
            "media": None if self.leg.stream is None else self.leg.stream.media_record(),
        }


def _duration(start: float | None, end: float | None) -> float | None:
    return round(end - start, 3) if start is not None and end is not None else None
