"""Per-call stereo recording: caller on the left, far end on the right.

Two channels rather than a mix so either side can be transcribed, muted or
measured on its own afterwards. The engine calls :meth:`CallRecorder.write`
once per 20 ms tick; the frames are interleaved into a reused scratch
buffer with two slice assignments and handed to :class:`WavWriter`, which
only appends bytes until it is time to touch the disk.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .wavfile import JobRunner, PathLike, WavError, WavWriter

log = logging.getLogger("callbridge.media")

STEREO = 2
LEFT, RIGHT = 0, 1  # WAV channel order: front left, then front right
CALLER_CHANNEL = LEFT
FAR_END_CHANNEL = RIGHT
_INT16 = np.dtype(np.int16)
BLOCK_SECONDS = 0.5  # matches the writer's flush interval: one copy per flush


def _check_frame(name: str, pcm: NDArray[np.int16]) -> None:
    if pcm.dtype != _INT16 or pcm.ndim != 1:
        raise TypeError(f"{name}: expected 1-D int16 samples, got {pcm.dtype} with shape {pcm.shape}")


class CallRecorder:
    """Records one call to a stereo 16-bit WAV at ``sample_rate``.

    A write after :meth:`close` is ignored: ticks already in flight when the
    call ends must not fail. A disk error (full disk) stops the recording
    and is logged instead of raised, so it cannot take the call down.

    With ``io`` the file is created (directories, open, first header) on the
    runner's thread too, so the constructor never waits for the disk;
    :attr:`opened` resolves when the file exists, or with the OSError that
    stopped the recording.
    """

    def __init__(self, path: PathLike, sample_rate: int, *, header_interval_s: float = 1.0,
                 io: JobRunner | None = None) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self._writer = WavWriter(self.path, sample_rate, STEREO, header_interval_s=header_interval_s, io=io,
                                 parents=True)
        # Ticks are collected into one interleaved block and handed over a block at
        # a time: two slice copies per tick instead of a writer call per tick.
        self._block = np.zeros((max(1, int(sample_rate * BLOCK_SECONDS)), STEREO), dtype=np.int16)
        self._filled = 0
        self._accepted = 0

    @property
    def duration_s(self) -> float:
        return self._accepted / self.sample_rate

    @property
    def closed(self) -> bool:
        return self._writer.closed

    @property
    def opened(self) -> Future[None]:
        """Done once the file and its first header are on disk; its exception says why they are not."""
        return self._writer.opened

    def write(self, caller: NDArray[np.int16], far_end: NDArray[np.int16]) -> None:
        """Record one tick: what the caller said and what we sent them."""
        if self._writer.closed:
            return
        if self._writer.failed is not None:  # the file could not be created (logged where it happened)
            self.close()
            return
        _check_frame("caller", caller)
        _check_frame("far_end", far_end)
        n_caller, n_far = caller.shape[0], far_end.shape[0]
        count = max(n_caller, n_far)
        block, start = self._block, self._filled
        if start + count > block.shape[0]:
            self._hand_over()
            start = 0
            if count > block.shape[0]:
                self._block = block = np.zeros((count, STEREO), dtype=np.int16)
        end = start + count
        block[start:start + n_caller, CALLER_CHANNEL] = caller
        block[start:start + n_far, FAR_END_CHANNEL] = far_end
        if n_caller != n_far:  # the shorter side is padded with silence
            block[start + n_caller:end, CALLER_CHANNEL] = 0
            block[start + n_far:end, FAR_END_CHANNEL] = 0
        self._filled = end
        self._accepted += count

    def _hand_over(self) -> None:
        if not self._filled:
            return
        try:
            self._writer.write(self._block[:self._filled])  # the writer copies the bytes
        except (OSError, WavError) as exc:  # disk full, 4 GiB size limit
            log.error("recording %s stopped: %s", self.path, exc)
            self._filled = 0
            self.close()
            return
        self._filled = 0

    def close(self) -> None:
        """Finish the file. Safe to call more than once."""
        if not self._writer.closed:
            self._hand_over()
        try:
            self._writer.close()
        except OSError as exc:
            log.error("closing recording %s failed: %s", self.path, exc)

    def __enter__(self) -> CallRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
