"""A call: one or more legs, a lifecycle, and the event stream that records it.

Every change goes through :meth:`Call.publish`: the event is folded into the
call's state (status, DTMF, IVR path, transcript, ...) and then handed, in
order, to the consumers the call manager attached. Code that needs to know
when something happens awaits it (:meth:`Call.wait_for`, :meth:`Call.answered`,
:meth:`Call.ended`); nothing polls.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from ..media.stream import AudioStream
from ..sip.session import InviteSession
from . import events as ev
from .events import CallStatus, Direction, EndReason
from .webrtc.leg import WebRtcLeg

if TYPE_CHECKING:
    from .manager import CallManager

log = logging.getLogger("callbridge.call")

__all__ = ["Call", "CallLeg", "CallStatus", "Direction", "EndReason", "EventConsumer", "Leg", "WebRtcLeg"]

E = TypeVar("E", bound=ev.CallEvent)


class EventConsumer(Protocol):
    """Sees every event of every call, in order, synchronously: it must not block (queue, then work)."""

    def __call__(self, call: "Call", published: ev.Published) -> None: ...


@dataclass(eq=False)
class Leg:
    """One SIP dialog of a call, with its media stream.

    A call's leg is this or a :class:`~callbridge.call.webrtc.leg.WebRtcLeg` (a browser); both offer
    ``source``, ``sip_call_id``, ``stream``, ``awaiting_ack``, ``end`` and ``release``, and SIP-only
    work (re-INVITE, REFER) asks ``leg.sip()``, which refuses a browser leg with ValueError.
    """

    source: ClassVar[str] = "sip"
    session: InviteSession
    stream: AudioStream | None = None
    # Outbound legs hold their RTP port and SDP offer until the answer arrives.
    pending_socket: Any = None
    offer: Any = None  # our latest SDP offer (initial INVITE or a hold/resume re-INVITE)
    sdp_session_id: int | None = None  # o= session id, kept across re-offers (RFC 3264 §8)

    @property
    def sip_call_id(self) -> str:
        return self.session.call_id

    @property
    def awaiting_ack(self) -> bool:
        """An answered INVITE whose ACK has not come: no media may go out yet (reflection)."""
        dialog = self.session.dialog
        return dialog is not None and not dialog.confirmed

    def sip(self) -> Leg:
        return self

    def end(self, manager: CallManager) -> None:
        """Our side leaves: BYE (RFC 3261 §15)."""
        manager.act(lambda now: manager.ua.bye(self.session, now))

    def release(self) -> None:
        """The call is over: an outbound leg's RTP port waiting for an answer goes back."""
        if self.pending_socket is not None:
            self.pending_socket.close()
            self.pending_socket = None


CallLeg = Leg | WebRtcLeg


