"""One call's audio stream: encode and send 20 ms frames, receive and count.

Sources are polled by the shared :class:`~callbridge.media.pacer.MediaPacer`;
the RTP header state (SSRC, sequence, timestamp) lives here.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..rtp.packet import RtpError, RtpPacket, is_rtcp
from ..rtp.socket import RtpSocket
from .codecs import codec_for
from .codecs.base import AudioCodec, PcmArray
from .pacer import FRAME_MS

SEQUENCE_MODULO = 1 << 16
TIMESTAMP_MODULO = 1 << 32


class Source:
    """What a stream plays: ``read(samples)`` returns PCM or None when done."""

    def read(self, samples: int) -> PcmArray | None:  # pragma: no cover - protocol
        raise NotImplementedError


@dataclass(slots=True)
class StreamStats:
    packets_sent: int = 0
    packets_received: int = 0
    bad_packets: int = 0
    last_received_pt: int | None = None


@dataclass(eq=False)
class AudioStream:
    socket: RtpSocket
    codec_name: str
    payload_type: int
    telephone_event_pt: int | None = None
    ptime_ms: int = FRAME_MS
    sources: list = field(default_factory=list)
    stats: StreamStats = field(default_factory=StreamStats)
    on_packet: Callable[[RtpPacket], None] | None = None
    sending: bool = True

    def __post_init__(self) -> None:
        self.codec: AudioCodec = codec_for(self.codec_name)()
        # RFC 3550 §5.1: random initial sequence, timestamp and SSRC.
        self.ssrc = random.getrandbits(32)
        self._sequence = random.getrandbits(16)
        self._timestamp = random.getrandbits(32)
        self._marker = True  # first packet of a talkspurt (RFC 3551 §4.1)
        self._samples = self.codec.sample_rate * self.ptime_ms // 1000
        self._ticks = self.codec.clock_rate * self.ptime_ms // 1000
        self._silence = np.zeros(self._samples, dtype=np.int16)
        self.socket.on_rtp = self._received

    def play(self, source: Source) -> None:
        self.sources.append(source)

    def flush(self) -> None:
        """Stop everything queued at once (barge-in)."""
        self.sources.clear()

    def tick(self) -> None:
        """Called once per frame by the pacer: send one packet."""
        if not self.sending:
            return
        pcm = None
        while self.sources and pcm is None:
            pcm = self.sources[0].read(self._samples)
            if pcm is None:
                self.sources.pop(0)
        if pcm is None:
            pcm = self._silence
        elif len(pcm) < self._samples:
            pcm = np.concatenate([pcm, self._silence[len(pcm):]])
        packet = RtpPacket(payload_type=self.payload_type, sequence=self._sequence, timestamp=self._timestamp,
                           ssrc=self.ssrc, payload=self.codec.encode(pcm), marker=self._marker)
        self._marker = False
        self._sequence = (self._sequence + 1) % SEQUENCE_MODULO
        self._timestamp = (self._timestamp + self._ticks) % TIMESTAMP_MODULO
        self.socket.send(packet.serialize())
        self.stats.packets_sent += 1

    def _received(self, data: bytes, addr) -> None:
        if is_rtcp(data):
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            self.stats.bad_packets += 1
            return
        self.stats.packets_received += 1
        self.stats.last_received_pt = packet.payload_type
        if self.on_packet is not None:
            self.on_packet(packet)
