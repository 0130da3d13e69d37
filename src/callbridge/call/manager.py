"""Turns SIP session events into calls with media, and runs each call's application.

The manager owns the mapping session → :class:`Call`, opens and closes RTP
ports, negotiates SDP, and hands answered calls to a :class:`CallApp` (the
demo tone today, the IVR and agent later).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..media.dtmf import DtmfEvent
from ..media.dtmf.collector import InbandMode, inband_wanted
from ..media.pacer import MediaPacer
from ..media.recorder import CallRecorder
from ..media.sources import LoopSource, Source, wav_source
from ..media.stream import AudioStream
from ..media.tone import hold_music
from ..media.wavfile import JobRunner
from ..rtp.ports import PortAllocator
from ..rtp.socket import RtpSocket
from ..sip import events as ev
from ..sip.address import Address
from ..sip.endpoint import SipEndpoint
from ..sip.sdp import Answer, NotAcceptable, SdpError, apply_answer, build_offer, negotiate_answer, parse_sdp
from ..sip.session import InviteSession
from ..sip.uri import SipUri, parse_uri
from .call import END_REASONS, Call, CallObserver, CallStatus, Leg
from .trunks import TrunkTable, called_user

log = logging.getLogger("callbridge.call")

# Reasons other layers use, mapped onto the lifecycle's end reasons (call.END_REASONS).
LEGACY_END_REASONS = {"flow_ended": "agent_hangup", "bridge_ended": "transfer", "local_bye": "agent_hangup",
                      "remote_bye": "caller_hangup"}
# Our own hangups that mean something went wrong, not that the conversation was over.
LOCAL_FAILURE_DETAILS = frozenset({"flow_loop", "transfer_failed"})
# The UA core's own reasons for a dialog that died without a BYE from anyone.
DIALOG_LOST_REASONS = {"no_ack": "failed", "timeout": "failed", "session_expired": "timeout"}

# RFC 3515 has no timeout for the transferee's new call; 30 s matches common PBX defaults.
REFER_DIAL_TIMEOUT = 30.0


class CallApp(Protocol):
    async def run(self, call: Call, manager: "CallManager") -> None: ...


@dataclass
class MediaPolicy:
    """How calls' media is set up: codecs, DTMF detection, recording, music on hold."""

    codecs: list[str]
    dtmf_inband: InbandMode = "auto"
    recordings_dir: Path | None = None  # None: do not record
    recording_io: JobRunner | None = None  # runs recordings' disk writes off the event loop
    music_on_hold: Path | None = None  # None: the built-in hold music


