"""The caller's first packet is heard first and whole (issue 14), whatever the start-up timing.

The receive path runs on a fake clock: packets are pushed at their arrival times and the pacer's
20 ms ticks read at theirs. Three start-ups used to lose the first frame(s):

* a tick that runs late (a busy event loop) just as the first frame falls due, so two frames are due;
* the transit floor falling while the first frame waits (a later packet got through faster), which
  moves the schedule forward by the same amount;
* packets that arrive before the stream's first tick (media right after the ACK).
"""

from __future__ import annotations

import asyncio
import socket
import time

import numpy as np
import pytest

from callbridge.media.codecs import codec_for
from callbridge.media.receive import AudioReceiver
from callbridge.media.stream import AudioStream
from callbridge.rtp.jitter import MAX_DELAY_MS, Frame, JitterBuffer
from callbridge.rtp.ports import PortAllocator
from callbridge.rtp.socket import RtpSocket

RATE = 8000
FRAME = 160
TICK = 0.02
FRAMES = 40
T0 = 100.0  # arrival of the first packet
SEQ0, TS0, SSRC = 65530, 4294967000, 0x1234  # both about to wrap: the start is no special case


def signal(frames: int = FRAMES) -> np.ndarray:
    """Distinct, loud frames (from sample 0 on): a chirp with seeded noise, as G.711 µ-law carries it."""
    rng = np.random.default_rng(14)
    t = np.arange(frames * FRAME) / RATE
    x = 0.3 * np.cos(2 * np.pi * (300 * t + 1200 * t * t)) + 0.15 * rng.standard_normal(len(t))
    pcm = np.clip(x * 32767, -30000, 30000).astype(np.int16)
    codec = codec_for("PCMU")()
    audio = codec.decode(codec.encode(pcm))  # what the receiver can give back exactly
    assert audio[0] != 0  # so the first sound heard is where frame 0 starts
    return audio


def play(pushes: list[tuple[float, int]], ticks: list[float], audio: np.ndarray) -> np.ndarray:
    """Push frame k at its arrival time, read at every tick; everything read, concatenated."""
    codec = codec_for("PCMU")()
    receiver = AudioReceiver(codec)
    pending = sorted(pushes)
    out = []
    for now in ticks:
        while pending and pending[0][0] <= now:
            at, k = pending.pop(0)
            receiver.push((SEQ0 + k) & 0xFFFF, (TS0 + k * FRAME) & 0xFFFFFFFF,
                          codec.encode(audio[k * FRAME:(k + 1) * FRAME]), at, marker=k == 0, payload_type=0,
                          ssrc=SSRC)
        frame = receiver.read(now)
        assert len(frame) == FRAME
        out.append(frame)
    return np.concatenate(out)


def on_time(frames: int = FRAMES) -> list[tuple[float, int]]:
    """(arrival, frame) for a sender on a perfect 20 ms cadence."""
    return [(T0 + k * TICK, k) for k in range(frames)]


def ticks_from(start: float, count: int = FRAMES + 30) -> list[float]:
    """The pacer's ticks for this stream, on time."""
    return [start + i * TICK for i in range(count)]


def frames_heard(heard: np.ndarray, audio: np.ndarray) -> list[int | None]:
    """From the first sound on, which frame of ``audio`` each 20 ms of ``heard`` is (None: none of them)."""
    start = int(np.flatnonzero(heard)[0])
    frames = {f.tobytes(): k for k, f in enumerate(audio.reshape(-1, FRAME))}
    return [frames.get(heard[at:at + FRAME].tobytes()) for at in range(start, len(heard) - FRAME + 1, FRAME)]


