"""Per-call stereo recorder: channel order, padding, lifecycle and cost."""

from __future__ import annotations

import errno
import logging
import shutil
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from callbridge.media.recorder import CallRecorder
from callbridge.media.wavfile import read_wav

SOX = shutil.which("sox")
RATE = 8000
FRAME = RATE // 50  # one 20 ms tick
CALLER_HZ = 440
FAR_END_HZ = 1000


def tone(freq: float, samples: int, rate: int = RATE, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(samples) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def peak_hz(pcm: np.ndarray, rate: int = RATE) -> float:
    x = pcm.astype(np.float64) * np.hanning(pcm.size)
    return float(np.argmax(np.abs(np.fft.rfft(x))) * rate / pcm.size)


def read_stereo(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 2 and w.getsampwidth() == 2
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
        return frames, w.getframerate()


def record_call(path: Path, seconds: float, rate: int = RATE) -> tuple[np.ndarray, np.ndarray]:
    frame = rate // 50
    ticks = round(seconds * 50)
    caller = tone(CALLER_HZ, ticks * frame, rate)
    far_end = tone(FAR_END_HZ, ticks * frame, rate)
    recorder = CallRecorder(path, rate)
    for i in range(ticks):
        recorder.write(caller[i * frame : (i + 1) * frame], far_end[i * frame : (i + 1) * frame])
    assert recorder.duration_s == pytest.approx(seconds)
    recorder.close()
    return caller, far_end


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_caller_left_far_end_right(tmp_path: Path, rate: int) -> None:
    path = tmp_path / "call.wav"
    caller, far_end = record_call(path, 1.0, rate)
    frames, got_rate = read_stereo(path)
    assert got_rate == rate
    assert np.array_equal(frames[:, 0], caller)
    assert np.array_equal(frames[:, 1], far_end)
    assert abs(peak_hz(frames[:, 0], rate) - CALLER_HZ) <= 1
    assert abs(peak_hz(frames[:, 1], rate) - FAR_END_HZ) <= 1


def test_channel_order_as_sox_sees_it(tmp_path: Path) -> None:
    # an independent reader: sox's "remix 1" is the left channel, "remix 2" the right
    if SOX is None:
        pytest.fail("sox not installed; scripts/setup.sh --test installs it")
    path = tmp_path / "call.wav"
    record_call(path, 1.0)
    for channel, expected in (("1", CALLER_HZ), ("2", FAR_END_HZ)):
        out = tmp_path / f"channel{channel}.wav"
        subprocess.run([SOX, str(path), str(out), "remix", channel], check=True, capture_output=True)
        pcm, rate = read_wav(out)
        assert rate == RATE and pcm.size == RATE
        assert abs(peak_hz(pcm) - expected) <= 1


def test_shorter_side_is_padded_with_silence(tmp_path: Path) -> None:
    path = tmp_path / "pad.wav"
    recorder = CallRecorder(path, RATE)
    caller = tone(CALLER_HZ, FRAME)
    recorder.write(caller, caller[:100])
    recorder.write(caller[:40], caller)
    recorder.write(np.zeros(0, dtype=np.int16), np.zeros(0, dtype=np.int16))
    recorder.write(caller, caller)  # back to equal lengths after a resize
    recorder.close()
    frames, _ = read_stereo(path)
    assert frames.shape == (3 * FRAME, 2)
    left, right = frames[:, 0], frames[:, 1]
    assert np.array_equal(left[:FRAME], caller) and np.array_equal(right[:100], caller[:100])
    assert not right[100:FRAME].any()
    assert np.array_equal(left[FRAME : FRAME + 40], caller[:40]) and not left[FRAME + 40 : 2 * FRAME].any()
    assert np.array_equal(right[FRAME : 2 * FRAME], caller)
    assert np.array_equal(left[2 * FRAME :], caller) and np.array_equal(right[2 * FRAME :], caller)


def test_creates_parent_dirs_and_ignores_writes_after_close(tmp_path: Path) -> None:
    path = tmp_path / "recordings" / "2024" / "call-1.wav"
    recorder = CallRecorder(path, RATE)
    assert recorder.path == path and path.parent.is_dir()
    frame = tone(CALLER_HZ, FRAME)
    recorder.write(frame, frame)
    recorder.close()
    recorder.close()  # idempotent
    assert recorder.closed
    recorder.write(frame, frame)  # a tick in flight when the call ended
    assert recorder.duration_s == pytest.approx(0.02)
    frames, _ = read_stereo(path)
    assert frames.shape == (FRAME, 2)


def test_rejects_frames_that_are_not_mono_int16(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path / "bad.wav", RATE)
    ok = np.zeros(FRAME, dtype=np.int16)
    with pytest.raises(TypeError):
        recorder.write(ok.astype(np.float32), ok)
    with pytest.raises(TypeError):
        recorder.write(ok, ok.reshape(-1, 1))
    recorder.close()


def test_disk_error_stops_the_recording_without_raising(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    recorder = CallRecorder(tmp_path / "full.wav", RATE)
    file = recorder._writer._file

    def disk_full(_data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    file.write = disk_full  # type: ignore[method-assign]
    frame = tone(CALLER_HZ, FRAME)
    with caplog.at_level(logging.ERROR, logger="callbridge.media"):
        for _ in range(100):  # 2 s: forces at least one flush
            recorder.write(frame, frame)
    assert recorder.closed
    assert "No space left on device" in caplog.text
    recorder.close()


def test_crash_mid_call_is_readable(tmp_path: Path) -> None:
    path = tmp_path / "crash.wav"
    recorder = CallRecorder(path, RATE)
    frame = tone(CALLER_HZ, FRAME)
    for _ in range(150):  # 3 s
        recorder.write(frame, np.zeros(FRAME, dtype=np.int16))
    snapshot = path.read_bytes()
    recorder.close()
    pcm, rate = read_wav(snapshot)  # mono mix: caller at half level
    assert rate == RATE and pcm.size >= 2 * RATE


def test_write_is_cheap(tmp_path: Path) -> None:
    # 500 calls x 50 ticks/s: a per-sample Python loop (tens of µs) would not fit
    recorder = CallRecorder(tmp_path / "bench.wav", RATE)
    caller, far_end = tone(CALLER_HZ, FRAME), tone(FAR_END_HZ, FRAME)
    ticks = 5000
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(ticks):
            recorder.write(caller, far_end)
        best = min(best, (time.perf_counter() - start) / ticks)
    recorder.close()
    assert best < 25e-6, f"CallRecorder.write took {best * 1e6:.1f} µs per 20 ms frame"