class CallManager:
    def __init__(self, endpoint: SipEndpoint, *, media_host: str, ports: PortAllocator, pacer: MediaPacer,
                 trunks: TrunkTable, media: MediaPolicy, app: CallApp | None = None,
                 ring_seconds: float = 0.0) -> None:
        self.ring_seconds = ring_seconds
        # Decides what an incoming REFER does. None: we dial the target ourselves
        # (a server asked to transfer). A client such as the call simulator sets
        # this to note the transfer instead; it returns the NOTIFY status to send.
        self.on_refer: Callable[[Call, str], int] | None = None
        # Picks the application route (a flow name) for an inbound call before it
        # is answered; None from it rejects the call with 404 (number not in service).
        self.router: Callable[[Call], str | None] | None = None
        self.endpoint = endpoint
        self.ua = endpoint.ua
        self.media_host = media_host
        self.ports = ports
        self.pacer = pacer
        self.trunks = trunks
        self.media = media
        self.codecs = media.codecs
        self.app = app
        self.dtmf_listeners: list[Callable[[Call, DtmfEvent], None]] = []
        self._hold_music: dict[int, LoopSource] = {}  # by sample rate: read the file once, not per call
        self.calls: dict[str, Call] = {}
        self.listeners: list[Callable[[Call, str], None]] = []
        # Told about every call event and transcript entry: the journal persists, then publishes.
        self.observers: list[CallObserver] = []
        self._tasks: set[asyncio.Task] = set()
        self._pacer_handles: dict[int, int] = {}
        self.ua.inbound_auth = trunks.auth_policy
        self._sdp_version = 1

    # -- plumbing ------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call task %s failed", task.get_name(), exc_info=task.exception())

    def _now(self) -> float:
        return self.endpoint.now()

    def _register(self, call: Call) -> None:
        call.observer = self._observe
        call.transcript.on_append = lambda entry: self._observe(call, "transcript", entry)
        self.calls[call.id] = call

    def _observe(self, call: Call, kind: str, data: dict) -> None:
        for observer in self.observers:
            try:
                observer(call, kind, data)
            except Exception:  # noqa: BLE001 - an observer's bug must not break the call
                log.exception("call observer failed on %s", call.id)

    def forget(self, call: Call) -> None:
        """Drop a finished call from memory (its record lives on in the store)."""
        if call.status is CallStatus.HANGUP:
            self.calls.pop(call.id, None)

    @property
    def task_count(self) -> int:
        return len(self._tasks)

    def _set_status(self, call: Call, status: CallStatus) -> None:
        call.status = status
        if status is CallStatus.HANGUP:
            call.log_event("status", status=status.value, end_reason=call.end_reason)
        else:
            call.log_event("status", status=status.value)
        for listener in self.listeners:
            listener(call, "status")

    @property
    def active_calls(self) -> list[Call]:
        return [c for c in self.calls.values() if c.status is not CallStatus.HANGUP]

    # -- SIP events ---------------------------------------------------------------------

    def on_sip_event(self, event: ev.SessionEvent) -> None:
        if isinstance(event, ev.IncomingCall):
            self._spawn(self._accept_inbound(event.session), f"inbound-{event.session.call_id}")
            return
        if isinstance(event, ev.AuthFailed):
            return
        call: Call | None = getattr(event.session, "app", None)
        if call is None:
            return
        if isinstance(event, ev.CallConfirmed):
            call.log_event("ack")
        elif isinstance(event, (ev.CallEnded, ev.CallCancelled)):
            # The remote party leaving is "caller_hangup" in both directions (see call.END_REASONS).
            if isinstance(event, ev.CallCancelled) or event.reason == "remote_bye":
                reason = "caller_hangup"
            else:
                reason = DIALOG_LOST_REASONS.get(event.reason, event.reason)
            self._finish(call, reason)
        elif isinstance(event, ev.CallFailed):
            self._finish(call, _failure_reason(event.status))
        elif isinstance(event, ev.CallAnswered):
            if call.status is CallStatus.HANGUP:
                # The 200 crossed our CANCEL (RFC 3261 §9.1): the UA ACKed it; now end the dialog.
                self._act(lambda now: self.ua.bye(event.session, now))
                return
            self._spawn(self._outbound_answered(call, event), f"answered-{call.id}")
        elif isinstance(event, ev.CallProgress):
            if call.status is CallStatus.DIALING:
                self._set_status(call, CallStatus.RINGING)
        elif isinstance(event, ev.DtmfInfoReceived):
            if call.leg.stream is not None:
                call.leg.stream.dtmf.on_info(event.digit, time.monotonic(), event.duration_ms)
            else:
                self._on_dtmf(call, DtmfEvent(event.digit, "info", time.monotonic(), event.duration_ms))
        elif isinstance(event, ev.AnswerReceived):
            self._apply_reanswer(call, event)
        elif isinstance(event, ev.OfferReceived):
            self._answer_reoffer(call, event)
        elif isinstance(event, ev.ReferProgress):
            call.log_event("refer_progress", status=event.status, final=event.final)
            if event.final and 200 <= event.status < 300:
                # The transferee reached the target: our leg is done (blind transfer).
                self._hangup_leg(call, "transfer")
        elif isinstance(event, ev.ReferAccepted):
            call.log_event("refer_accepted", status=event.status)
        elif isinstance(event, ev.ReferFailed):
            call.log_event("refer_failed", status=event.status)
        elif isinstance(event, ev.ReferReceived):
            self._spawn(self._handle_incoming_refer(call, event), f"refer-{call.id}")

    # -- inbound --------------------------------------------------------------------------

    async def _accept_inbound(self, session: InviteSession) -> None:
        request = session.invite
        trunk = self.trunks.match(request, session.source)
        if self.trunks.trunks and trunk is None:
            self._act(lambda now: self.ua.reject(session, 404, now))
            return
        caller = request.from_addr
        call = Call(direction="inbound", leg=Leg(session), trunk=trunk.name if trunk else None,
                    caller=caller.uri.user if isinstance(caller.uri, SipUri) else str(caller.uri),
                    caller_name=caller.display_name, called=called_user(request),
                    sip_headers={n: v for n, v in request.headers if n.lower().startswith("x-")})
        session.app = call
        self._register(call)
        self._set_status(call, CallStatus.RINGING)
        call.log_event("invite", source=str(session.source))
        if self.router is not None:
            call.route = self.router(call)
            if call.route is None:
                self._act(lambda now: self.ua.reject(session, 404, now))
                call.log_event("rejected", reason="no route for the called number")
                self._finish(call, "rejected")
                return
        try:
            offer = parse_sdp(request.body) if request.body else None
        except SdpError as exc:
            log.warning("bad SDP offer on %s: %s", session.call_id, exc)
            self._act(lambda now: self.ua.reject(session, 400, now, reason="Bad SDP"))
            self._finish(call, "rejected")
            return
        if offer is None:
            self._act(lambda now: self.ua.reject(session, 488, now, reason="No SDP offer"))
            self._finish(call, "rejected")
            return
        socket = RtpSocket(self.ports, self.media_host)
        try:
            port = await socket.open()
            answer = negotiate_answer(offer, local_address=self.media_host, local_port=port,
                                      codec_preference=self.codecs, session_id=int(time.time()),
                                      session_version=self._next_sdp_version())
        except NotAcceptable as exc:
            socket.close()
            self._act(lambda now: self.ua.reject(session, 488, now))
            call.log_event("rejected", reason=str(exc))
            self._finish(call, "rejected")
            return
        except OSError:
            socket.close()
            self._act(lambda now: self.ua.reject(session, 503, now))
            self._finish(call, "error")
            return
        if not session.is_active:  # cancelled while we opened the port
            socket.close()
            return
        call.leg.sdp_session_id = answer.sdp.origin.sess_id
        call.leg.stream = self._open_stream(call, socket, answer)
        self._act(lambda now: self.ua.ring(session, now))
        if self.ring_seconds:
            await asyncio.sleep(self.ring_seconds)
            if not session.is_active:  # the caller gave up (CANCEL) while ringing
                return
        self._act(lambda now: self.ua.answer(session, answer.sdp.encode(), now))
        call.answered_at = time.time()
        self._start_media(call)
        self._set_status(call, CallStatus.ACTIVE)
        self._run_app(call)

    def _next_sdp_version(self) -> int:
        self._sdp_version += 1
        return self._sdp_version

    def _answer_reoffer(self, call: Call, event: ev.OfferReceived) -> None:
        session = event.session
        stream = call.leg.stream
        try:
            offer = parse_sdp(event.sdp)
            answer = negotiate_answer(offer, local_address=self.media_host,
                                      local_port=stream.socket.port if stream and stream.socket.port else 0,
                                      codec_preference=self.codecs,
                                      session_id=call.leg.sdp_session_id or int(call.created_at),
                                      session_version=self._next_sdp_version(),
                                      local_direction="sendonly" if stream and stream.hold == "local" else "sendrecv")
        except SdpError:
            self._act(lambda now: self.ua.reject_offer(session, 488, now))
            return
        if stream is not None:
            # Hold (RFC 3264 §8.4): stop sending when the peer will not receive.
            held = answer.direction not in ("sendrecv", "sendonly")
            if held:
                stream.set_hold("remote")
            elif stream.hold == "remote":
                stream.set_hold(None)
            stream.socket.set_remote(answer.remote_address, answer.remote_port, answer.remote_rtcp_port)
        call.log_event("reoffer", method=event.method, direction=answer.direction)
        self._act(lambda now: self.ua.accept_offer(session, answer.sdp.encode(), now))

    # -- outbound ---------------------------------------------------------------------------

    async def dial(self, target: str, *, from_user: str | None = None, headers: list[tuple[str, str]] | None = None,
                   credentials: tuple[str, str] | None = None, destination: Address | None = None,
                   trunk: str | None = None, prepare: Callable[[Call], None] | None = None) -> Call:
        """INVITE ``target``. ``prepare`` sees the call before its first event (to attach a driver, say)."""
        uri = parse_uri(target)
        if not isinstance(uri, SipUri):
            raise ValueError(f"not a SIP URI: {target}")
        socket = RtpSocket(self.ports, self.media_host)
        port = await socket.open()
        offer = build_offer(self.media_host, port, [("PCMU", 0, 8000), ("PCMA", 8, 8000)],
                            session_id=int(time.time()), session_version=self._next_sdp_version())
        session = self.ua.invite(uri, self._now(), sdp=offer.encode(), from_user=from_user, headers=headers,
                                 credentials=credentials, destination=destination)
        call = Call(direction="outbound", leg=Leg(session), called=uri.user, status=CallStatus.DIALING,
                    caller=from_user, trunk=trunk, sip_headers={n: v for n, v in headers or () if n.lower().startswith("x-")})
        call.leg.pending_socket, call.leg.offer = socket, offer
        session.app = call
        if prepare is not None:
            prepare(call)
        self._register(call)
        self._set_status(call, CallStatus.DIALING)
        call.log_event("invite", target=str(uri), destination=str(session.destination))
        self.endpoint.flush()
        return call

    async def _outbound_answered(self, call: Call, event: ev.CallAnswered) -> None:
        socket: RtpSocket = call.leg.pending_socket
        call.leg.pending_socket = None
        try:
            answer = apply_answer(call.leg.offer, parse_sdp(event.response.body))
        except SdpError as exc:
            log.warning("bad SDP answer on %s: %s", call.sip_call_id, exc)
            socket.close()
            self._hangup_leg(call, "error")
            return
        call.leg.sdp_session_id = call.leg.offer.origin.sess_id
        call.leg.stream = self._open_stream(call, socket, answer)
        call.answered_at = time.time()
        self._start_media(call)
        self._set_status(call, CallStatus.ACTIVE)
        self._run_app(call)

    # -- transfer -------------------------------------------------------------------------------

    def transfer(self, call: Call, target: str) -> None:
        """Blind transfer with REFER (RFC 3515); the leg ends when the target answers."""
        call.log_event("transfer", target=target, method="refer")
        self._act(lambda now: self.ua.refer(call.leg.session, target, now))

    async def _handle_incoming_refer(self, call: Call, event: ev.ReferReceived) -> None:
        """We were asked to transfer: dial the target, report with NOTIFYs, then leave."""
        session = event.session
        target = str(event.refer_to.uri)
        call.log_event("refer_received", target=target)
        if self.on_refer is not None:
            status = self.on_refer(call, target)
            self._act(lambda now: self.ua.notify_refer(session, status, "OK" if status < 300 else "Declined", now))
            return
        try:
            new_call = await self.dial(target)
        except (ValueError, OSError) as exc:
            log.warning("cannot dial REFER target %s: %s", target, exc)
            self._act(lambda now: self.ua.notify_refer(session, 503, "Service Unavailable", now))
            return
        deadline = time.monotonic() + REFER_DIAL_TIMEOUT
        while new_call.status in (CallStatus.DIALING, CallStatus.RINGING) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if new_call.status is CallStatus.ACTIVE:
            self._act(lambda now: self.ua.notify_refer(session, 200, "OK", now))
            self._hangup_leg(call, "transfer")
        else:
            self._act(lambda now: self.ua.notify_refer(session, 487 if new_call.status is CallStatus.HANGUP else 408,
                                                       "Request Terminated", now))
            if new_call.status is not CallStatus.HANGUP:
                self.hangup(new_call)

    # -- media and application -----------------------------------------------------------------------

    def _open_stream(self, call: Call, socket: RtpSocket, answer: Answer) -> AudioStream:
        socket.set_remote(answer.remote_address, answer.remote_port, answer.remote_rtcp_port)
        codec = answer.codec
        stream = AudioStream(
            socket, codec.name, codec.payload_type, telephone_event_pt=answer.telephone_event_pt,
            ptime_ms=answer.ptime or 20, cn_payload_type=answer.comfort_noise_pt or 13,
            inband_dtmf=inband_wanted(self.media.dtmf_inband, answer.telephone_event_pt is not None),
            cname=f"callbridge@{self.media_host}", on_dtmf=lambda event: self._on_dtmf(call, event))
        if self.media.recordings_dir is not None:
            try:
                stream.recorder = CallRecorder(self.media.recordings_dir / f"{call.id}.wav", stream.sample_rate,
                                               io=self.media.recording_io)
                call.recording = str(stream.recorder.path)
            except OSError as exc:
                # A full or read-only disk loses the recording, never the call.
                log.error("cannot record call %s: %s", call.id, exc)
        stream.hold_source = self._hold_source(stream.sample_rate)
        if not answer.direction.startswith("send"):
            stream.set_hold("remote")
        return stream

    def _hold_source(self, sample_rate: int) -> Source:
        cached = self._hold_music.get(sample_rate)
        if cached is None:
            cached = self._hold_music[sample_rate] = self._load_hold_music(sample_rate)
        # Each call gets its own play position over the shared samples.
        return LoopSource(cached.pcm, sample_rate, label=cached.label)

    def _load_hold_music(self, sample_rate: int) -> LoopSource:
        path = self.media.music_on_hold
        if path is not None:
            try:
                music = wav_source(path, sample_rate)
                return LoopSource(music.pcm, sample_rate, label=music.label)
            except (OSError, ValueError) as exc:
                # Checked at startup; if the file went away since, callers still hear something.
                log.warning("music on hold %s unusable (%s); using the built-in music", path, exc)
        return LoopSource(hold_music(sample_rate), sample_rate, label="built-in hold music")

    def _on_dtmf(self, call: Call, event: DtmfEvent) -> None:
        call.add_dtmf(event.digit, event.source, event.duration_ms)
        log.info("dtmf", extra={"call_id": call.sip_call_id, "digit": event.digit, "source": event.source})
        for listener in self.dtmf_listeners:
            listener(call, event)
        for listener in self.listeners:
            listener(call, "dtmf")

    # -- hold -------------------------------------------------------------------------------------------

    def hold(self, call: Call) -> None:
        """Put the caller on hold: music now, and a sendonly re-offer (RFC 3264 §8.4)."""
        self._reoffer(call, "local", "sendonly")

    def unhold(self, call: Call) -> None:
        self._reoffer(call, None, "sendrecv")

    def _reoffer(self, call: Call, hold: str | None, direction: str) -> None:
        stream = call.leg.stream
        if stream is None or call.status is not CallStatus.ACTIVE:
            raise ValueError("the call has no active media")
        stream.set_hold(hold)
        codecs = [(stream.codec_name, stream.payload_type, stream.codec.clock_rate)]
        offer = build_offer(self.media_host, stream.socket.port or 0, codecs,
                            session_id=call.leg.sdp_session_id or int(call.created_at),
                            session_version=self._next_sdp_version(),
                            telephone_event_pt=stream.telephone_event_pt, direction=direction)
        call.leg.offer = offer
        call.log_event("hold" if hold else "unhold", direction=direction)
        self._act(lambda now: self.ua.reinvite(call.leg.session, offer.encode(), now))

    def _apply_reanswer(self, call: Call, event: ev.AnswerReceived) -> None:
        stream = call.leg.stream
        if stream is None or call.leg.offer is None:
            return
        try:
            answer = apply_answer(call.leg.offer, parse_sdp(event.sdp))
        except SdpError as exc:
            log.warning("bad SDP in re-INVITE answer on %s: %s", call.sip_call_id, exc)
            return
        stream.socket.set_remote(answer.remote_address, answer.remote_port, answer.remote_rtcp_port)
        call.log_event("reanswer", direction=answer.direction)

    def _start_media(self, call: Call) -> None:
        stream = call.leg.stream
        if stream is None:
            return
        stream.start(time.monotonic())
        self._pacer_handles[id(stream)] = self.pacer.add(stream.tick)

    def _stop_media(self, call: Call) -> None:
        stream = call.leg.stream
        if stream is not None:
            handle = self._pacer_handles.pop(id(stream), None)
            if handle is not None:
                self.pacer.remove(handle)
            stream.close()
        if call.leg.pending_socket is not None:
            call.leg.pending_socket.close()
            call.leg.pending_socket = None

    def _run_app(self, call: Call) -> None:
        if call.app_task is not None:
            return  # already driven (an API-dispatched call's runner)
        if self.app is not None:
            call.app_task = self._spawn(self.app.run(call, self), f"app-{call.id}")

    # -- ending ---------------------------------------------------------------------------------------

    def hangup(self, call: Call, reason: str = "agent_hangup") -> None:
        """End ``call`` from our side; a ``reason`` outside END_REASONS is kept as the detail
        ("menu_exhausted", "end_of_flow", a flow's own word) of an agent hangup."""
        if reason not in END_REASONS and reason not in LEGACY_END_REASONS:
            call.log_event("end_detail", detail=reason)
            reason = "error" if reason in LOCAL_FAILURE_DETAILS else "agent_hangup"
        self._hangup_leg(call, reason)

    def _hangup_leg(self, call: Call, reason: str) -> None:
        if call.status is CallStatus.HANGUP:
            return
        # Finish first: the UA reports our own BYE back as CallEnded("local_bye"),
        # which must not overwrite the reason we hang up for.
        self._finish(call, reason)
        self._act(lambda now: self.ua.bye(call.leg.session, now))

    def _finish(self, call: Call, reason: str) -> None:
        if call.status is CallStatus.HANGUP:
            return
        if reason not in END_REASONS:
            mapped = LEGACY_END_REASONS.get(reason)
            if mapped is None:
                log.warning("unknown end reason %r on %s; recorded as error", reason, call.id)
            call.log_event("end_detail", detail=reason)
            reason = mapped or "error"
        call.end_reason = reason
        call.ended_at = time.time()
        self._stop_media(call)
        task = call.app_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        self._set_status(call, CallStatus.HANGUP)
        log.info("call ended", extra={"call_id": call.sip_call_id, "reason": reason})

    def _act(self, action: Callable[[float], None]) -> None:
        """Run one UA-core action at the current time and push its output out."""
        action(self._now())
        self.endpoint.flush()

    async def close(self) -> None:
        for call in list(self.active_calls):
            self.hangup(call, "error")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _failure_reason(status: int) -> str:
    # Map SIP finals onto the lifecycle's end reasons (RFC 3261 §21).
    if status in (486, 600):
        return "busy"
    if status in (603,):
        return "rejected"
    if status in (408, 480, 487):
        return "no_answer"
    return "failed"
