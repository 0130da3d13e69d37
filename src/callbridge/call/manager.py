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
from ..rtp.ports import PortAllocator, PortsExhaustedError
from ..rtp.socket import RtpSocket
from ..sip import events as ev
from ..sip.address import Address, address_for_uri
from ..sip.endpoint import SipEndpoint
from ..sip.sdp import (Answer, NotAcceptable, SdpError, apply_answer, build_offer, negotiate_answer, parse_sdp,
                       static_codec)
from ..sip.session import InviteSession
from ..sip.uri import SipUri, parse_uri
from .call import END_REASONS, Call, CallObserver, CallStatus, Leg
from . import srtp_policy
from .dial_policy import DialDenied, DialPolicy, TrunkRules, transfer_allowed
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

# No RTP port pair free: 503 with Retry-After (RFC 3261 §21.5.4). Ports come back as calls end, so
# the wait is short; a proxy that honours it sends new calls to another server meanwhile (§16.7).
NO_MEDIA_PORTS_RETRY_AFTER_S = 10
# At server.max_calls, a new INVITE gets 503 with this Retry-After (RFC 3261 §21.5.4): calls end
# every few minutes, so a retry soon may fit; a proxy sends the call elsewhere meanwhile (§16.7).
FULL_RETRY_AFTER_S = 10
# A flood of calls while full would otherwise log one warning per refused call.
NO_MEDIA_PORTS_LOG_INTERVAL_S = 10.0
# Likewise for dials the policy refuses (a toll-fraud attempt comes in bursts).
DIAL_DENIED_LOG_INTERVAL_S = 10.0


