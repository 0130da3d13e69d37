"""Turns SIP session events into calls, and runs each answered call's application.

The manager owns the mapping session → :class:`Call` and each call's
lifecycle (status, hang-up, end reason). The work on the way is done by one
module per concern: ``inbound.py`` answers, ``outbound.py`` dials,
``transfer.py`` handles REFER both ways, ``media_setup.py`` owns ports,
streams, recording and re-offers. Every change is published on the call's
event stream (``call/events.py``), which the consumers added here see first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from ..media.dtmf import DtmfEvent
from ..media.pacer import MediaPacer
from ..rtp.ports import PortAllocator
from ..sip import events as sip_events
from ..sip.address import Address
from ..sip.endpoint import SipEndpoint
from . import events as ev
from .call import Call, CallStatus, EndReason, EventConsumer
from .dial_policy import DialPolicy
from .inbound import NO_MEDIA_PORTS_RETRY_AFTER_S, InboundCalls
from .media_setup import CallMedia, MediaPolicy, NoMediaPortsError
from .outbound import OutboundCalls
from .transfer import Transfers
from .trunks import TrunkTable

__all__ = ["NO_MEDIA_PORTS_RETRY_AFTER_S", "CallApp", "CallManager", "MediaPolicy", "NoMediaPortsError"]

log = logging.getLogger("callbridge.call")

# Words other layers use for an end, mapped onto the lifecycle's end reasons.
LEGACY_END_REASONS = {"flow_ended": EndReason.AGENT_HANGUP, "bridge_ended": EndReason.TRANSFER,
                      "local_bye": EndReason.AGENT_HANGUP, "remote_bye": EndReason.CALLER_HANGUP}
# Our own hangups that mean something went wrong, not that the conversation was over.
LOCAL_FAILURE_DETAILS = frozenset({"flow_loop", "transfer_failed"})
# The UA core's own reasons for a dialog that died without a BYE from anyone.
DIALOG_LOST_REASONS = {"no_ack": EndReason.FAILED, "timeout": EndReason.FAILED,
                       "session_expired": EndReason.TIMEOUT}


END_WORDS = frozenset(reason.value for reason in EndReason)


class CallApp(Protocol):
    async def run(self, call: Call, manager: "CallManager") -> None: ...


class CallManager:
    def __init__(self, endpoint: SipEndpoint, *, media_host: str, ports: PortAllocator, pacer: MediaPacer,
                 trunks: TrunkTable, media: MediaPolicy, app: CallApp | None = None,
                 ring_seconds: float = 0.0) -> None:
        self.endpoint = endpoint
        self.ua = endpoint.ua
        self.trunks = trunks
        self.app = app
        # Picks the application route (a flow name) for an inbound call before it
        # is answered; None from it rejects the call with 404 (number not in service).
        self.router: Callable[[Call], str | None] | None = None
        self.calls: dict[str, Call] = {}
        # This process's name in a cluster (app/cluster/), stamped on every call it registers; None alone.
        self.worker_id: str | None = None
        # See every event of every call, in order (the journal, metrics, a client's display).
        self.consumers: list[EventConsumer] = []
        self.media = CallMedia(media_host=media_host, ports=ports, pacer=pacer, policy=media)
        self.inbound = InboundCalls(self)
        self.inbound.ring_seconds = ring_seconds
        self.outbound = OutboundCalls(self)
        self.transfers = Transfers(self)
        self._tasks: set[asyncio.Task] = set()
        self.ua.inbound_auth = trunks.auth_policy
        self.ua.rate_exempt = trunks.carrier_source
        self.ua.refer_policy = self.transfers.policy

    # -- plumbing ------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call task %s failed", task.get_name(), exc_info=task.exception())

    def now(self) -> float:
        return self.endpoint.now()

    def act(self, action: Callable[[float], None]) -> None:
        """Run one UA-core action at the current time and push its output out."""
        action(self.now())
        self.endpoint.flush()

    def register(self, call: Call) -> None:
        call.worker = self.worker_id
        call.consumers[:0] = self.consumers
        self.calls[call.id] = call

    def forget(self, call: Call) -> None:
        """Drop a finished call from memory (its record lives on in the store)."""
        if call.status is CallStatus.HANGUP:
            self.calls.pop(call.id, None)
            self.transfers.forget(call)

    @property
    def task_count(self) -> int:
        return len(self._tasks)

    @property
    def active_calls(self) -> list[Call]:
        return [c for c in self.calls.values() if c.status is not CallStatus.HANGUP]

    def set_status(self, call: Call, status: CallStatus, end_reason: EndReason | None = None) -> None:
        call.publish(ev.StatusChanged(status=status, end_reason=end_reason))

    # -- what the rest of the service asks for ----------------------------------------------------

    @property
    def dial_policy(self) -> DialPolicy | None:
        return self.outbound.policy

    async def dial(self, target: str, *, from_user: str | None = None, headers: list[tuple[str, str]] | None = None,
                   credentials: tuple[str, str] | None = None, destination: Address | None = None,
                   trunk: str | None = None, prepare: Callable[[Call], None] | None = None) -> Call:
        return await self.outbound.dial(target, from_user=from_user, headers=headers, credentials=credentials,
                                        destination=destination, trunk=trunk, prepare=prepare)

    def transfer(self, call: Call, target: str) -> None:
        self.transfers.transfer(call, target)

    def hold(self, call: Call) -> None:
        """Put the caller on hold: music now, and a sendonly re-offer (RFC 3264 §8.4)."""
        self._reoffer(call, "local", "sendonly")

    def unhold(self, call: Call) -> None:
        self._reoffer(call, None, "sendrecv")

    def _reoffer(self, call: Call, hold: str | None, direction: str) -> None:
        if call.status is not CallStatus.ACTIVE:
            raise ValueError("the call has no active media")
        session = call.leg.sip().session  # a browser call: ValueError (NotSipError)
        offer = self.media.reoffer(call, hold, direction)
        self.act(lambda now: self.ua.reinvite(session, offer, now))

    # -- SIP events ---------------------------------------------------------------------

    def on_sip_event(self, event: sip_events.SessionEvent) -> None:
        if isinstance(event, sip_events.IncomingCall):
            self.spawn(self.inbound.accept(event.session), f"inbound-{event.session.call_id}")
            return
        if isinstance(event, sip_events.AuthFailed):
            return  # no session: logged by the user agent
        call: Call | None = getattr(event.session, "app", None)
        if call is None:
            return
        if isinstance(event, sip_events.CallConfirmed):
            self._confirmed(call)
        elif isinstance(event, (sip_events.CallEnded, sip_events.CallCancelled)):
            # The remote party leaving is "caller_hangup" in both directions (see EndReason).
            if isinstance(event, sip_events.CallCancelled) or event.reason == "remote_bye":
                self.finish(call, EndReason.CALLER_HANGUP)
            else:
                self.finish(call, DIALOG_LOST_REASONS.get(event.reason, event.reason))
        elif isinstance(event, sip_events.CallFailed):
            self.finish(call, _failure_reason(event.status))
        elif isinstance(event, sip_events.CallAnswered):
            if call.status is CallStatus.HANGUP:
                # The 200 crossed our CANCEL (RFC 3261 §9.1): the UA ACKed it; now end the dialog.
                self.act(lambda now: self.ua.bye(event.session, now))
                return
            self.spawn(self.outbound.answered(call, event), f"answered-{call.id}")
        elif isinstance(event, sip_events.CallProgress):
            if call.status is CallStatus.DIALING:
                self.set_status(call, CallStatus.RINGING)
        elif isinstance(event, sip_events.DtmfInfoReceived):
            if call.leg.stream is not None:
                call.leg.stream.dtmf.on_info(event.digit, time.monotonic(), event.duration_ms)
            else:
                self._on_dtmf(call, DtmfEvent(event.digit, "info", time.monotonic(), event.duration_ms))
        elif isinstance(event, sip_events.AnswerReceived):
            self.media.apply_reanswer(call, event)
        elif isinstance(event, sip_events.OfferReceived):
            answer = self.media.answer_reoffer(call, event)
            if answer is None:
                self.act(lambda now: self.ua.reject_offer(event.session, 488, now))
            else:
                self.act(lambda now: self.ua.accept_offer(event.session, answer, now))
        elif isinstance(event, (sip_events.ReferProgress, sip_events.ReferAccepted, sip_events.ReferFailed)):
            self.transfers.progress(call, event)
        elif isinstance(event, sip_events.ReferReceived):
            self.spawn(self.transfers.handle_refer(call, event), f"refer-{call.id}")

    def _confirmed(self, call: Call) -> None:
        call.publish(ev.AckReceived())
        stream = call.leg.stream
        if stream is None:
            return
        stream.confirm_remote()  # media may now go to the offer's c= (no reflection before)
        if call.status is not CallStatus.HANGUP:
            self.media.start_recording(call, stream)
            if call.answered_at is not None:
                self.media.tick(stream)

    # -- keys and the application ------------------------------------------------------------------

    def dtmf_handler(self, call: Call) -> Callable[[DtmfEvent], None]:
        return lambda event: self._on_dtmf(call, event)

    def _on_dtmf(self, call: Call, event: DtmfEvent) -> None:
        duration = None if event.duration_ms is None else round(event.duration_ms, 1)
        call.publish(ev.DtmfReceived(digit=event.digit, source=event.source, duration_ms=duration))
        log.info("dtmf", extra={"call_id": call.sip_call_id, "digit": event.digit, "source": event.source})

    def run_app(self, call: Call) -> None:
        if call.app_task is not None:
            return  # already driven (an API-dispatched call's runner)
        if self.app is not None:
            call.app_task = self.spawn(self.app.run(call, self), f"app-{call.id}")

    # -- ending ---------------------------------------------------------------------------------------

    def hangup(self, call: Call, reason: str = EndReason.AGENT_HANGUP) -> None:
        """End ``call`` from our side; a ``reason`` that is not an EndReason is kept as the detail
        ("menu_exhausted", "end_of_flow", a flow's own word) of an agent hangup."""
        if reason not in END_WORDS and reason not in LEGACY_END_REASONS:
            call.publish(ev.EndDetail(detail=reason))
            reason = EndReason.ERROR if reason in LOCAL_FAILURE_DETAILS else EndReason.AGENT_HANGUP
        self.hangup_leg(call, reason)

    def hangup_leg(self, call: Call, reason: str) -> None:
        if call.status is CallStatus.HANGUP:
            return
        # Finish first: the UA reports our own BYE back as CallEnded("local_bye"),
        # which must not overwrite the reason we hang up for.
        self.finish(call, reason)
        call.leg.end(self)  # BYE, or the browser's peer connection closed

    def finish(self, call: Call, reason: str) -> None:
        if call.status is CallStatus.HANGUP:
            return
        end_reason = _end_reason(call, reason)
        self.outbound.forget(call)
        self.media.stop(call)
        task = call.app_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        self.set_status(call, CallStatus.HANGUP, end_reason)
        call.publish(ev.CallEnded(reason=end_reason, duration_s=_duration(call.created_at, call.ended_at),
                                  talk_s=_duration(call.answered_at, call.ended_at)))
        log.info("call ended", extra={"call_id": call.sip_call_id, "reason": end_reason.value})

    async def close(self) -> None:
        for call in list(self.active_calls):
            self.hangup(call, EndReason.ERROR)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _end_reason(call: Call, reason: str) -> EndReason:
    """``reason`` as an EndReason; any other word is published as the call's EndDetail first."""
    if reason in END_WORDS:
        return EndReason(reason)
    mapped = LEGACY_END_REASONS.get(reason)
    if mapped is None:
        log.warning("unknown end reason %r on %s; recorded as error", reason, call.id)
    call.publish(ev.EndDetail(detail=reason))
    return mapped or EndReason.ERROR


def _failure_reason(status: int) -> EndReason:
    # Map SIP finals onto the lifecycle's end reasons (RFC 3261 §21).
    if status in (486, 600):
        return EndReason.BUSY
    if status in (603,):
        return EndReason.REJECTED
    if status in (408, 480, 487):
        return EndReason.NO_ANSWER
    return EndReason.FAILED


def _duration(start: float | None, end: float | None) -> float | None:
    return round(end - start, 3) if start is not None and end is not None else None
