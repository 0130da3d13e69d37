"""Answering a browser's call: an SDP offer in, an answer out, then the same life as an inbound SIP call.

The steps mirror :class:`~callbridge.call.inbound.InboundCalls`: availability (draining, full,
starting: 503 + Retry-After), the target's route, then ringing → route chosen → (ICE and DTLS
connected, the WebRTC "ACK") → active, with ``manager.run_app`` running the IVR or agent. The call
is registered with the call manager, so consumers (journal, metrics, SSE) see every event and
``server.max_calls`` counts it. Non-trickle ICE (aiortc gathers before answering): the answer holds
every candidate, and gathering is time-boxed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiortc import RTCConfiguration, RTCIceServer, RTCSessionDescription
from aiortc.exceptions import OperationError

from ...media.dtmf.collector import inband_wanted
from ...media.webrtc_audio import WebRtcAudio
from .. import events as ev
from ..call import Call, CallStatus, Direction, EndReason
from .aiortc_compat import extra_host_addresses, tap_payload_type, telephone_event_codec
from .leg import WebRtcLeg
from .peer import BrowserPeer

if TYPE_CHECKING:
    from ..manager import CallManager

log = logging.getLogger("callbridge.webrtc")

MAX_SDP_BYTES = 64 * 1024  # a browser's audio offer is ~4 KB; more is not an offer we want to parse
MAX_TARGET_CHARS = 128
# Host candidates take milliseconds; aioice gives a silent STUN server 5 s: past that, a stuck TURN.
GATHER_TIMEOUT_S = 8.0
FULL_RETRY_AFTER_S = 10  # browser calls end in minutes; the page tells the user to try again
BROWSER_CALLER = "browser"
_AUDIO_LINE = re.compile(r"^m=audio ", re.M)


class WebRtcRefused(Exception):
    """The offer is not answered: an HTTP status, a message, and the request field at fault if any."""

    def __init__(self, status: int, message: str, *, field: str | None = None, reason: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field
        self.reason, self.retry_after = reason, retry_after

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.reason is not None:
            body["reason"] = self.reason
        return body


@dataclass(frozen=True, slots=True)
class Target:
    """Something the page may call: a number the router knows, or a flow by name."""

    to: str
    flow: str
    kind: str  # "number" | "flow"

    def to_json(self) -> dict[str, str]:
        return {"to": self.to, "flow": self.flow, "kind": self.kind}


@dataclass(frozen=True, slots=True)
class Offer:
    sdp: str
    to: str


@dataclass(frozen=True)
class WebRtcSettings:
    max_calls: int
    connect_timeout_s: float
    ice_servers: tuple[RTCIceServer, ...] = ()
    # More ICE host addresses than aioice finds itself: loopback when the server listens there.
    host_addresses: tuple[str, ...] = ()
    gather_timeout_s: float = GATHER_TIMEOUT_S


def parse_offer(body: object) -> Offer:
    """The request body ``{"type": "offer", "sdp": ..., "to": ...}``, checked field by field."""
    if not isinstance(body, dict):
        raise WebRtcRefused(422, "the body must be a JSON object", field="sdp")
    if body.get("type", "offer") != "offer":
        raise WebRtcRefused(422, "type must be \"offer\"", field="type")
    sdp = body.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        raise WebRtcRefused(422, "sdp must be the browser's SDP offer (a string)", field="sdp")
    if len(sdp.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        raise WebRtcRefused(422, f"sdp is larger than {MAX_SDP_BYTES} bytes", field="sdp", reason="too_large")
    if not sdp.startswith("v=0"):
        raise WebRtcRefused(422, "sdp is not a session description (RFC 8866 starts with v=0)", field="sdp")
    if not _AUDIO_LINE.search(sdp):
        raise WebRtcRefused(422, "sdp offers no audio", field="sdp", reason="no_audio")
    to = body.get("to")
    if not isinstance(to, str) or not to or len(to) > MAX_TARGET_CHARS:
        raise WebRtcRefused(422, "to must be a number or flow from GET /api/webrtc/targets", field="to")
    return Offer(sdp, to)


class WebRtcCalls:
    def __init__(self, manager: CallManager, settings: WebRtcSettings, targets: Callable[[], list[Target]]) -> None:
        self.manager = manager
        self.settings = settings
        self.targets = targets
        self._peers: set[BrowserPeer] = set()  # every peer connection not yet closed, pending offers included

    @property
    def peer_count(self) -> int:
        return len(self._peers)

    def target(self, to: str) -> Target | None:
        return next((t for t in self.targets() if t.to == to), None)

    async def answer(self, offer: Offer, *, caller_name: str | None = None, remote: str | None = None
                     ) -> tuple[Call, str]:
        """Answer ``offer``: the call (ringing until the browser connects) and our SDP answer.
        Raises WebRtcRefused; nothing is left open when it does."""
        self._check_admission()
        target = self.target(offer.to)
        if target is None:
            raise WebRtcRefused(404, f"no such number or flow: {offer.to!r}", field="to")
        try:
            event_codec = telephone_event_codec(offer.sdp)
        except Exception as exc:  # noqa: BLE001 - aiortc's parser meets attacker input: any failure is a bad offer
            raise WebRtcRefused(422, f"sdp could not be parsed: {_short(exc)}", field="sdp") from None
        peer = BrowserPeer(RTCConfiguration(iceServers=list(self.settings.ice_servers)), on_closed=self._closed)
        self._peers.add(peer)
        try:
            return await self._answer(peer, offer, target, event_codec, caller_name, remote)
        except BaseException:
            peer.close()
            raise

    def _check_admission(self, holding: int = 0) -> None:
        """503 while no call may start, or while ``webrtc.max_calls`` peers (beside the ``holding``
        slots the caller already took) are open."""
        unavailable = self.manager.inbound.availability()
        if unavailable is not None:
            raise WebRtcRefused(503, f"this server takes no new calls: {unavailable.reason}",
                                reason=unavailable.reason, retry_after=unavailable.retry_after)
        if len(self._peers) - holding >= self.settings.max_calls:
            raise WebRtcRefused(503, f"{self.settings.max_calls} browser calls are up already", reason="full",
                                retry_after=FULL_RETRY_AFTER_S)

    async def _answer(self, peer: BrowserPeer, offer: Offer, target: Target, event_codec: Any,
                      caller_name: str | None, remote: str | None) -> tuple[Call, str]:
        manager, pc = self.manager, peer.pc
        audio = WebRtcAudio(peer.track.push,
                            inband_dtmf=inband_wanted(manager.media.policy.dtmf_inband, event_codec is not None))
        peer.audio = audio
        pc.on("track", peer.receive)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
        except OperationError as exc:
            raise WebRtcRefused(422, f"no usable audio codec in the offer: {_short(exc)}", field="sdp",
                                reason="not_acceptable") from None
        except Exception as exc:  # noqa: BLE001 - as above: a malformed offer, whatever aiortc raised
            raise WebRtcRefused(422, f"sdp is not a usable offer: {_short(exc)}", field="sdp") from None
        transceiver = next((t for t in pc.getTransceivers() if t.kind == "audio"), None)
        if transceiver is None:
            raise WebRtcRefused(422, "sdp offers no audio", field="sdp", reason="no_audio")
        pc.addTrack(peer.track)
        if pc.telephone_event_pt is not None:
            tap_payload_type(transceiver.receiver, pc.telephone_event_pt, audio.telephone_event)
        # Again: the awaits above let other calls in. Nothing awaits from here to the registration.
        self._check_admission(holding=1)
        leg = WebRtcLeg(close=peer.close, stream=audio, remote=remote)
        call = Call(direction=Direction.INBOUND, leg=leg, caller=BROWSER_CALLER, caller_name=caller_name,
                    called=offer.to, sip_headers={})
        audio.on_dtmf = manager.dtmf_handler(call)
        audio.hold_source = manager.media.hold_source(audio.sample_rate)
        manager.register(call)
        manager.set_status(call, CallStatus.RINGING)
        call.publish(ev.InviteReceived(source=f"webrtc {remote or 'unknown'}"))
        call.publish(ev.RouteChosen(route=target.flow))
        pc.on("connectionstatechange", lambda: self._state_changed(call, peer))
        try:
            answer = await pc.createAnswer()
            with extra_host_addresses(self.settings.host_addresses):
                await asyncio.wait_for(pc.setLocalDescription(answer), self.settings.gather_timeout_s)
        except TimeoutError:
            call.publish(ev.Rejected(reason="ICE gathering did not finish"))
            manager.finish(call, EndReason.FAILED)
            raise WebRtcRefused(503, "ICE gathering did not finish in time", reason="ice_gathering",
                                retry_after=FULL_RETRY_AFTER_S) from None
        except Exception as exc:  # noqa: BLE001 - aiortc refusing its own answer: this call fails, not the server
            log.warning("browser call %s: cannot answer: %s", call.id, exc)
            call.publish(ev.Rejected(reason=f"cannot answer: {_short(exc)}"))
            manager.finish(call, EndReason.FAILED)
            raise WebRtcRefused(422, f"cannot answer this offer: {_short(exc)}", field="sdp") from None
        if call.status is CallStatus.HANGUP:  # hung up (API, shutdown) while we gathered
            raise WebRtcRefused(409, "the call ended before it was answered", reason="ended")
        peer.spawn(self._connect_or_drop(call, peer), f"webrtc-connect-{call.id}")
        return call, pc.localDescription.sdp

    def _state_changed(self, call: Call, peer: BrowserPeer) -> None:
        state = peer.pc.connectionState
        log.debug("browser call %s: connection %s", call.id, state)
        if state == "connected" and not peer.connected.is_set():
            peer.connected.set()
            self._connected(call, peer)
        elif state in ("failed", "closed") and call.status is not CallStatus.HANGUP:
            # The browser hung up (DTLS close), left (consent lost, RFC 7675) or never got through.
            self.manager.finish(call, EndReason.CALLER_HANGUP if peer.connected.is_set() else EndReason.FAILED)

    def _connected(self, call: Call, peer: BrowserPeer) -> None:
        """ICE and DTLS are up: the browser's "ACK". Media, recording and the application start now."""
        manager, audio = self.manager, peer.audio
        if call.status is CallStatus.HANGUP or audio is None:
            return
        call.publish(ev.AckReceived())
        audio.start(time.monotonic())
        manager.media.start_recording(call, audio)
        manager.media.tick(audio)
        peer.start_stats()
        manager.set_status(call, CallStatus.ACTIVE)
        manager.run_app(call)

    async def _connect_or_drop(self, call: Call, peer: BrowserPeer) -> None:
        try:
            await asyncio.wait_for(peer.connected.wait(), self.settings.connect_timeout_s)
        except TimeoutError:
            if call.status is not CallStatus.HANGUP:
                log.info("browser call %s never connected; ended", call.id)
                call.publish(ev.EndDetail(detail="webrtc_connect_timeout"))
                self.manager.finish(call, EndReason.FAILED)

    def _closed(self, peer: BrowserPeer) -> None:
        self._peers.discard(peer)

    async def close(self) -> None:
        """Shutting down: every peer connection closed (the call manager ends the calls themselves)."""
        for peer in list(self._peers):
            peer.close()
        for peer in list(self._peers):
            await peer.wait_closed()


def _short(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:200]