@dataclass(eq=False)
class Call:
    direction: Direction
    leg: CallLeg
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    caller: str | None = None
    caller_name: str | None = None
    called: str | None = None
    trunk: str | None = None
    sip_headers: dict[str, str] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    dispatch: dict[str, Any] | None = None  # an API-dispatched call: agent, room, identity, metadata
    worker: str | None = None  # the cluster worker running the call (app/cluster/); stamped at register
    app_task: Any = None  # the asyncio task running this call's application
    # -- the fold of the events (read these; change them only by publishing) --
    status: CallStatus = CallStatus.RINGING
    end_reason: EndReason | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    route: str | None = None  # the flow that answers this call
    recording: str | None = None
    handoff: dict[str, Any] | None = None  # the context handed to the voice agent
    history: list[ev.Published] = field(default_factory=list)
    dtmf: list[dict[str, Any]] = field(default_factory=list)  # each key press once, in order
    ivr: list[dict[str, Any]] = field(default_factory=list)  # the IVR path: nodes, prompts, digits, choices
    transcript: list[dict[str, Any]] = field(default_factory=list)  # turns, tools, latency, renewals
    consumers: list[EventConsumer] = field(default_factory=list)
    _waiters: list[tuple[Callable[[ev.CallEvent], bool], asyncio.Future[ev.CallEvent]]] = field(
        default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.direction = Direction(self.direction)

    @property
    def sip_call_id(self) -> str:
        return self.leg.sip_call_id

    # -- publishing -------------------------------------------------------------------------------

    def publish(self, event: ev.CallEvent) -> ev.Published:
        """Append ``event`` to this call's stream: fold it in, then tell consumers and waiters."""
        published = ev.Published(self.id, len(self.history) + 1, time.time(), event)
        self.history.append(published)
        self._fold(published)
        for consumer in self.consumers:
            try:
                consumer(self, published)
            except Exception:  # noqa: BLE001 - a consumer's bug must not break the call
                log.exception("call event consumer failed on %s", self.id)
        if self._waiters:
            self._wake(event)
        return published

    def _wake(self, event: ev.CallEvent) -> None:
        still_waiting = []
        for wanted, future in self._waiters:
            if future.done():
                continue
            if wanted(event):
                future.set_result(event)
            else:
                still_waiting.append((wanted, future))
        self._waiters = still_waiting

    # -- waiting ------------------------------------------------------------------------------------

    async def wait_for(self, wanted: Callable[[ev.CallEvent], bool], timeout: float | None = None) -> ev.CallEvent:
        """The next event ``wanted`` accepts; TimeoutError after ``timeout`` seconds."""
        future: asyncio.Future[ev.CallEvent] = asyncio.get_running_loop().create_future()
        self._waiters.append((wanted, future))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            future.cancel()  # a timed-out or cancelled waiter is dropped at the next event

    async def answered(self, timeout: float | None = None) -> bool:
        """True once the call was answered; False when it ended first or ``timeout`` passed."""
        if self.answered_at is not None:
            return True
        if self.status is CallStatus.HANGUP:
            return False
        try:
            event = await self.wait_for(_is_status_in(CallStatus.ACTIVE, CallStatus.HANGUP), timeout)
        except TimeoutError:
            return False
        return isinstance(event, ev.StatusChanged) and event.status is CallStatus.ACTIVE

    async def ended(self, timeout: float | None = None) -> bool:
        """True once the call is over; False if ``timeout`` passed first."""
        if self.status is CallStatus.HANGUP:
            return True
        try:
            await self.wait_for(_is_status_in(CallStatus.HANGUP), timeout)
        except TimeoutError:
            return False
        return True

    def events_of(self, kind: type[E]) -> list[E]:
        return [p.event for p in self.history if isinstance(p.event, kind)]

    # -- the fold -----------------------------------------------------------------------------------

    def _fold(self, published: ev.Published) -> None:
        event, at = published.event, published.at
        match event:
            case ev.StatusChanged(status=status, end_reason=reason):
                self.status = status
                if status is CallStatus.ACTIVE and self.answered_at is None:
                    self.answered_at = at
                if status is CallStatus.HANGUP:
                    self.end_reason, self.ended_at = reason, at
            case ev.RouteChosen(route=route):
                self.route = route
            case ev.DtmfReceived():
                self.dtmf.append({"at": at, **event.data()})
            case ev.IvrStep():
                self.ivr.append({"at": round(at, 3), "type": event.kind, **event.details})
            case ev.HandedOff():
                self.handoff = {"agent": event.agent, **event.context}
            case ev.RecordingStarted(path=path) | ev.RecordingReady(path=path):
                self.recording = path
            case ev.TurnAdded():
                self.transcript.append({"at": round(at, 3), **event.data()})
            case ev.ToolCalled():
                self.transcript.append({"at": round(at, 3), "role": "tool", "turn": event.turn, "name": event.name,
                                        "arguments": ev.to_json_value(event.arguments), "ok": None})
            case ev.SessionRenewed():
                self.transcript.append({"at": round(at, 3), "role": "renewal", **event.data()})
            case ev.TurnUpdated():
                self._turn(event.turn).update(event.changes)
            case ev.ToolResult():
                self._turn(event.turn).update(ok=event.ok, duration_ms=event.duration_ms,
                                              **({"result": ev.to_json_value(event.result)} if event.ok
                                                 else {"error": event.error}))
            case ev.BargeIn():
                self._turn(event.turn).update(planned=event.planned, text=event.heard, interrupted=True,
                                              heard_s=event.heard_s)
            case ev.TurnLatency():
                data = event.data()
                del data["turn"]
                self._turn(event.turn)["latency_ms"] = data
            case _:
                pass

    def _turn(self, index: int) -> dict[str, Any]:
        if 0 <= index < len(self.transcript):
            return self.transcript[index]
        return {}  # an update for a turn this call never had: nothing to change

    # -- the record ---------------------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        """What the API shows and the store keeps: a snapshot (copies, never live state)."""
        return {
            "id": self.id,
            "direction": self.direction.value,
            "sip_call_id": self.sip_call_id,
            "source": self.leg.source,  # "sip" or "webrtc" (a browser softphone)
            "status": self.status.value,
            "end_reason": None if self.end_reason is None else self.end_reason.value,
            "caller": self.caller,
            "caller_name": self.caller_name,
            "called": self.called,
            "trunk": self.trunk,
            "sip_headers": dict(self.sip_headers),
            "created_at": self.created_at,
            "answered_at": self.answered_at,
            "ended_at": self.ended_at,
            "events": [p.to_entry() for p in self.history],
            "dtmf": [dict(d) for d in self.dtmf],
            "recording": self.recording,
            "route": self.route,
            "ivr": [dict(step) for step in self.ivr],
            "handoff": None if self.handoff is None else dict(self.handoff),
            "transcript": [dict(turn) for turn in self.transcript],
            "dispatch": self.dispatch,
            "worker": self.worker,
            "recording_url": f"/api/calls/{self.id}/recording" if self.recording else None,
            "duration_s": _duration(self.created_at, self.ended_at),
            "talk_s": _duration(self.answered_at, self.ended_at),
            "media": None if self.leg.stream is None else self.leg.stream.media_record(),
        }


def _is_status_in(*statuses: CallStatus) -> Callable[[ev.CallEvent], bool]:
    return lambda event: isinstance(event, ev.StatusChanged) and event.status in statuses


def _duration(start: float | None, end: float | None) -> float | None:
    return round(end - start, 3) if start is not None and end is not None else None
