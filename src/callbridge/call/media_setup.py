"""A call's media: RTP ports, the audio stream, recording, music on hold and SDP re-offers.

The call manager decides *when* (answered, confirmed, ended, on hold); this
module knows *how*: which port pair, which codec, which direction, which keys.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..media.dtmf import DtmfEvent
from ..media.dtmf.collector import InbandMode, inband_wanted
from ..media.callaudio import CallAudio
from ..media.pacer import MediaPacer
from ..media.recorder import CallRecorder
from ..media.sources import LoopSource, Source, load_wav_source
from ..media.stream import AudioStream
from ..media.webrtc_audio import WebRtcAudio
from ..media.tone import hold_music
from ..media.wavfile import JobRunner
from ..rtp.ports import PortAllocator, PortsExhaustedError
from ..rtp.socket import RtpSocket
from ..sip import events as sip_events
from ..sip.sdp import Answer, SdpError, SessionDescription, apply_answer, build_offer, negotiate_answer, parse_sdp, \
    static_codec
from . import events as ev
from . import srtp_policy
from .call import Call, CallStatus, Direction

log = logging.getLogger("callbridge.call")

# A flood of calls while the port range is used up would otherwise log one warning per refused call.
NO_MEDIA_PORTS_LOG_INTERVAL_S = 10.0
# The stream rates our codecs decode to (G.711 and the like at 8 kHz, G.722 at 16 kHz).
HOLD_MUSIC_RATES = (8000, 16000)


class NoMediaPortsError(OSError):
    """No RTP/RTCP port pair could be opened for a call: the range is used up, or nothing in it binds."""


@dataclass
class MediaPolicy:
    """How calls' media is set up: codecs, DTMF detection, recording, music on hold."""

    codecs: list[str]
    dtmf_inband: InbandMode = "auto"
    recordings_dir: Path | None = None  # None: do not record
    recording_io: JobRunner | None = None  # runs recordings' disk writes off the event loop
    music_on_hold: Path | None = None  # None: the built-in hold music
    srtp: str = srtp_policy.AUTO  # for calls matching no trunk, and trunks that do not say (call/srtp_policy.py)


