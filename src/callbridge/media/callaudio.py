"""The application side of a call's audio, whatever carries it (RTP for SIP, aiortc for a browser).

IVR, agent, bridge and recorder talk to this surface only: prompts queued with
marks, barge-in flushes, the DTMF collector, listeners on what the caller says,
music on hold. A transport (:class:`~callbridge.media.stream.AudioStream`,
:class:`~callbridge.media.webrtc_audio.WebRtcAudio`) calls :meth:`_init_audio`
once, then per 20 ms tick :meth:`_hear` with the caller's audio and
:meth:`_next_said` for ours, and :meth:`_close_audio` at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .codecs.base import PcmArray
from .dtmf import DtmfEvent
from .dtmf.collector import DtmfCollector
from .dtmf.inband import dtmf_sequence
from .playback import Interrupted, PlaybackQueue
from .recorder import CallRecorder
from .sources import PcmSource, Source

AudioListener = Callable[[PcmArray], None]
MarkListener = Callable[[str, bool], None]


class CallAudio:
    # Set by the transport (dataclass fields of AudioStream, constructor arguments elsewhere).
    recorder: CallRecorder | None
    hold_source: Source | None
    on_dtmf: Callable[[DtmfEvent], None] | None
    hold: str | None  # None, "local" (we hold the caller) or "remote" (they hold us)
    closed: bool

    def _init_audio(self, sample_rate: int, *, inband_dtmf: bool, dtmf_clock_rate: int) -> None:
        self._rate = sample_rate
        self.playback = PlaybackQueue(sample_rate, on_mark=self._mark_reached)
        self.dtmf = DtmfCollector(sample_rate=sample_rate, inband=inband_dtmf, on_digit=self._digit,
                                  clock_rate=dtmf_clock_rate)
        self.audio_listeners: list[AudioListener] = []
        self.mark_listeners: list[MarkListener] = []
        self._mark_futures: dict[str, asyncio.Future[bool]] = {}
        self._mark_ids = 0
        self.closed = False

    @property
    def sample_rate(self) -> int:
        return self._rate

    # -- what the application uses ------------------------------------------------------

    def play(self, source: Source) -> asyncio.Future[bool]:
        """Queue ``source``; the future resolves True once played, False if flushed."""
        self.playback.enqueue(source)
        return self.mark()

    def mark(self, name: str | None = None) -> asyncio.Future[bool]:
        self._mark_ids += 1
        name = name or f"play-{self._mark_ids}"
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._mark_futures[name] = future
        self.playback.mark(name)
        return future

    def flush(self) -> Interrupted | None:
        """Stop everything queued at once (barge-in)."""
        return self.playback.flush()

    def _send_dtmf_tones(self, digits: str, duration_ms: float) -> None:
        """Keys as tones in our audio, ahead of anything queued."""
        self.playback.enqueue_front(PcmSource(dtmf_sequence(digits, self._rate, duration_ms), self._rate,
                                              label=f"dtmf {digits}"))

    # -- the per-tick work the transports share ----------------------------------------------

    def _hear(self, heard: PcmArray, now: float) -> None:
        """One tick of the caller's audio: to the in-band DTMF detector and the listeners."""
        if self.dtmf.wants_audio:
            self.dtmf.on_audio(heard, now)
        for listener in self.audio_listeners:
            listener(heard)

    def _next_said(self, samples: int) -> tuple[PcmArray | None, Source | None]:
        """Our next ``samples`` (None: nothing to say) and the source they came from, if only one."""
        if self.hold == "local" and self.hold_source is not None:
            return self.hold_source.read(samples), self.hold_source
        return self.playback.read(samples), self.playback.sole_source

    def _digit(self, event: DtmfEvent) -> None:
        if self.on_dtmf is not None:
            self.on_dtmf(event)

    def _mark_reached(self, name: str, played: bool) -> None:
        future = self._mark_futures.pop(name, None)
        if future is not None and not future.done():
            future.set_result(played)
        for listener in self.mark_listeners:
            listener(name, played)

    def _close_audio(self, now: float) -> None:
        """A key whose end never came is reported; queued prompts resolve False; the recording is finished."""
        self.dtmf.close(now)
        self.playback.flush()
        for future in self._mark_futures.values():
            if not future.done():
                future.set_result(False)
        self._mark_futures.clear()
        if self.recorder is not None:
            self.recorder.close()
