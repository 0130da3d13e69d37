"""aiortc's side of a browser call's audio: the track we send, the pump for what we receive, the statistics.

Pacing is ours: :class:`PacedAudioTrack` yields the frames :class:`~callbridge.media.webrtc_audio.WebRtcAudio`
hands it every 20 ms from the shared pacer; aiortc's sender just awaits them and encodes Opus.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from ...media.codecs.base import PcmArray
from ...media.webrtc_audio import CALL_RATE, WebRtcAudio

log = logging.getLogger("callbridge.webrtc")

# Frames waiting for aiortc's encoder. It takes them as fast as they come once connected; before
# that (ICE) they pile up: keep the newest only, so the call does not start 100s of ms behind.
MAX_QUEUED_FRAMES = 3
STATS_INTERVAL_S = 1.0  # aiortc's getStats walks every transport: often enough for a record, off the tick
OPUS_CLOCK_RATE = 48_000  # RTP clock of Opus (RFC 7587 §4.1), the unit of aiortc's jitter figure


class PacedAudioTrack(MediaStreamTrack):
    """Our audio to the browser: 20 ms mono frames at the call rate, in the order the pacer made them."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._frames: asyncio.Queue[av.AudioFrame] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self._pts = 0
        self._time_base = fractions.Fraction(1, CALL_RATE)
        self.dropped = 0

    def push(self, pcm: PcmArray) -> None:
        if self.readyState != "live":
            return
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = CALL_RATE
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += len(pcm)
        if self._frames.full():
            self._frames.get_nowait()
            self.dropped += 1
        self._frames.put_nowait(frame)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        return await self._frames.get()


async def pump_received(track: MediaStreamTrack, audio: WebRtcAudio) -> None:
    """Feed every frame aiortc decodes from the browser into ``audio`` until the track ends."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not isinstance(frame, av.AudioFrame):
            continue
        samples: np.ndarray = frame.to_ndarray()  # packed s16: one row, channels interleaved
        if samples.dtype != np.int16:  # aiortc's decoders all yield s16; anything else is not audio we know
            continue
        audio.receive(samples, frame.sample_rate, len(frame.layout.channels))


async def refresh_stats(pc: RTCPeerConnection, audio: WebRtcAudio, telephone_event_pt: int | None) -> None:
    """Copy aiortc's statistics into ``audio.transport_stats`` every second (the record is at most that old)."""
    while True:
        await asyncio.sleep(STATS_INTERVAL_S)
        audio.transport_stats = await read_stats(pc, telephone_event_pt)


async def read_stats(pc: RTCPeerConnection, telephone_event_pt: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"telephone_event_pt": telephone_event_pt}
    report = await pc.getStats()
    for stat in report.values():
        kind = getattr(stat, "type", None)
        if kind == "inbound-rtp":
            out["packets_received"] = stat.packetsReceived
            out["packets_lost"] = stat.packetsLost
            out["jitter_ms"] = round(stat.jitter / OPUS_CLOCK_RATE * 1000, 2)
        elif kind == "outbound-rtp":
            out["packets_sent"] = stat.packetsSent
            out["bytes_sent"] = stat.bytesSent
        elif kind == "remote-inbound-rtp" and stat.roundTripTime is not None:
            out["rtt_ms"] = round(stat.roundTripTime * 1000, 1)
        elif kind == "transport":
            out["bytes_received"] = stat.bytesReceived
    return out
