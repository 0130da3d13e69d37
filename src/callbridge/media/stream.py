"""One call's audio stream: the asyncio-side glue of the media engine.

Every 20 ms the shared :class:`~callbridge.media.pacer.MediaPacer` calls
:meth:`AudioStream.tick`, which

1. pulls one tick of caller audio from the jitter buffer (decoded, concealed),
   hands it to the in-band DTMF detector, the recorder and any listeners;
2. reads one tick from the playback queue (or music on hold), encodes it and
   sends it, unless an RFC 4733 event is going out in its place;
3. sends an RTCP report when one is due (RFC 3550 §6.2, about every 5 s).

Packets are received on the socket's callback and only buffered there, so the
expensive work happens on the pacer's even schedule.
"""

from __future__ import annotations

import logging
import random
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..rtp.jitter import CN_PAYLOAD_TYPE
from ..rtp.packet import RTCP_SECOND_OCTET_MAX, RTCP_SECOND_OCTET_MIN, RTP_HEADER_SIZE, RtpError, RtpPacket
from ..rtp.rtcp import RtcpError, parse_compound
from ..rtp.socket import RtpSocket
from ..rtp.stats import RtcpScheduler
from .callaudio import AudioListener, CallAudio
from .codecs import codec_for
from .codecs.base import AudioCodec, PcmArray
from .dtmf import DtmfEvent
from .dtmf.rfc4733 import EventPacket, dial_string_packets
from .framecache import STATELESS_CODECS, shared_payloads
from .pacer import FRAME_MS
from .receive import AudioReceiver
from .recorder import CallRecorder
from .sources import Source

log = logging.getLogger("callbridge.media")

SEQUENCE_MODULO = 1 << 16
TIMESTAMP_MODULO = 1 << 32
_HEADER = struct.Struct("!BBHII")
_PLAIN_FIRST_OCTET = 0x80  # V=2, no padding, extension or CSRCs
_MARKER = 0x80
_PT_MASK = 0x7F

__all__ = ["AudioListener", "AudioStream", "StreamStats"]


@dataclass(slots=True)
class StreamStats:
    packets_sent: int = 0
    packets_received: int = 0
    bad_packets: int = 0
    unknown_payload: int = 0
    octets_sent: int = 0
    rtcp_sent: int = 0
    rtcp_received: int = 0
    dtmf_sent: int = 0


