"""Recordings written on the background I/O thread come out identical to inline ones."""

from __future__ import annotations

import threading
import wave

import numpy as np

from callbridge.media.diskwriter import BackgroundFileWriter
from callbridge.media.recorder import CallRecorder


def record(path, io=None) -> bytes:
    rng = np.random.default_rng(1)
    recorder = CallRecorder(path, 8000, io=io)
    for _ in range(150):  # 3 s: several flushes and header updates
        recorder.write(rng.integers(-3000, 3000, 160).astype(np.int16), rng.integers(-3000, 3000, 160).astype(np.int16))
    recorder.close()
    if io is not None:
        assert io.drain(5)
    return path.read_bytes()


def test_background_writes_match_inline_writes_byte_for_byte(tmp_path):
    io = BackgroundFileWriter()
    try:
        assert record(tmp_path / "bg.wav", io) == record(tmp_path / "inline.wav")
    finally:
        io.close()
    with wave.open(str(tmp_path / "bg.wav")) as wav:
        assert wav.getnframes() == 150 * 160 and wav.getnchannels() == 2


def test_disk_work_happens_off_the_calling_thread(tmp_path):
    threads = set()
    io = BackgroundFileWriter()
    io.submit(lambda: threads.add(threading.current_thread().name))
    assert io.drain(5)
    io.close()
    assert threads == {"recording-io"}


def test_a_failing_job_is_counted_and_later_jobs_still_run():
    io = BackgroundFileWriter()
    done = []
    io.submit(lambda: 1 / 0)
    io.submit(lambda: done.append(True))
    assert io.drain(5)
    io.close()
    assert io.failures == 1 and done == [True]
