"""The shared media clock: slot order survives overload, stalls drop whole frames."""

from __future__ import annotations

import asyncio
import time

import pytest

from callbridge.media.pacer import FRAME_MS, MAX_CATCH_UP_MS, SLOTS, MediaPacer, frames_to_skip


def test_a_short_lag_is_caught_up_not_skipped():
    assert frames_to_skip(0.0) == 0
    assert frames_to_skip(FRAME_MS / 1000 * 1.5) == 0
    assert frames_to_skip(MAX_CATCH_UP_MS / 1000) == 0


def test_a_stall_drops_whole_frames():
    assert frames_to_skip(MAX_CATCH_UP_MS / 1000 + 0.001) == MAX_CATCH_UP_MS // FRAME_MS
    assert frames_to_skip(0.150) == 7


async def run_streams(stall_s: float) -> tuple[list[tuple[int, float]], MediaPacer]:
    """Two streams per slot; the first tick of stream 0 after 0.1 s blocks the loop for ``stall_s``."""
    pacer = MediaPacer()
    log: list[tuple[int, float]] = []  # (stream, the slot run's clock)
    stalled = False
    started = time.monotonic()

    def make_tick(stream: int):
        def tick(now: float) -> None:
            nonlocal stalled
            log.append((stream, now))
            if stream == 0 and not stalled and time.monotonic() - started > 0.1:
                stalled = True
                time.sleep(stall_s)  # a blocked event loop, as a long GC pause would be
        return tick

    for stream in range(2 * SLOTS):
        pacer.add(make_tick(stream))
    await asyncio.sleep(0.1 + stall_s + 0.2)
    await pacer.close()
    return log, pacer


def slot_sequence(log: list[tuple[int, float]]) -> list[int]:
    """The slot served by each run, in order (one run's callbacks share its clock)."""
    # Streams are placed on the least-loaded slot in turn: stream i is in slot i % SLOTS.
    runs: dict[float, int] = {}
    for stream, now in log:
        runs.setdefault(now, stream % SLOTS)
    return list(runs.values())


@pytest.mark.parametrize("stall_s", [0.03, 0.15])
async def test_slots_keep_their_turn_through_a_stall(stall_s):
    log, pacer = await run_streams(stall_s)
    sequence = slot_sequence(log)
    # Never a slot twice in a row or out of turn: a stream is never ticked
    # twice in one frame nor passed over while the others are served.
    assert all((b - a) % SLOTS == 1 for a, b in zip(sequence, sequence[1:], strict=False)), sequence
    streams = [stream for stream, _ in log]
    counts = [streams.count(stream) for stream in range(2 * SLOTS)]
    assert max(counts) - min(counts) <= 1, counts
    if stall_s * 1000 > MAX_CATCH_UP_MS + FRAME_MS:
        assert pacer.stats().frames_skipped >= stall_s * 1000 // FRAME_MS - 2
        assert pacer.stats().resyncs >= 1
