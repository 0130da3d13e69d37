"""Caller audio out of RTP packets: jitter buffer, decoder, concealment (sans-IO).

Packets go in as they arrive (:meth:`AudioReceiver.push`); the pacer pulls
exactly one tick of PCM (:meth:`AudioReceiver.read`) every 20 ms, whatever
the sender's packet size. Decoded audio waits in a small FIFO, so a peer
that sends 30 ms packets (SIPp's shipped pcap does) is heard correctly.

Playout runs on the ticks' own clock: each read is one tick later than the
last, however late the event loop ran it, so a late tick and the pacer's
catch-up are not mistaken for network jitter.
"""

from __future__ import annotations

import numpy as np

from ..rtp.jitter import CN_PAYLOAD_TYPE, ComfortNoise, Frame, Gap, GapReason, JitterBuffer
from .codecs.base import AudioCodec, PcmArray
from .pacer import MAX_CATCH_UP_MS

TICK_MS = 20
# Concealment repeats the last frame, fading by this factor each time, so a
# lost burst sounds like a short dip rather than a buzz (jitter.MAX_CONCEAL_FRAMES caps it).
CONCEAL_FADE = 0.6
FULL_SCALE = 32767.0
NOISE_SEED = 0x5EED
# A read up to this much after its tick was due is a late tick, played as if on time: the pacer
# catches up that far by running overdue ticks back to back. Later than that, it skipped whole
# frames, and the playout clock jumps to the wall clock again.
MAX_TICK_SLIP_MS = MAX_CATCH_UP_MS


class AudioReceiver:
    """One call's inbound audio path; ``read`` always returns one tick of PCM."""

    def __init__(self, codec: AudioCodec, *, ptime_ms: int = TICK_MS, tick_ms: int = TICK_MS,
                 cn_payload_type: int | None = CN_PAYLOAD_TYPE, jitter: JitterBuffer | None = None) -> None:
        self.codec = codec
        self.sample_rate = codec.sample_rate
        # The RTP clock can differ from the audio rate (G.722: 8000 vs 16000, RFC 3551 §4.5.2).
        self._samples_per_tick_unit = codec.sample_rate / codec.clock_rate
        self.tick_samples = codec.sample_rate * tick_ms // 1000
        self._tick_s = tick_ms / 1000
        self._clock: float | None = None  # when the last read's tick was due
        self.jitter = jitter or JitterBuffer(codec.clock_rate, ptime_ms, cn_payload_type=cn_payload_type)
        self._silence = np.zeros(self.tick_samples, dtype=np.int16)
        self._fifo: PcmArray = self._silence[:0]
        self._last = self._silence
        self._fade = 1.0
        self._noise = np.random.default_rng(NOISE_SEED).standard_normal(self.tick_samples * 8)
        self._noise_at = 0
        self.frames_decoded = 0
        self.frames_concealed = 0  # packet loss hidden by repeating the last frame
        self.frames_stretched = 0  # the jitter buffer growing its delay
        self.decode_errors = 0

    def push(self, sequence: int, timestamp: int, payload: bytes, now: float, *, marker: bool,
             payload_type: int, ssrc: int) -> bool:
        return self.jitter.push(sequence, timestamp, payload, now, marker=marker, payload_type=payload_type, ssrc=ssrc)

    def read(self, now: float) -> PcmArray:
        """The next tick of caller audio (speech, concealment, comfort noise or silence)."""
        now = self._tick_due(now)
        fifo = self._fifo
        need = self.tick_samples
        if len(fifo) >= need:
            self._fifo = fifo[need:]
            return fifo[:need]
        out = self._render(self.jitter.pop(now))
        if not len(fifo) and len(out) == need:
            return out  # the common case: 20 ms in, 20 ms out
        fifo = np.concatenate((fifo, out))
        while len(fifo) < need:
            fifo = np.concatenate((fifo, self._render(self.jitter.pop(now))))
        self._fifo = fifo[need:]
        return fifo[:need]

    def _tick_due(self, now: float) -> float:
        # The jitter buffer measures how far behind schedule playout is from ``now``. A tick the
        # event loop ran late would read as a late schedule, and the buffer would drop a frame to
        # catch up (or stretch one when the pacer's next ticks come quickly); at the start of a
        # talkspurt that frame is the caller's first. So a read never counts as later than one
        # tick after the last, unless it is so late that the pacer must have skipped frames.
        clock = self._clock
        if clock is not None:
            due = clock + self._tick_s
            if due < now <= due + MAX_TICK_SLIP_MS / 1000:
                now = due
        self._clock = now
        return now

    def _frame_samples(self) -> int:
        return round(self.jitter.samples_per_frame * self._samples_per_tick_unit)

    def _render(self, item: Frame | ComfortNoise | Gap) -> PcmArray:
        if type(item) is Frame:
            try:
                pcm = self.codec.decode(item.payload)
            except Exception:  # noqa: BLE001 - a corrupt payload is lost audio, not a dead call
                self.decode_errors += 1
                return self._conceal()
            if not len(pcm):
                return self._conceal()
            units = round(len(pcm) / self._samples_per_tick_unit)
            if units != self.jitter.samples_per_frame:
                # The peer's packets are not the ptime we assumed: follow what it sends.
                self.jitter.samples_per_frame = units
            self.frames_decoded += 1
            self._last, self._fade = pcm, 1.0
            return pcm
        if type(item) is ComfortNoise:
            return self._comfort_noise(item.level)
        if item.reason is GapReason.SILENCE:
            self._fade = 0.0
            return np.zeros(self._frame_samples(), dtype=np.int16)
        if item.reason is GapReason.EXPAND:
            self.frames_stretched += 1
            return self._conceal(counted=False)
        return self._conceal()

    def _conceal(self, counted: bool = True) -> PcmArray:
        self.frames_concealed += counted
        self._fade *= CONCEAL_FADE
        size = self._frame_samples()
        last = self._last
        if self._fade < 0.05 or not len(last):
            return np.zeros(size, dtype=np.int16)
        if len(last) != size:
            last = np.resize(last, size)
        return (last * self._fade).astype(np.int16)

    def _comfort_noise(self, level_dbov: int) -> PcmArray:
        # RFC 3389 §3: the level is in -dBov; white noise at that RMS is close enough
        # to the caller's background for the ear and keeps the line from sounding dead.
        size = self._frame_samples()
        if self._noise_at + size > len(self._noise):
            self._noise_at = 0
        chunk = self._noise[self._noise_at:self._noise_at + size]
        self._noise_at += size
        rms = FULL_SCALE * 10 ** (-level_dbov / 20)
        return np.clip(chunk * rms, -FULL_SCALE, FULL_SCALE).astype(np.int16)
