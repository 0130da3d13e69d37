"""Opening a recording and loading music on hold never stall the event loop, however slow the disk.

The slow disk is a FIFO: opening one for writing blocks until a reader opens the
other end, and reading one blocks until a writer sends, so a helper thread sets
exactly how long the filesystem takes to answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from callbridge.media.diskwriter import BackgroundFileWriter
from callbridge.media.recorder import STEREO, CallRecorder
from callbridge.media.sources import load_wav_source
from callbridge.media.wavfile import WAV_HEADER_SIZE, WavWriter, read_wav

RATE = 8000
FRAME = RATE // 50
SLOW_DISK_S = 0.5  # how long the "disk" takes to answer
TICK_S = 0.005
MAX_LOOP_GAP_S = 0.1  # a loop blocked for the disk's answer shows a gap of SLOW_DISK_S
TIMEOUT_S = 10.0


class LoopTicker:
    """A task that wakes every TICK_S and keeps the longest gap between wake-ups."""

    def __init__(self) -> None:
        self.max_gap = 0.0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            last = now

    async def __aenter__(self) -> LoopTicker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.sleep(TICK_S * 4)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def later(seconds: float, action) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def drain_fifo(path: Path, into: bytearray) -> None:
    with open(path, "rb") as fifo:
        while chunk := fifo.read(65536):
            into += chunk


async def test_opening_a_recording_on_a_slow_disk_does_not_block_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "recordings" / "call-1.wav"
    path.parent.mkdir()
    os.mkfifo(path)
    received = bytearray()
    reader = later(SLOW_DISK_S, lambda: drain_fifo(path, received))
    io = BackgroundFileWriter()
    frame = np.full(FRAME, 1000, dtype=np.int16)
    try:
        async with LoopTicker() as ticker:
            started = time.monotonic()
            recorder = CallRecorder(path, RATE, io=io)
            built_in = time.monotonic() - started
            for _ in range(50):  # 1 s of call while the file is still opening: kept, in order
                recorder.write(frame, frame)
                await asyncio.sleep(0)
            await asyncio.sleep(TICK_S * 4)
            gap = ticker.max_gap
        assert built_in < MAX_LOOP_GAP_S and gap < MAX_LOOP_GAP_S, \
            f"the loop stalled {max(built_in, gap) * 1000:.0f} ms opening a recording"
        await asyncio.wait_for(asyncio.wrap_future(recorder.opened), TIMEOUT_S)
        recorder.close()
        assert io.drain(TIMEOUT_S)
    finally:
        io.close()
        reader.join(TIMEOUT_S)
    assert received[:4] == b"RIFF" and len(received) == WAV_HEADER_SIZE + 50 * FRAME * STEREO * 2
    pcm, rate = read_wav(bytes(received))
    assert rate == RATE and pcm.size == 50 * FRAME and (pcm == 1000).all()


async def test_a_recording_that_cannot_be_opened_stops_quietly(tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the recordings directory should be")
    io = BackgroundFileWriter()
    frame = np.zeros(FRAME, dtype=np.int16)
    try:
        with caplog.at_level(logging.ERROR, logger="callbridge.media"):
            recorder = CallRecorder(blocker / "call.wav", RATE, io=io)  # returns at once: the open runs later
            with pytest.raises(OSError):
                await asyncio.wait_for(asyncio.wrap_future(recorder.opened), TIMEOUT_S)
            for _ in range(100):  # the call goes on; its ticks are dropped, nothing raises
                recorder.write(frame, frame)
            assert recorder.closed
            recorder.close()
            assert io.drain(TIMEOUT_S)
        assert io.failures == 0  # handled where it happened, not as a crashed job
        assert "cannot open" in caplog.text and str(blocker) in caplog.text
    finally:
        io.close()
    assert not (blocker / "call.wav").exists()


def test_without_a_runner_the_open_is_immediate_and_errors_raise(tmp_path: Path) -> None:
    writer = WavWriter(tmp_path / "a.wav", RATE, 1)
    assert writer.opened.done() and writer.opened.exception() is None
    writer.close()
    with pytest.raises(OSError):
        WavWriter(tmp_path / "missing" / "a.wav", RATE, 1)


async def test_music_on_hold_loads_off_the_loop(tmp_path: Path) -> None:
    source = tmp_path / "music.wav"
    tone = (np.sin(np.arange(RATE) * 2 * np.pi * 440 / RATE) * 8000).astype(np.int16)
    with WavWriter(source, RATE, 1) as writer:
        writer.write(tone)
    fifo = tmp_path / "music-on-nfs.wav"
    os.mkfifo(fifo)

    def send() -> None:
        with open(fifo, "wb") as out:
            out.write(source.read_bytes())

    writer_thread = later(SLOW_DISK_S, send)
    async with LoopTicker() as ticker:
        loaded = await asyncio.wait_for(load_wav_source(fifo, 16000), TIMEOUT_S)
        gap = ticker.max_gap
    writer_thread.join(TIMEOUT_S)
    assert gap < MAX_LOOP_GAP_S, f"the loop stalled {gap * 1000:.0f} ms loading music on hold"
    assert loaded.sample_rate == 16000 and loaded.total_samples == 2 * RATE
    assert loaded.label == fifo.name