class NoMediaPortsError(OSError):
    """No RTP/RTCP port pair could be opened for a call: the range is used up, or nothing in it binds."""


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
    srtp: str = srtp_policy.AUTO  # for calls matching no trunk, and trunks that do not say (call/srtp_policy.py)


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
        # What our INVITEs offer: the configured codecs, in their order, by static payload type.
        self.offer_codecs = [static_codec(name) for name in media.codecs]
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
        self.ua.rate_exempt = trunks.carrier_source
        # Toll-fraud guard (call/dial_policy.py): every dial asks it first. None only in a client
        # (the call simulator dials what its operator typed); the server always sets one.
        self.dial_policy: DialPolicy | None = None
        self.outbound_rules: Callable[[], list[TrunkRules]] = lambda: []  # the outbound trunks, current
        self.outbound_srtp: Callable[[str | None], str | None] = lambda trunk: None  # an outbound trunk's srtp
        self._srtp_offers: dict[str, tuple[str, list]] = {}  # call id -> (mode, our keys) until answered
        self.dial_listeners: list[Callable[[str, str, str | None], None]] = []  # (event, reason, trunk)
        self._dial_tickets: dict[str, int] = {}  # call id -> policy ticket, released when the call ends
        self._refers_seen: set[str] = set()  # calls that already got a REFER: one per dialog
        self._denied_logged_at = -DIAL_DENIED_LOG_INTERVAL_S
        self._denied_unlogged = 0
        self.ua.refer_policy = self._refer_policy
        self._sdp_version = 1
        self._no_ports_logged_at = -NO_MEDIA_PORTS_LOG_INTERVAL_S
        self._no_ports_unlogged = 0
        # Concurrent calls (inbound and outbound, ringing or up) beyond which inbound INVITEs get 503.
        self.max_calls: int | None = None
        self._full_logged_at = -NO_MEDIA_PORTS_LOG_INTERVAL_S
        self._full_unlogged = 0

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
            self._refers_seen.discard(call.id)

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
            if call.leg.stream is not None:
                call.leg.stream.confirm_remote()  # media may now go to the offer's c= (no reflection before)
                if call.status is not CallStatus.HANGUP:
                    self._start_recording(call, call.leg.stream)
                    if call.answered_at is not None:
                        self._tick(call.leg.stream)
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
        if self.max_calls is not None and len(self.active_calls) >= self.max_calls:
            retry_after = [("Retry-After", str(FULL_RETRY_AFTER_S))]
            self._act(lambda now: self.ua.reject(session, 503, now, headers=retry_after))
            self._warn_full()
            return
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
        transport, where = getattr(session.source, "transport", "udp"), f"trunk {trunk.name}" if trunk else "server"
        try:
            srtp_mode = srtp_policy.effective_mode((trunk.srtp if trunk else None) or self.media.srtp, transport,
                                                   where=where)
        except srtp_policy.SrtpRefused as exc:
            srtp_policy.log_refusal(f"{exc}; call refused with 488")
            self._act(lambda now: self.ua.reject(session, 488, now))
            call.log_event("rejected", reason=str(exc))
            self._finish(call, "rejected")
            return
        srtp_policy.note_offer_transport(offer, transport, where=where)
        try:
            socket = await self._open_rtp()
        except NoMediaPortsError as exc:
            retry_after = [("Retry-After", str(NO_MEDIA_PORTS_RETRY_AFTER_S))]
            self._act(lambda now: self.ua.reject(session, 503, now, headers=retry_after))
            call.log_event("rejected", reason=str(exc))
            self._finish(call, "no_media_ports")
            return
        protos, usable = srtp_policy.answer_terms(srtp_mode)
        try:
            answer = negotiate_answer(offer, local_address=self.media_host, local_port=socket.port or 0,
                                      codec_preference=self.codecs, session_id=int(time.time()),
                                      session_version=self._next_sdp_version(), accept_protos=protos, usable=usable)
            socket.srtp = srtp_policy.secure_answer(offer, answer, srtp_mode)
        except NotAcceptable as exc:
            socket.close()
            self._act(lambda now: self.ua.reject(session, 488, now))
            call.log_event("rejected", reason=str(exc))
            self._finish(call, "rejected")
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

    async def _open_rtp(self) -> RtpSocket:
        """A bound RTP/RTCP pair for a new call, or NoMediaPortsError (an OSError, which every
        dialer already handles) with nothing left allocated."""
        socket = RtpSocket(self.ports, self.media_host)
        try:
            await socket.open()
        except (PortsExhaustedError, OSError) as exc:
            socket.close()
            self._warn_no_ports(exc)
            raise NoMediaPortsError(f"no RTP port pair free: {exc}") from exc
        return socket

    def _warn_full(self) -> None:
        now = time.monotonic()
        if now - self._full_logged_at < NO_MEDIA_PORTS_LOG_INTERVAL_S:
            self._full_unlogged += 1
            return
        log.warning("at max_calls (%d): new calls get 503 (%d more since the last warning)",
                    self.max_calls, self._full_unlogged)
        self._full_logged_at, self._full_unlogged = now, 0

    def _warn_no_ports(self, exc: Exception) -> None:
        self._no_ports_unlogged += 1
        now = time.monotonic()
        if now - self._no_ports_logged_at >= NO_MEDIA_PORTS_LOG_INTERVAL_S:
            log.warning("no RTP port pair free (%s): %d call(s) refused since the last warning", exc,
                        self._no_ports_unlogged)
            self._no_ports_logged_at, self._no_ports_unlogged = now, 0

    def _next_sdp_version(self) -> int:
        self._sdp_version += 1
        return self._sdp_version

    def _answer_reoffer(self, call: Call, event: ev.OfferReceived) -> None:
        session = event.session
        stream = call.leg.stream
        context = stream.socket.srtp if stream is not None else None
        protos, usable = srtp_policy.reanswer_terms(context)
        try:
            offer = parse_sdp(event.sdp)
            answer = negotiate_answer(offer, local_address=self.media_host,
                                      local_port=stream.socket.port if stream and stream.socket.port else 0,
                                      codec_preference=self.codecs,
                                      session_id=call.leg.sdp_session_id or int(call.created_at),
                                      session_version=self._next_sdp_version(),
                                      local_direction="sendonly" if stream and stream.hold == "local" else "sendrecv",
                                      accept_protos=protos, usable=usable)
            srtp_policy.secure_reanswer(context, offer, answer)
        except (SdpError, srtp_policy.SrtpRefused):
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
        """INVITE ``target``. ``prepare`` sees the call before its first event (to attach a driver, say).

        Raises ValueError for a bad target and NoMediaPortsError (an OSError) when no RTP port is free."""
        uri = parse_uri(target)
        if not isinstance(uri, SipUri):
            raise ValueError(f"not a SIP URI: {target}")
        srtp_mode = srtp_policy.effective_mode(self.outbound_srtp(trunk) or self.media.srtp,
                                               (destination or address_for_uri(uri)).transport,
                                               where=f"trunk {trunk}" if trunk else "server")  # SrtpRefused: ValueError
        proto, keys = srtp_policy.offer_terms(srtp_mode)
        ticket, cap_reached = self._admit(uri, trunk)  # DialDenied (an OSError) before anything is opened
        try:
            socket = await self._open_rtp()
        except BaseException:
            self._release(ticket)
            raise
        try:
            offer = build_offer(self.media_host, socket.port or 0, self.offer_codecs,
                                session_id=int(time.time()), session_version=self._next_sdp_version(),
                                proto=proto, crypto=[str(key) for key in keys])
            session = self.ua.invite(uri, self._now(), sdp=offer.encode(), from_user=from_user, headers=headers,
                                     credentials=credentials, destination=destination)
        except BaseException:
            socket.close()  # the port pair must not outlive a call that was never placed
            self._release(ticket)
            raise
        call = Call(direction="outbound", leg=Leg(session), called=uri.user, status=CallStatus.DIALING,
                    caller=from_user, trunk=trunk, sip_headers={n: v for n, v in headers or () if n.lower().startswith("x-")})
        call.leg.pending_socket, call.leg.offer = socket, offer
        self._srtp_offers[call.id] = (srtp_mode, keys)
        session.app = call
        if ticket is not None:
            self._dial_tickets[call.id] = ticket
        if prepare is not None:
            prepare(call)
        self._register(call)
        self._set_status(call, CallStatus.DIALING)
        call.log_event("invite", target=str(uri), destination=str(session.destination))
        if cap_reached is not None:  # this call filled a daily cap: the next one is refused
            call.log_event("daily_cap_reached", scope=cap_reached)
        self.endpoint.flush()
        return call

    # -- dial policy ----------------------------------------------------------------------------

    def _rules_for(self, uri: SipUri, trunk: str | None) -> TrunkRules | None:
        """The named trunk's rules; with no name, a trunk whose address the URI spells."""
        rules = self.outbound_rules()
        if trunk is not None:
            return next((r for r in rules if r.name == trunk), TrunkRules(name=trunk))
        host, port = uri.host.lower(), uri.port or (5061 if uri.scheme == "sips" else 5060)
        return next((r for r in rules if r.host.lower() == host and r.port == port), None)

    @staticmethod
    def _target_text(uri: SipUri) -> str:
        """What patterns see: scheme, user, host and port, without parameters or headers."""
        port = uri.port or (5061 if uri.scheme == "sips" else 5060)
        user = f"{uri.user}@" if uri.user else ""
        return f"{uri.scheme}:{user}{uri.host}:{port}"

    def _admit(self, uri: SipUri, trunk: str | None) -> tuple[int | None, str | None]:
        """(ticket, daily cap this dial filled) for an allowed dial; DialDenied otherwise."""
        if self.dial_policy is None:
            return None, None
        rules = self._rules_for(uri, trunk)
        decision = self.dial_policy.admit(self._target_text(uri), uri.user_decoded, rules, self._now())
        if not decision.allowed:
            self._warn_denied(decision.reason, decision.detail, decision.trunk)
            for listener in self.dial_listeners:
                listener("denied", decision.reason, decision.trunk)
            raise DialDenied(decision.reason, decision.detail)
        if decision.cap_reached is not None:
            log.warning("outbound daily cap reached", extra={"scope": decision.cap_reached})
            for listener in self.dial_listeners:
                listener("daily_cap_reached", decision.cap_reached, decision.trunk)
        return decision.ticket, decision.cap_reached

    def _release(self, ticket: int | None) -> None:
        if self.dial_policy is not None:
            self.dial_policy.release(ticket)

    def _warn_denied(self, reason: str, detail: str, trunk: str | None) -> None:
        self._denied_unlogged += 1
        now = time.monotonic()
        if now - self._denied_logged_at >= DIAL_DENIED_LOG_INTERVAL_S:
            log.warning("outbound call refused by policy: %s (%d refused since the last warning)", detail,
                        self._denied_unlogged, extra={"reason": reason, "trunk": trunk})
            self._denied_logged_at, self._denied_unlogged = now, 0

    def _refer_policy(self, session: InviteSession, target: object) -> tuple[int, str] | None:
        """Asked by the UA core before it answers a REFER: None lets it through (202), else 403.

        A REFER makes us dial: only targets the call's inbound trunk lists, only once per
        dialog, and only where the outbound policy would let us dial anyway."""
        call: Call | None = getattr(session, "app", None)
        if self.on_refer is not None:
            return None  # a client noting transfers, not dialling them
        if call is None:
            return 403, "Forbidden"
        if call.id in self._refers_seen:
            call.log_event("refer_denied", reason="second_refer")
            return 403, "One Transfer Per Call"
        self._refers_seen.add(call.id)
        uri = getattr(target, "uri", None)
        if not isinstance(uri, SipUri):
            call.log_event("refer_denied", reason="not_sip")
            return 403, "Forbidden"
        text = self._target_text(uri)
        inbound = next((t for t in self.trunks.trunks if t.name == call.trunk), None)
        rules = self._rules_for(uri, None)
        patterns = inbound.transfer_targets if inbound is not None and call.direction == "inbound" else ()
        if not transfer_allowed(text, uri.user_decoded, patterns, rules.home_country if rules else "+1"):
            call.log_event("refer_denied", reason="not_a_transfer_target", target=text)
            self._warn_denied("refer_target", f"REFER to {text} is not a transfer target", call.trunk)
            for listener in self.dial_listeners:
                listener("denied", "refer_target", call.trunk)
            return 403, "Forbidden"
        if self.dial_policy is not None:
            reason, detail = self.dial_policy.verdict(text, uri.user_decoded, rules)
            if reason != "ok":
                call.log_event("refer_denied", reason=reason, target=text)
                self._warn_denied(reason, detail, rules.name if rules else None)
                for listener in self.dial_listeners:
                    listener("denied", reason, rules.name if rules else None)
                return 403, "Forbidden"
        return None

    async def _outbound_answered(self, call: Call, event: ev.CallAnswered) -> None:
        socket: RtpSocket = call.leg.pending_socket
        call.leg.pending_socket = None
        try:
            answer = apply_answer(call.leg.offer, parse_sdp(event.response.body))
            srtp_mode, keys = self._srtp_offers.pop(call.id, (srtp_policy.OFF, []))
            socket.srtp = srtp_policy.secure_offer_answered(keys, srtp_mode, answer)
        except (SdpError, srtp_policy.SrtpRefused) as exc:
            log.warning("bad SDP answer on %s: %s", call.sip_call_id, exc)
            socket.close()
            self._hangup_leg(call, "error")
            return
        call.leg.sdp_session_id = call.leg.offer.origin.sess_id
        call.leg.stream = self._open_stream(call, socket, answer)
        call.leg.stream.confirm_remote()  # the callee's own answer to our INVITE
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
        except DialDenied as exc:  # a cap filled since the REFER was accepted
            call.log_event("refer_denied", reason=exc.reason, target=target)
            self._act(lambda now: self.ua.notify_refer(session, 403, "Forbidden", now))
            return
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
        if call.direction != "inbound":
            self._start_recording(call, stream)  # our 200 came back and we ACKed it: confirmed
        stream.hold_source = self._hold_source(stream.sample_rate)
        if not answer.direction.startswith("send"):
            stream.set_hold("remote")
        return stream

    def _start_recording(self, call: Call, stream: AudioStream) -> None:
        """Record from the moment the call is confirmed (an inbound call's ACK), not from the INVITE:
        a flood of INVITEs that are never ACKed then leaves no files behind."""
        if self.media.recordings_dir is None or stream.recorder is not None:
            return
        try:
            stream.recorder = CallRecorder(self.media.recordings_dir / f"{call.id}.wav", stream.sample_rate,
                                           io=self.media.recording_io)
            call.recording = str(stream.recorder.path)
        except OSError as exc:
            # A full or read-only disk loses the recording, never the call.
            log.error("cannot record call %s: %s", call.id, exc)

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
        proto, crypto = srtp_policy.reoffer_crypto(stream.socket.srtp)  # same keys (RFC 4568 §7.1.4)
        offer = build_offer(self.media_host, stream.socket.port or 0, codecs,
                            session_id=call.leg.sdp_session_id or int(call.created_at),
                            session_version=self._next_sdp_version(),
                            telephone_event_pt=stream.telephone_event_pt, direction=direction,
                            proto=proto, crypto=crypto)
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
        srtp_policy.reanswered(stream.socket.srtp, answer)
        stream.socket.set_remote(answer.remote_address, answer.remote_port, answer.remote_rtcp_port)
        call.log_event("reanswer", direction=answer.direction)

    def _start_media(self, call: Call) -> None:
        stream = call.leg.stream
        if stream is None:
            return
        stream.start(time.monotonic())
        dialog = call.leg.session.dialog
        if call.direction == "inbound" and dialog is not None and not dialog.confirmed:
            # Nothing may be sent before the ACK anyway (media reflection), and a flood of INVITEs
            # that are never ACKed must not cost a tick each: the pacer takes the stream at the ACK.
            return
        self._tick(stream)

    def _tick(self, stream: AudioStream) -> None:
        if id(stream) not in self._pacer_handles:
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
        self._release(self._dial_tickets.pop(call.id, None))
        self._srtp_offers.pop(call.id, None)
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
