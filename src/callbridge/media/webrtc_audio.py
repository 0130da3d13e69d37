"""A browser call's audio on our side of aiortc: wideband PCM in, wideband PCM out, paced by our pacer.

aiortc decodes the caller's Opus itself (48 kHz, stereo s16). :meth:`WebRtcAudio.receive` downmixes
and resamples each decoded frame to :data:`CALL_RATE` into a small bounded FIFO; every 20 ms
:meth:`WebRtcAudio.tick` (the shared :class:`~callbridge.media.pacer.MediaPacer`, as for SIP streams)
takes exactly one frame from it (silence when it is empty), hands it to the DTMF detector,
listeners and recorder, and gives one frame of ours (prompts, agent, hold music) to ``send``,
which aiortc encodes. Nothing here imports aiortc: call/webrtc/media.py does the glue.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .callaudio import CallAudio
from .codecs.base import PcmArray
from .dtmf import DtmfEvent
from .dtmf.rfc4733 import DEFAULT_CLOCK_RATE
from .pacer import FRAME_MS
from .recorder import CallRecorder
from .resample import StreamResampler
from .sources import Source, take_samples

CALL_RATE = 16_000  # wideband: what the IVR, agent and recording run at for a browser call
FRAME_SAMPLES = CALL_RATE * FRAME_MS // 1000
# Caller audio waiting for the pacer. aiortc hands frames over as they are decoded, so a network
# burst arrives at once: beyond this the oldest goes, so a burst can neither grow memory nor delay.
MAX_BUFFERED_MS = 120
MAX_BUFFERED_SAMPLES = CALL_RATE * MAX_BUFFERED_MS // 1000
CODEC_NAME = "opus"


class SampleFifo:
    """A bounded queue of mono int16 samples; pushing past ``capacity`` drops the oldest."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._chunks: deque[PcmArray] = deque()
        self._size = 0
        self.dropped = 0  # samples thrown away to keep within capacity

    def __len__(self) -> int:
        return self._size

    def push(self, pcm: PcmArray) -> None:
        if len(pcm) == 0:
            return
        if len(pcm) >= self.capacity:
            self.dropped += self._size + len(pcm) - self.capacity
            self._chunks.clear()
            pcm = pcm[-self.capacity:]
            self._size = 0
        self._chunks.append(pcm)
        self._size += len(pcm)
        excess = self._size - self.capacity
        while excess > 0:
            head = self._chunks[0]
            if len(head) <= excess:
                self._chunks.popleft()
                cut = len(head)
            else:
                self._chunks[0] = head[excess:]
                cut = excess
            self._size -= cut
            self.dropped += cut
            excess -= cut

    def read(self, count: int) -> PcmArray | None:
        """Exactly ``count`` samples, or None when fewer are buffered (they stay for the next read)."""
        if self._size < count:
            return None
        self._size -= count
        return take_samples(self._chunks, count)


