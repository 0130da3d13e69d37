"""What the far end said: every frame the simulator heard, with a speech/silence mark per frame."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from ..media.pacer import FRAME_MS
from .script import ExpectHeard, heard_matches




FRAME_S = FRAME_MS / 1000
# Speech on a phone line sits around -20 dBFS and line noise well under -50:
# -40 dBFS splits them with margin on both sides.
SPEECH_DBFS = -40.0
SPEECH_RMS = 32768 * 10 ** (SPEECH_DBFS / 20)
SPEECH_START_FRAMES = 2  # 40 ms above the threshold: a click is not a prompt
TRIM_PAD_FRAMES = 10  # keep 200 ms around speech so the recogniser hears word edges


# -- what the far end said -------------------------------------------------------------------

class HeardAudio:
    """Every frame received from the far end, with its level, indexed by 20 ms frame."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.frames: list[np.ndarray] = []
        self.speech: list[bool] = []

    def __call__(self, frame: np.ndarray) -> None:
        frame = np.array(frame, dtype=np.int16, copy=True)  # the receiver may reuse its buffer
        rms = float(np.sqrt(np.mean(frame.astype(np.float64) ** 2))) if len(frame) else 0.0
        self.frames.append(frame)
        self.speech.append(rms >= SPEECH_RMS)

    @property
    def count(self) -> int:
        return len(self.frames)

    def speaking_at(self, index: int) -> bool:
        """Whether the far end was speaking just before frame ``index``."""
        recent = self.speech[max(0, index - SPEECH_START_FRAMES):index]
        return len(recent) == SPEECH_START_FRAMES and all(recent)

    def speech_start(self, start: int, end: int) -> int | None:
        run = 0
        for index in range(start, end):
            run = run + 1 if self.speech[index] else 0
            if run == SPEECH_START_FRAMES:
                return index - SPEECH_START_FRAMES + 1
        return None

    def last_speech(self, start: int, end: int) -> int | None:
        for index in range(end - 1, start - 1, -1):
            if self.speech[index]:
                return index
        return None

    def speech_pcm(self, start: int, end: int) -> np.ndarray:
        """Frames ``start:end`` trimmed to their speech (empty when there is none)."""
        first = self.speech_start(start, end)
        if first is None:
            return np.zeros(0, dtype=np.int16)
        last = self.last_speech(start, end) or first
        lo, hi = max(start, first - TRIM_PAD_FRAMES), min(end, last + 1 + TRIM_PAD_FRAMES)
        return np.concatenate(self.frames[lo:hi])

    def utterances(self, start: int, end: int, quiet_frames: int) -> list[tuple[int, int]]:
        """``(first, end)`` frame spans of speech in ``start:end`` split by pauses of ``quiet_frames``."""
        spans: list[tuple[int, int]] = []
        index = start
        while (first := self.speech_start(index, end)) is not None:
            last = first
            cursor = first
            while cursor < end and cursor - last <= quiet_frames:
                if self.speech[cursor]:
                    last = cursor
                cursor += 1
            spans.append((first, last + 1))
            index = cursor
        return spans

    def save(self, path: Path) -> None:
        pcm = np.concatenate(self.frames) if self.frames else np.zeros(0, dtype=np.int16)
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(self.sample_rate)
            out.writeframes(pcm.astype("<i2").tobytes())


def first_match(step: ExpectHeard, transcript: str) -> str | None:
    """The first of the step's expected texts found in ``transcript``."""
    return next((text for text in step.texts if heard_matches(transcript, text)), None)
