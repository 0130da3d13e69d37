"""Endpointing for "listen for one answer": find where the caller's reply ends.

Audio goes in as it arrives; an utterance comes out once speech has been
followed by ``silence_ms`` of quiet (or has run ``max_utterance_s``). A
window counts as speech when silero says so *and* it is louder than a floor
far below any voice, so comfort noise and line hiss never start an
utterance. A little audio before the detected onset is kept, because the
detector needs a window or two to be sure and soft first consonants would
otherwise be clipped.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from callbridge.media.resample import StreamResampler

from .audio import rms_dbfs, to_int16
from .vad import SILERO_RATES, SileroVad

START_THRESHOLD = 0.5  # silero probability that starts speech
KEEP_THRESHOLD = 0.35  # lower bar to stay in speech: hysteresis against flicker mid-word
ENERGY_FLOOR_DBFS = -55.0  # comfort noise sits around -70; the quietest speech well above -50
PRE_ROLL_MS = 300
TAIL_MS = 200  # silence kept after the last speech window, so words are not cut
VAD_RATE_FOR_OTHERS = 16000  # rates silero does not take are resampled to this


class _AudioTail:
    """The recent stretch of a stream, addressed by absolute sample index."""

    def __init__(self) -> None:
        self._chunks: deque[np.ndarray] = deque()
        self.start = 0  # absolute index of the first retained sample
        self.end = 0  # absolute index one past the last sample fed

    def append(self, pcm: np.ndarray) -> None:
        if len(pcm):
            self._chunks.append(pcm)
            self.end += len(pcm)

    def drop_before(self, index: int) -> None:
        while self._chunks and self.start + len(self._chunks[0]) <= index:
            self.start += len(self._chunks.popleft())

    def slice(self, begin: int, end: int) -> np.ndarray:
        begin, end = max(begin, self.start), min(end, self.end)
        if end <= begin:
            return np.zeros(0, dtype=np.int16)
        whole = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        return whole[begin - self.start:end - self.start].copy()


class UtteranceDetector:
    """Cuts single utterances out of a live int16 stream at ``sample_rate``."""

    def __init__(self, sample_rate: int, *, silence_ms: int = 700, min_speech_ms: int = 200,
                 max_utterance_s: float = 15.0) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, got {sample_rate}")
        self.sample_rate = sample_rate
        self.silence_ms = silence_ms
        self.min_speech_ms = min_speech_ms
        self.max_utterance_s = max_utterance_s
        vad_rate = sample_rate if sample_rate in SILERO_RATES else VAD_RATE_FOR_OTHERS
        self._vad = SileroVad(vad_rate)
        self._to_vad = None if vad_rate == sample_rate else StreamResampler(sample_rate, vad_rate)
        self._window_s = self._vad.window / vad_rate
        self._vad_pending = np.zeros(0, dtype=np.int16)
        self._audio = _AudioTail()
        self._ready: deque[np.ndarray] = deque()
        self._clear_utterance()
        self._windows_done = 0

    def _clear_utterance(self) -> None:
        self._in_utterance = False
        self._onset_s = 0.0
        self._last_speech_end_s = 0.0
        self._speech_s = 0.0
        self._silence_s = 0.0

    @property
    def hearing(self) -> bool:
        """True as soon as any speech is heard, before it is long enough to count as speaking."""
        return self._in_utterance

    @property
    def speaking(self) -> bool:
        """True while an utterance with enough speech to count is in progress."""
        return self._in_utterance and self._speech_s * 1000 >= self.min_speech_ms

    def feed(self, pcm: np.ndarray) -> np.ndarray | None:
        """Add audio; return a finished utterance (int16 at ``sample_rate``) or None.

        If one call's audio completes more than one utterance, the later ones
        are returned by the following calls.
        """
        frame = to_int16(pcm)
        self._audio.append(frame)
        vad_frame = self._to_vad.process(frame) if self._to_vad is not None else frame
        pending = np.concatenate((self._vad_pending, vad_frame)) if len(self._vad_pending) else vad_frame
        window = self._vad.window
        usable = len(pending) - len(pending) % window
        for begin in range(0, usable, window):
            self._on_window(pending[begin:begin + window])
        self._vad_pending = pending[usable:].copy()
        if not self._in_utterance:
            self._audio.drop_before(self._index(self._now_s() - PRE_ROLL_MS / 1000))
        return self._ready.popleft() if self._ready else None

    def finish(self) -> np.ndarray | None:
        """End of listening: the utterance in progress if it holds enough speech."""
        if self._ready:
            return self._ready.popleft()
        if self.speaking:
            self._emit(self._last_speech_end_s + TAIL_MS / 1000)
            return self._ready.popleft()
        return None

    def reset(self) -> None:
        """Forget everything, e.g. before listening for the next answer."""
        self._vad.reset()
        if self._to_vad is not None:
            self._to_vad.reset()
        self._vad_pending = np.zeros(0, dtype=np.int16)
        self._audio.drop_before(self._audio.end)
        self._ready.clear()
        self._clear_utterance()

    def _now_s(self) -> float:
        return self._windows_done * self._window_s

    def _index(self, seconds: float) -> int:
        return round(seconds * self.sample_rate)

    def _is_speech(self, window: np.ndarray) -> bool:
        probability = self._vad.probability(window)
        threshold = KEEP_THRESHOLD if self._in_utterance else START_THRESHOLD
        return probability >= threshold and rms_dbfs(window) >= ENERGY_FLOOR_DBFS

    def _on_window(self, window: np.ndarray) -> None:
        start_s = self._now_s()
        speech = self._is_speech(window)
        self._windows_done += 1
        end_s = self._now_s()
        if not self._in_utterance:
            if speech:
                self._in_utterance = True
                self._onset_s = start_s
                self._speech_s = self._window_s
                self._last_speech_end_s = end_s
                self._silence_s = 0.0
            return
        if speech:
            self._speech_s += self._window_s
            self._last_speech_end_s = end_s
            self._silence_s = 0.0
        else:
            self._silence_s += self._window_s
        if end_s - self._onset_s >= self.max_utterance_s:
            self._emit(end_s)
        elif self._silence_s * 1000 >= self.silence_ms:
            if self.speaking:
                self._emit(min(end_s, self._last_speech_end_s + TAIL_MS / 1000))
            else:
                self._clear_utterance()  # a click or a cough: not an answer

    def _emit(self, end_s: float) -> None:
        begin = self._index(max(0.0, self._onset_s - PRE_ROLL_MS / 1000))
        self._ready.append(self._audio.slice(begin, self._index(end_s)))
        self._clear_utterance()
