"""Shared audio is encoded once per codec (media/framecache.py), and the caller gets the same bytes.

The packets are taken from the stream's socket exactly as they would leave,
and compared with encoding the same PCM frame by frame, as before the cache.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from callbridge.media.codecs import codec_for, g711
from callbridge.media.framecache import FramePayloads, shared_payloads
from callbridge.media.playback import PlaybackQueue
from callbridge.media.sources import LoopSource, PcmSource
from callbridge.media.stream import AudioStream
from callbridge.media.tone import ToneSource, hold_music
from callbridge.rtp.ports import PortAllocator
from callbridge.rtp.socket import RtpSocket

FRAME = 160
HEADER = 12
PEER = ("127.0.0.1", 40000)


class CapturingSocket(RtpSocket):
    """The real socket without OS sockets: keeps what would be sent."""

    def __init__(self) -> None:
        super().__init__(PortAllocator(PEER[1], PEER[1] + 1), PEER[0])
        self.port = PEER[1]
        self.sent: list[bytes] = []
        self.set_remote(*PEER)
        self.confirm_remote()

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def send_rtcp(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def prompt(samples: int, seed: int = 1, *, read_only: bool = True) -> np.ndarray:
    pcm = np.random.default_rng(seed).normal(0, 4000, samples).astype(np.int16)
    pcm.setflags(write=not read_only)
    return pcm


def counting(monkeypatch) -> list[int]:
    """Count every G.711 frame really encoded from now on, by a stream or by the shared cache."""
    calls: list[int] = []
    real = g711._TableCodec.encode

    def encode(self, pcm):
        calls.append(len(pcm))
        return real(self, pcm)

    monkeypatch.setattr(g711._TableCodec, "encode", encode)
    return calls


def payloads_sent(stream: AudioStream, ticks: int) -> list[bytes]:
    for tick in range(ticks):
        stream.tick(tick * 0.02)
    return [packet[HEADER:] for packet in stream.socket.sent]


TABLES = {"PCMU": g711.ULAW_ENCODE_TABLE, "PCMA": g711.ALAW_ENCODE_TABLE}


def expected(pcm: np.ndarray, codec_name: str) -> list[bytes]:
    """Frame by frame, the last one padded with silence: what the stream sent before the cache
    (straight from G.711's table, not through the codec the test counts)."""
    padded = np.concatenate((pcm, np.zeros(-len(pcm) % FRAME, np.int16)))
    table = TABLES[codec_name]
    return [table[padded[i:i + FRAME].view(np.uint16)].tobytes() for i in range(0, len(padded), FRAME)]


@pytest.mark.parametrize("codec_name,payload_type", [("PCMU", 0), ("PCMA", 8)])
async def test_every_caller_gets_the_same_bytes_and_each_frame_is_encoded_once(codec_name, payload_type,
                                                                               monkeypatch):
    pcm = prompt(FRAME * 20 + 70)  # a last, partial frame too
    frames = len(expected(pcm, codec_name))
    first, second = (AudioStream(CapturingSocket(), codec_name, payload_type) for _ in range(2))
    encodes = counting(monkeypatch)
    per_caller = []
    for stream in (first, second):
        stream.play(PcmSource(pcm, 8000))
        assert payloads_sent(stream, frames) == expected(pcm, codec_name)
        per_caller.append(len(encodes) - sum(per_caller))
    # The first caller encoded the 20 whole frames and the padded last one; the second only that one.
    assert per_caller == [frames, 1]


async def test_a_writable_buffer_is_encoded_every_time_and_its_changes_are_heard(monkeypatch):
    pcm = prompt(FRAME * 4, read_only=False)
    stream = AudioStream(CapturingSocket(), "PCMU", 0)
    encodes = counting(monkeypatch)
    stream.play(PcmSource(pcm, 8000))
    payloads_sent(stream, 2)
    pcm[FRAME * 2:] = 1000  # a buffer that can change is never cached
    sent = payloads_sent(stream, 2)[2:]
    assert sent == expected(pcm, "PCMU")[2:4]
    assert len(encodes) == 4


async def test_a_loop_seam_is_encoded_as_read():
    # 2.5 frames: the wrap-around reads straddle the seam and must not come from the cache.
    pcm = prompt(FRAME * 5 // 2)
    stream = AudioStream(CapturingSocket(), "PCMU", 0)
    stream.play(LoopSource(pcm, 8000))
    sent = payloads_sent(stream, 6)
    looped = np.concatenate([pcm] * 3)[:FRAME * 6]
    assert sent == expected(looped, "PCMU")


async def test_tones_share_their_table_and_a_timed_tone_ends_in_silence(monkeypatch):
    stream = AudioStream(CapturingSocket(), "PCMU", 0)
    encodes = counting(monkeypatch)
    stream.play(ToneSource((523.0,), 8000, duration=1.23))  # a tone no other test plays
    sent = payloads_sent(stream, 70)
    reference = ToneSource((523.0,), 8000, duration=1.23)
    tone = np.concatenate([reference.read(FRAME) for _ in range(62)])  # 61 whole frames, then the cut one
    assert sent == expected(tone, "PCMU") + expected(np.zeros(FRAME * 8, np.int16), "PCMU")
    # One second of tone is 50 frames, encoded once; the next 11 repeat them; the cut frame is encoded as read.
    assert len(encodes) == 51
    assert ToneSource((523.0,), 8000)._table is reference._table


async def test_hold_music_is_one_shared_read_only_buffer():
    music = hold_music(8000)
    assert music is hold_music(8000) and not music.flags.writeable
    stream = AudioStream(CapturingSocket(), "PCMU", 0)
    stream.hold_source = LoopSource(music, 8000)
    stream.set_hold("local")
    assert payloads_sent(stream, 5) == expected(music[:FRAME * 5], "PCMU")


async def test_a_stateful_codec_never_shares_frames():
    assert shared_payloads("G722", 320, codec_for("PCMU")) is None
    with pytest.raises(ValueError):
        FramePayloads("G722", 320, codec_for("PCMU")())


def test_a_buffers_frames_go_when_the_buffer_goes():
    payloads = FramePayloads("PCMU", FRAME, codec_for("PCMU")())
    pcm = prompt(FRAME * 3)
    assert payloads.payload(pcm, FRAME) == codec_for("PCMU")().encode(pcm[FRAME:FRAME * 2])
    assert payloads.buffers == 1
    del pcm
    gc.collect()
    assert payloads.buffers == 0


def test_only_whole_aligned_frames_are_served():
    payloads = FramePayloads("PCMU", FRAME, codec_for("PCMU")())
    pcm = prompt(FRAME * 2 + 10)
    assert payloads.payload(pcm, 5) is None  # not on a frame boundary
    assert payloads.payload(pcm, FRAME * 2) is None  # only 10 samples left: not a whole frame
    assert payloads.payload(pcm, -1) is None  # the source's last read was not one frame
    assert payloads.payload(pcm, 0) is not None


def test_the_queue_names_the_source_that_filled_the_whole_tick():
    queue = PlaybackQueue(8000)
    first, second = PcmSource(prompt(FRAME + 40), 8000), PcmSource(prompt(FRAME * 2, seed=2), 8000)
    queue.enqueue(first)
    queue.enqueue(second)
    queue.read(FRAME)
    assert queue.sole_source is first
    queue.read(FRAME)  # 40 samples of one and 120 of the other
    assert queue.sole_source is None
    queue.read(FRAME)  # one read of the second (not frame-aligned in its buffer: encoded as usual)
    assert queue.sole_source is second
    queue.read(FRAME)  # its last 40 samples, padded
    assert queue.sole_source is None
    assert queue.read(FRAME) is None and queue.sole_source is None