def downmix(interleaved: NDArray[np.int16], channels: int) -> PcmArray:
    """Interleaved int16 frames to mono (the channels' mean)."""
    if channels == 1:
        return np.ascontiguousarray(interleaved.reshape(-1), dtype=np.int16)
    frames = interleaved.reshape(-1, channels).astype(np.int32)
    return (frames.sum(axis=1) // channels).astype(np.int16)


@dataclass(slots=True)
class WebRtcCounters:
    frames_received: int = 0  # decoded frames from aiortc
    frames_sent: int = 0  # frames handed to aiortc's encoder
    underruns: int = 0  # ticks with no caller audio buffered (silence recorded in its place)
    dtmf_packets: int = 0  # telephone-event packets taken out before aiortc's decoder


class WebRtcAudio(CallAudio):
    """The :class:`CallAudio` of a browser call. ``send`` takes each 20 ms frame of ours."""

    codec_name = CODEC_NAME
    telephone_event_pt: int | None = None  # we never send RFC 4733 to a browser: keys go as tones

    def __init__(self, send: Callable[[PcmArray], None], *, inband_dtmf: bool,
                 on_dtmf: Callable[[DtmfEvent], None] | None = None, recorder: CallRecorder | None = None,
                 hold_source: Source | None = None) -> None:
        self.send = send
        self.on_dtmf = on_dtmf
        self.recorder = recorder
        self.hold_source = hold_source
        self.hold = None
        self._init_audio(CALL_RATE, inband_dtmf=inband_dtmf, dtmf_clock_rate=DEFAULT_CLOCK_RATE)
        self.codec = _RateInfo(CALL_RATE)  # what SIP streams' codec says: the rate prompts render at
        self.fifo = SampleFifo(MAX_BUFFERED_SAMPLES)
        self.counters = WebRtcCounters()
        self.transport_stats: dict[str, Any] = {}  # the peer connection's report, refreshed off the hot path
        self._resamplers: dict[int, StreamResampler] = {}
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.started_at: float | None = None

    # -- the caller's audio, as aiortc decodes it ---------------------------------------------

    def receive(self, interleaved: NDArray[np.int16], sample_rate: int, channels: int) -> None:
        """One decoded frame from the browser (any rate and channel count aiortc yields)."""
        if self.closed:
            return
        self.counters.frames_received += 1
        mono = downmix(interleaved, channels)
        resampler = self._resamplers.get(sample_rate)
        if resampler is None:
            resampler = self._resamplers[sample_rate] = StreamResampler(sample_rate, CALL_RATE)
        self.fifo.push(resampler.process(mono))

    def telephone_event(self, timestamp: int, marker: bool, payload: bytes, ssrc: int | None = None) -> None:
        """An RFC 4733 packet the tap took out before aiortc's decoder (RFC 4733 §2.5.2: the collector
        reports each event once, however many times its end packet is repeated)."""
        if self.closed:
            return
        self.counters.dtmf_packets += 1
        self.dtmf.on_telephone_event(timestamp, marker, payload, time.monotonic(), ssrc)

    # -- what the pacer drives ---------------------------------------------------------------------

    def start(self, now: float) -> None:
        self.started_at = now

    def tick(self, now: float) -> None:
        heard = self.fifo.read(FRAME_SAMPLES)
        if heard is None:
            heard = self._silence
            self.counters.underruns += 1
        self._hear(heard, now)
        said = self._silence
        if self.hold != "remote":
            pcm, _source = self._next_said(FRAME_SAMPLES)
            if pcm is not None:
                said = pcm if len(pcm) == FRAME_SAMPLES else np.concatenate((pcm, self._silence[len(pcm):]))
        self.send(said)
        self.counters.frames_sent += 1
        if self.recorder is not None:
            self.recorder.write(heard, said)

    # -- what SIP streams also offer ----------------------------------------------------------------

    def send_dtmf(self, digits: str, duration_ms: float = 100.0) -> None:
        self._send_dtmf_tones(digits, duration_ms)

    def confirm_remote(self) -> None:
        """ICE and DTLS already proved the browser's address: nothing to confirm."""

    def set_hold(self, hold: str | None) -> None:
        self.hold = hold

    def close(self, now: float | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self._close_audio(time.monotonic() if now is None else now)

    def media_record(self) -> dict[str, Any]:
        """What the call record shows: the codec, our counters, and aiortc's own statistics."""
        stats = self.transport_stats
        # Telephone-event packets share the audio's sequence numbers (RFC 4733 §2.1) but never
        # reach aiortc's counters, which therefore count each of them lost.
        lost = max(0, int(stats.get("packets_lost", 0)) - self.counters.dtmf_packets)
        return {
            "codec": self.codec_name,
            "sample_rate": CALL_RATE,
            "transport": "webrtc",
            "telephone_event_pt": stats.get("telephone_event_pt"),
            "packets_sent": stats.get("packets_sent", 0),
            "packets_received": stats.get("packets_received", 0),
            "bytes_sent": stats.get("bytes_sent", 0),
            "bytes_received": stats.get("bytes_received", 0),
            "packets_lost": lost,
            "jitter_ms": stats.get("jitter_ms", 0.0),
            "rtt_ms": stats.get("rtt_ms"),
            "frames_received": self.counters.frames_received,
            "frames_sent": self.counters.frames_sent,
            "underruns": self.counters.underruns,
            "dropped_samples": self.fifo.dropped,
            "dtmf_packets": self.counters.dtmf_packets,
            "hold": self.hold,
            "dtmf_inband": self.dtmf.inband_active,
        }


@dataclass(frozen=True, slots=True)
class _RateInfo:
    """The little of a codec that callers read from a stream (``stream.codec.sample_rate``)."""

    sample_rate: int
    clock_rate: int = CALL_RATE
    name: str = CODEC_NAME