@dataclass(eq=False)
class AudioStream(CallAudio):
    socket: RtpSocket
    codec_name: str
    payload_type: int
    telephone_event_pt: int | None = None
    ptime_ms: int = FRAME_MS
    cn_payload_type: int | None = CN_PAYLOAD_TYPE
    inband_dtmf: bool = False
    recorder: CallRecorder | None = None
    hold_source: Source | None = None
    cname: str = "callbridge"
    on_dtmf: Callable[[DtmfEvent], None] | None = None
    stats: StreamStats = field(default_factory=StreamStats)
    sending: bool = True
    hold: str | None = None  # None, "local" (we hold the caller) or "remote" (they hold us)

    def __post_init__(self) -> None:
        self.codec: AudioCodec = codec_for(self.codec_name)()
        # RFC 3550 §5.1: random initial sequence, timestamp and SSRC.
        self.ssrc = random.getrandbits(32)
        self._sequence = random.getrandbits(16)
        self._timestamp = random.getrandbits(32)
        self._marker = True  # first packet of a talkspurt (RFC 3551 §4.1)
        self._samples = self.codec.sample_rate * FRAME_MS // 1000
        self._ticks = self.codec.clock_rate * FRAME_MS // 1000
        self._silence = np.zeros(self._samples, dtype=np.int16)
        self._silent_payload = self.codec.encode(self._silence) if self.codec_name in STATELESS_CODECS else None
        # Prompts, tones and hold music are shared buffers: encoded once for every call (None: G.722).
        self._payloads = shared_payloads(self.codec_name, self._samples,
                                         codec_for(self.codec_name, self.codec.clock_rate))
        self.receiver = AudioReceiver(self.codec, ptime_ms=self.ptime_ms, cn_payload_type=self.cn_payload_type)
        self._init_audio(self.codec.sample_rate, inband_dtmf=self.inband_dtmf, dtmf_clock_rate=self.codec.clock_rate)
        self.rtcp = RtcpScheduler(self.ssrc, self.cname, self.codec.clock_rate)
        self._dtmf_out: deque[EventPacket] = deque()
        self._dtmf_start = 0
        self._remote_ssrc: int | None = None
        self._last_sent: tuple[int, float] | None = None
        self._reported_packets = 0
        self.local_port = self.socket.port  # kept for the record after the port is released
        self.socket.on_rtp = self._rtp_received
        self.socket.on_rtcp = self._rtcp_received
        # Only what the SDP negotiated may latch the socket or reach the call.
        self.socket.set_payload_types((self.payload_type, self.cn_payload_type), (self.telephone_event_pt,))

    def start(self, now: float) -> None:
        self.rtcp.start(now)

    # -- what the application uses (the rest: CallAudio) -----------------------------------

    def send_dtmf(self, digits: str, duration_ms: float = 100.0) -> None:
        """RFC 4733 events when the peer took telephone-event, tones in the audio otherwise."""
        if self.telephone_event_pt is not None:
            self._dtmf_start = self._timestamp
            self._dtmf_out.extend(dial_string_packets(digits, self._timestamp, self.codec.clock_rate, duration_ms))
        else:
            self._send_dtmf_tones(digits, duration_ms)

    def confirm_remote(self) -> None:
        """The SDP's address is the peer's own (the ACK came, or it answered our INVITE): media may go there."""
        self.socket.confirm_remote()

    def set_hold(self, hold: str | None) -> None:
        self.hold = hold
        self.sending = hold != "remote"
        self._marker = True

    # -- the per-tick work -------------------------------------------------------------------

    def tick(self, now: float) -> None:
        heard = self.receiver.read(now)
        self._hear(heard, now)
        said = self._silence
        # Nothing plays to an address nobody confirmed (media reflection); the queue waits for the ACK.
        if self.sending and self.socket.can_send:
            if self._dtmf_out and self._send_due_events(now):
                pass  # the event replaces this tick's audio (RFC 4733 §2.5.1.1)
            else:
                said = self._send_audio(now)
        self._timestamp = (self._timestamp + self._ticks) % TIMESTAMP_MODULO
        if self.recorder is not None:
            self.recorder.write(heard, said)
        next_due = self.rtcp.next_due
        if next_due is not None and now >= next_due:
            self._sync_sender_stats()
            self.socket.send_rtcp(self.rtcp.build_report(now, time.time()))
            self.stats.rtcp_sent += 1

    def _sync_sender_stats(self) -> None:
        # Counted per packet in plain attributes; RTCP only needs them every ~5 s.
        sender, stats = self.rtcp.sender, self.stats
        sent_since = stats.packets_sent - self._reported_packets
        if sent_since and self._last_sent is not None:
            self._reported_packets = stats.packets_sent
            sender.set_totals(stats.packets_sent, stats.octets_sent, *self._last_sent)

    def _send_audio(self, now: float) -> PcmArray:
        pcm, source = self._next_said(self._samples)
        if pcm is None:
            pcm = self._silence
            payload = self._silent_payload or self.codec.encode(pcm)
        else:
            shared = None
            if self._payloads is not None and source is not None:
                encoded = getattr(source, "encoded", None)  # sources over shared buffers (EncodedSource)
                if encoded is not None:
                    shared = encoded(self._payloads)
            if shared is not None:
                payload = shared
            else:
                if len(pcm) < self._samples:
                    pcm = np.concatenate((pcm, self._silence[len(pcm):]))
                payload = self.codec.encode(pcm)
        self._send(self.payload_type, self._timestamp, payload, now)
        return pcm

    def _send_due_events(self, now: float) -> bool:
        event_pt = self.telephone_event_pt
        assert event_pt is not None  # send_dtmf queues events only when the peer took telephone-event
        elapsed = (self._timestamp - self._dtmf_start) % TIMESTAMP_MODULO
        queue = self._dtmf_out
        sent = False
        while queue and queue[0].send_offset <= elapsed + self._ticks:
            packet = queue.popleft()
            self._marker = packet.marker
            self._send(event_pt, packet.timestamp, packet.payload, now)
            self.stats.dtmf_sent += 1
            sent = True
        if sent and not queue:
            self._marker = True  # audio after the event starts a new talkspurt
        return sent

    def _send(self, payload_type: int, timestamp: int, payload: bytes, now: float) -> None:
        header = _HEADER.pack(_PLAIN_FIRST_OCTET, payload_type | (_MARKER if self._marker else 0),
                              self._sequence, timestamp, self.ssrc)
        self._marker = False
        self._sequence = (self._sequence + 1) % SEQUENCE_MODULO
        self.socket.send(header + payload)
        stats = self.stats
        stats.packets_sent += 1
        stats.octets_sent += len(payload)
        self._last_sent = (timestamp, now)  # the SR's RTP/NTP pair is taken from this (RFC 3550 §6.4.1)

    # -- receiving ------------------------------------------------------------------------------

    def _rtp_received(self, data: bytes, addr) -> None:
        if len(data) < RTP_HEADER_SIZE:
            self.stats.bad_packets += 1
            return
        b0, b1, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        if RTCP_SECOND_OCTET_MIN <= b1 <= RTCP_SECOND_OCTET_MAX:  # RTCP muxed on the RTP port (RFC 5761 §4)
            self._rtcp_received(data, addr)
            return
        if b0 == _PLAIN_FIRST_OCTET:
            payload = data[RTP_HEADER_SIZE:]
        else:
            try:  # CSRCs, header extension or padding: the full parser strips them
                packet = RtpPacket.parse(data, keep_extension=False)
            except RtpError:
                self.stats.bad_packets += 1
                return
            payload = packet.payload
        now = time.monotonic()
        self.stats.packets_received += 1
        payload_type = b1 & _PT_MASK
        marker = b1 >= _MARKER
        if payload_type == self.payload_type or payload_type == self.cn_payload_type:
            self.receiver.push(sequence, timestamp, payload, now, marker=marker,
                               payload_type=payload_type, ssrc=ssrc)
        elif payload_type == self.telephone_event_pt:
            self.dtmf.on_telephone_event(timestamp, marker, payload, now, ssrc)
        else:
            self.stats.unknown_payload += 1
            return
        self._remote_ssrc = ssrc
        self.rtcp.on_rtp_received(ssrc, sequence, timestamp, now, len(payload))

    def _rtcp_received(self, data: bytes, addr) -> None:
        try:
            packets = parse_compound(data)
        except (RtcpError, RtpError, ValueError):
            self.stats.bad_packets += 1
            return
        self.stats.rtcp_received += 1
        self.rtcp.on_rtcp(packets, time.monotonic(), time.time())

    # -- ending -----------------------------------------------------------------------------------

    def close(self, now: float | None = None) -> None:
        """Say goodbye in RTCP (§6.6), release the ports, finish the recording."""
        if self.closed:
            return
        self.closed = True
        now = time.monotonic() if now is None else now
        self._sync_sender_stats()
        try:
            self.socket.send_rtcp(self.rtcp.build_bye(now, time.time()))
        except OSError:
            pass
        self.socket.close()
        self._close_audio(now)

    def media_record(self) -> dict:
        """What the call record shows about this stream."""
        source = self.rtcp.sources.get(self._remote_ssrc) if self._remote_ssrc is not None else None
        jitter = self.receiver.jitter
        return {
            "codec": self.codec_name,
            "payload_type": self.payload_type,
            "telephone_event_pt": self.telephone_event_pt,
            "local_port": self.local_port,
            "remote": f"{self.socket.remote[0]}:{self.socket.remote[1]}" if self.socket.remote else None,
            "latched": self.socket.latched,
            "remote_confirmed": self.socket.confirmed,
            "packets_sent": self.stats.packets_sent,
            "packets_received": self.stats.packets_received,
            "packets_lost": max(0, source.lost) if source is not None else 0,
            "jitter_ms": round(source.jitter / self.codec.clock_rate * 1000, 2) if source is not None else 0.0,
            "rtt_ms": round(self.rtcp.rtt * 1000, 1) if self.rtcp.rtt is not None else None,
            "rtcp_sent": self.stats.rtcp_sent,
            "rtcp_received": self.stats.rtcp_received,
            "bad_packets": self.stats.bad_packets,
            "dropped_packets": self.socket.latch.counters.dropped,
            "drops": self.socket.latch.counters.as_dict(),
            # SRTP (RFC 3711) counters when the call is encrypted, else None
            "srtp": self.socket.srtp.counters.as_dict() | {"suite": self.socket.srtp.local.suite}
            if self.socket.srtp is not None else None,
            "concealed_frames": self.receiver.frames_concealed,
            "jitter_buffer_ms": round(jitter.target_delay_ms, 1),
            "dtmf_sent": self.stats.dtmf_sent,
            "hold": self.hold,
            "dtmf_inband": self.dtmf.inband_active,
        }