class CallMedia:
    def __init__(self, *, media_host: str, ports: PortAllocator, pacer: MediaPacer, policy: MediaPolicy) -> None:
        self.media_host = media_host
        self.ports = ports
        self.pacer = pacer
        self.policy = policy
        self.codecs = policy.codecs
        # What our INVITEs offer: the configured codecs, in their order, by static payload type.
        self.offer_codecs = [static_codec(name) for name in policy.codecs]
        self._hold_music: dict[int, LoopSource] = {}  # by sample rate: read the file once, not per call
        self._hold_loading: set[int] = set()
        self._pacer_handles: dict[int, int] = {}
        self._sdp_version = 1
        self._no_ports_logged_at = -NO_MEDIA_PORTS_LOG_INTERVAL_S
        self._no_ports_unlogged = 0

    # -- ports and SDP -----------------------------------------------------------------------------

    async def open_rtp(self) -> RtpSocket:
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

    def _warn_no_ports(self, exc: Exception) -> None:
        self._no_ports_unlogged += 1
        now = time.monotonic()
        if now - self._no_ports_logged_at >= NO_MEDIA_PORTS_LOG_INTERVAL_S:
            log.warning("no RTP port pair free (%s): %d call(s) refused since the last warning", exc,
                        self._no_ports_unlogged)
            self._no_ports_logged_at, self._no_ports_unlogged = now, 0

    def next_sdp_version(self) -> int:
        self._sdp_version += 1
        return self._sdp_version

    def answer_offer(self, offer: SessionDescription, socket: RtpSocket, srtp_mode: str) -> Answer:
        """Our answer to an initial offer (RFC 3264 §6); NotAcceptable when nothing matches."""
        protos, usable = srtp_policy.answer_terms(srtp_mode)
        answer = negotiate_answer(offer, local_address=self.media_host, local_port=socket.port or 0,
                                  codec_preference=self.codecs, session_id=int(time.time()),
                                  session_version=self.next_sdp_version(), accept_protos=protos, usable=usable)
        socket.srtp = srtp_policy.secure_answer(offer, answer, srtp_mode)
        return answer

    def initial_offer(self, socket: RtpSocket, proto: str, keys: list) -> SessionDescription:
        return build_offer(self.media_host, socket.port or 0, self.offer_codecs, session_id=int(time.time()),
                           session_version=self.next_sdp_version(), proto=proto, crypto=[str(key) for key in keys])

    # -- the stream ------------------------------------------------------------------------------

    def open_stream(self, call: Call, socket: RtpSocket, answer: Answer,
                    on_dtmf: Callable[[DtmfEvent], None]) -> AudioStream:
        socket.set_remote(answer.remote_address, answer.remote_port, answer.remote_rtcp_port)
        codec = answer.codec
        stream = AudioStream(
            socket, codec.name, codec.payload_type, telephone_event_pt=answer.telephone_event_pt,
            ptime_ms=answer.ptime or 20, cn_payload_type=answer.comfort_noise_pt or 13,
            inband_dtmf=inband_wanted(self.policy.dtmf_inband, answer.telephone_event_pt is not None),
            cname=f"callbridge@{self.media_host}", on_dtmf=on_dtmf)
        if call.direction is not Direction.INBOUND:
            self.start_recording(call, stream)  # our 200 came back and we ACKed it: confirmed
        stream.hold_source = self.hold_source(stream.sample_rate)
        if not answer.direction.startswith("send"):
            stream.set_hold("remote")
        return stream

    def start_recording(self, call: Call, stream: CallAudio) -> None:
        """Record from the moment the call is confirmed (an inbound call's ACK), not from the INVITE:
        a flood of INVITEs that are never ACKed then leaves no files behind."""
        if self.policy.recordings_dir is None or stream.recorder is not None:
            return
        try:
            recorder = CallRecorder(self.policy.recordings_dir / f"{call.id}.wav", stream.sample_rate,
                                    io=self.policy.recording_io)
        except OSError as exc:
            # A full or read-only disk loses the recording, never the call.
            log.error("cannot record call %s: %s", call.id, exc)
            return
        stream.recorder = recorder
        # With a job runner the file opens off the loop: the recording exists once that open succeeded.
        opened = asyncio.wrap_future(recorder.opened)
        opened.add_done_callback(lambda done: self._recording_opened(call, recorder, done))

    @staticmethod
    def _recording_opened(call: Call, recorder: CallRecorder, opened: asyncio.Future[None]) -> None:
        if opened.cancelled() or opened.exception() is not None:
            return  # logged where the open failed; the call goes on unrecorded
        if call.status is not CallStatus.HANGUP:
            call.publish(ev.RecordingStarted(path=str(recorder.path)))

    async def preload_hold_music(self, sample_rates: tuple[int, ...] = HOLD_MUSIC_RATES) -> None:
        """Decode the music on hold for each rate in the files pool, before any call needs it."""
        for rate in sample_rates:
            if rate not in self._hold_music:
                self._hold_music[rate] = await self._load_hold_music(rate)

    def hold_source(self, sample_rate: int) -> Source:
        cached = self._hold_music.get(sample_rate)
        if cached is None:
            # A rate nobody preloaded: the built-in music now (cheap to make), the file from the next call on.
            cached = LoopSource(hold_music(sample_rate), sample_rate, label="built-in hold music")
            if self.policy.music_on_hold is None:
                self._hold_music[sample_rate] = cached
            elif sample_rate not in self._hold_loading:
                self._hold_loading.add(sample_rate)
                task = asyncio.get_running_loop().create_task(self.preload_hold_music((sample_rate,)))
                task.add_done_callback(lambda _t: self._hold_loading.discard(sample_rate))
        # Each call gets its own play position over the shared samples.
        return LoopSource(cached.pcm, sample_rate, label=cached.label)

    async def _load_hold_music(self, sample_rate: int) -> LoopSource:
        path = self.policy.music_on_hold
        if path is not None:
            try:
                music = await load_wav_source(path, sample_rate)
                return LoopSource(music.pcm, sample_rate, label=music.label)
            except (OSError, ValueError) as exc:
                # Checked at startup; if the file went away since, callers still hear something.
                log.warning("music on hold %s unusable (%s); using the built-in music", path, exc)
        return LoopSource(hold_music(sample_rate), sample_rate, label="built-in hold music")

    def start(self, call: Call) -> None:
        stream = call.leg.stream
        if stream is None:
            return
        stream.start(time.monotonic())
        if call.direction is Direction.INBOUND and call.leg.awaiting_ack:
            # Nothing may be sent before the ACK anyway (media reflection), and a flood of INVITEs
            # that are never ACKed must not cost a tick each: the pacer takes the stream at the ACK.
            return
        self.tick(stream)

    def tick(self, stream: AudioStream | WebRtcAudio) -> None:
        if id(stream) not in self._pacer_handles:
            self._pacer_handles[id(stream)] = self.pacer.add(stream.tick)

    def stop(self, call: Call) -> None:
        """Close the call's media; publishes its statistics and, if it recorded, the finished file."""
        stream = call.leg.stream
        if stream is not None:
            handle = self._pacer_handles.pop(id(stream), None)
            if handle is not None:
                self.pacer.remove(handle)
            stream.close()
            call.publish(ev.MediaStats(stats=stream.media_record()))
            if call.recording is not None:
                call.publish(ev.RecordingReady(path=call.recording, url=f"/api/calls/{call.id}/recording"))
        call.leg.release()

    # -- re-offers: hold, resume, the peer's re-INVITE ------------------------------------------------

    def answer_reoffer(self, call: Call, event: sip_events.OfferReceived) -> bytes | None:
        """Our answer to the peer's re-offer (applied to the stream), or None to refuse it with 488."""
        leg = call.leg.sip()  # re-offers come in SIP dialogs only
        stream = leg.stream
        context = stream.socket.srtp if stream is not None else None
        protos, usable = srtp_policy.reanswer_terms(context)
        try:
            offer = parse_sdp(event.sdp)
            answer = negotiate_answer(offer, local_address=self.media_host,
                                      local_port=stream.socket.port if stream and stream.socket.port else 0,
                                      codec_preference=self.codecs,
                                      session_id=leg.sdp_session_id or int(call.created_at),
                                      session_version=self.next_sdp_version(),
                                      local_direction="sendonly" if stream and stream.hold == "local" else "sendrecv",
                                      accept_protos=protos, usable=usable)
            srtp_policy.secure_reanswer(context, offer, answer)
        except (SdpError, srtp_policy.SrtpRefused):
            return None
        if stream is not None:
            # Hold (RFC 3264 §8.4): stop sending when the peer will not receive.
            held = answer.direction not in ("sendrecv", "sendonly")
            if held:
                stream.set_hold("remote")
            elif stream.hold == "remote":
                stream.set_hold(None)
            stream.socket.set_remote(answer.remote_address, answer.remote_port, answer.remote_rtcp_port)
        call.publish(ev.Reoffered(method=event.method, direction=answer.direction))
        return answer.sdp.encode()

    def reoffer(self, call: Call, hold: str | None, direction: str) -> bytes:
        """Our re-offer to hold ("local", sendonly) or resume (None, sendrecv); the SDP to send."""
        leg = call.leg.sip()  # ValueError (NotSipError) for a browser call
        stream = leg.stream
        if stream is None:
            raise ValueError("the call has no active media")
        stream.set_hold(hold)
        codecs = [(stream.codec_name, stream.payload_type, stream.codec.clock_rate)]
        proto, crypto = srtp_policy.reoffer_crypto(stream.socket.srtp)  # same keys (RFC 4568 §7.1.4)
        offer = build_offer(self.media_host, stream.socket.port or 0, codecs,
                            session_id=leg.sdp_session_id or int(call.created_at),
                            session_version=self.next_sdp_version(),
                            telephone_event_pt=stream.telephone_event_pt, direction=direction,
                            proto=proto, crypto=crypto)
        leg.offer = offer
        call.publish(ev.HoldStarted(direction=direction) if hold else ev.HoldEnded(direction=direction))
        return offer.encode()

    def apply_reanswer(self, call: Call, event: sip_events.AnswerReceived) -> None:
        leg = call.leg.sip()
        stream = leg.stream
        if stream is None or leg.offer is None:
            return
        try:
            answer = apply_answer(leg.offer, parse_sdp(event.sdp))
        except SdpError as exc:
            log.warning("bad SDP in re-INVITE answer on %s: %s", call.sip_call_id, exc)
            return
        srtp_policy.reanswered(stream.socket.srtp, answer)
        stream.socket.set_remote(answer.remote_address, answer.remote_port, answer.remote_rtcp_port)
        call.publish(ev.Reanswered(direction=answer.direction))