def assert_starts_with_first_frame(heard: np.ndarray, audio: np.ndarray, frames: int) -> None:
    """The first sound is frame 0, whole, and the first ``frames`` follow it untouched."""
    order = frames_heard(heard, audio)
    missing = FRAME * (order[0] if order[0] is not None else len(audio) // FRAME)
    assert missing == 0, f"{missing} samples missing at call start (heard {order[:5]}...)"
    assert order[:frames] == list(range(frames)), order


PHASES = [i / 1000 for i in range(0, 20, 2)]  # where the pacer's slot falls within the sender's 20 ms


@pytest.mark.parametrize("phase", PHASES)
def test_a_late_tick_as_the_first_frame_falls_due_still_plays_it(phase):
    audio = signal()
    ticks = ticks_from(T0 + phase)
    # The first frame falls due 40 ms (the initial target delay) after it arrived. The tick that
    # should play it runs late, when the second frame is due too; the pacer then catches up.
    due = next(i for i, t in enumerate(ticks) if t >= T0 + 0.04)
    ticks[due] = T0 + 0.062
    for i in range(due + 1, len(ticks)):
        ticks[i] = max(ticks[i], ticks[i - 1] + 0.0001)
    heard = play(on_time(), ticks, audio)
    assert_starts_with_first_frame(heard, audio, FRAMES)


@pytest.mark.parametrize("late_ms", [2, 8, 15, 30, 70])
def test_the_jitter_buffer_plays_the_oldest_frame_when_its_first_pop_is_late(late_ms):
    """The buffer on its own (no receiver clock): the pops fall behind the sender for good (the pacer
    skipped frames), so two or more frames are due at the first one; the oldest plays, and the next
    pops carry on without a gap."""
    jb = JitterBuffer()
    pending = [(T0 + k * TICK, k) for k in range(10)]

    def pop(now: float):
        while pending and pending[0][0] <= now:
            at, k = pending.pop(0)
            jb.push(k, k * FRAME, bytes([k]), at)
        return jb.pop(now)

    assert not isinstance(pop(T0 + 0.019), Frame)
    assert not isinstance(pop(T0 + 0.039), Frame)  # still buffering up to the 40 ms target
    outs = [pop(T0 + 0.059 + late_ms / 1000 + i * TICK) for i in range(5)]
    assert [out.sequence if isinstance(out, Frame) else out for out in outs] == [0, 1, 2, 3, 4]
    assert jb.late == 0


@pytest.mark.parametrize("phase", PHASES)
def test_a_faster_packet_while_the_first_waits_does_not_push_it_out(phase):
    audio = signal()
    # Packets 0-2 held up 19 ms on the way (a path warming up); from packet 3 on, on time.
    pushes = [(at + (0.019 if k < 3 else 0.0), k) for at, k in on_time()]
    heard = play(pushes, ticks_from(T0 + phase), audio)
    assert_starts_with_first_frame(heard, audio, 5)
    # The buffer now holds up to a frame more than its target; it may shed one frame later, as after
    # any delay spike, but never the start.
    played = [k for k in frames_heard(heard, audio) if k is not None]
    assert played == sorted(played) and len(played) >= FRAMES - 1, played


def test_late_ticks_mid_stream_neither_drop_nor_stretch_a_frame():
    """The event loop runs some ticks late and the pacer catches up: playout follows the ticks, not
    the wall clock, so the caller is heard unchanged."""
    audio = signal()
    late = {10: 0.015, 18: 0.035, 26: 0.055, 33: 0.025}
    ticks = ticks_from(T0 + 0.005)
    for i, delay in late.items():
        ticks[i] += delay
    for i in range(1, len(ticks)):  # overdue ticks run back to back
        ticks[i] = max(ticks[i], ticks[i - 1] + 0.0005)
    heard = play(on_time(), ticks, audio)
    assert [k for k in frames_heard(heard, audio)][:FRAMES] == list(range(FRAMES))


@pytest.mark.parametrize("before_ms", [20, 60, 100, 140])
def test_packets_before_the_first_tick_are_all_played(before_ms):
    """Media that arrives before the stream ticks (right after the ACK) is buffered, not dropped."""
    audio = signal()
    heard = play(on_time(), ticks_from(T0 + before_ms / 1000 + 0.005), audio)
    assert_starts_with_first_frame(heard, audio, 20)


def test_a_backlog_beyond_the_maximum_delay_keeps_the_newest():
    """The delay is bounded: a second of stale media before the first tick is not played a second late."""
    jb = JitterBuffer()
    for k in range(50):
        jb.push(k, k * FRAME, bytes([k]), T0 + k * TICK)
    first = jb.pop(T0 + 50 * TICK)
    assert isinstance(first, Frame) and first.sequence > 30
    assert jb.target_delay_ms == pytest.approx(MAX_DELAY_MS)
    assert jb.late == first.sequence


def test_the_extra_delay_is_released_afterwards():
    """Covering a start-up backlog raises the target delay; like any spike, it comes back down."""
    jb = JitterBuffer()
    for k in range(6):
        jb.push(k, k * FRAME, b"x", T0 + k * TICK)
    now = T0 + 6 * TICK
    assert isinstance(jb.pop(now), Frame)
    assert jb.target_delay_ms > 100
    for k in range(6, 6 + 500):  # ten seconds of a steady stream
        jb.push(k & 0xFFFF, k * FRAME, b"x", T0 + k * TICK)
        now += TICK
        jb.pop(now)
    assert jb.target_delay_ms < 30
    assert jb.late == 0


# -- the same through a real AudioStream on loopback ----------------------------------------------------------

async def test_stream_hears_packets_sent_before_its_first_tick(tmp_path):
    """The far end starts sending before the pacer ticks the stream: its listeners hear frame 0 first."""
    codec = codec_for("PCMU")()
    audio = signal(8)  # 160 ms before the first tick: within the maximum delay
    ports = PortAllocator(43200, 43300)
    rtp = RtpSocket(ports, "127.0.0.1")
    await rtp.open()
    stream = AudioStream(rtp, "PCMU", 0)
    heard: list[np.ndarray] = []
    stream.audio_listeners.append(heard.append)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        rtp.set_remote("127.0.0.1", peer.getsockname()[1])
        try:
            for k in range(len(audio) // FRAME):
                header = bytes([0x80, (0x80 if k == 0 else 0)]) + ((SEQ0 + k) & 0xFFFF).to_bytes(2, "big")
                header += ((TS0 + k * FRAME) & 0xFFFFFFFF).to_bytes(4, "big") + SSRC.to_bytes(4, "big")
                peer.sendto(header + codec.encode(audio[k * FRAME:(k + 1) * FRAME]), ("127.0.0.1", rtp.port))
                await asyncio.sleep(TICK)  # the stream's socket drains them as they come
            assert stream.stats.packets_received == len(audio) // FRAME
            start = time.monotonic()
            for i in range(30):
                stream.tick(start + i * TICK)
        finally:
            stream.close()
    assert_starts_with_first_frame(np.concatenate(heard), audio, 6)
