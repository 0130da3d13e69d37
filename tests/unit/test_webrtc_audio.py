"""The browser call's audio on our side of aiortc (media/webrtc_audio.py), and the telephone-event tap."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from callbridge.call.webrtc.aiortc_compat import tap_payload_type, telephone_event_codec
from callbridge.media.dtmf.rfc4733 import digit_packets
from callbridge.media.sources import PcmSource
from callbridge.media.webrtc_audio import (CALL_RATE, FRAME_SAMPLES, MAX_BUFFERED_SAMPLES, SampleFifo, WebRtcAudio,
                                           downmix)

OPUS_RATE = 48_000
OPUS_FRAME = 960


def stereo_tone(hz: float, frames: int, left_only: bool = False) -> list[np.ndarray]:
    """Packed s16 stereo frames as aiortc's Opus decoder yields them: shape (1, 2 * 960)."""
    out = []
    for index in range(frames):
        t = (np.arange(OPUS_FRAME) + index * OPUS_FRAME) / OPUS_RATE
        tone = (10_000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
        right = np.zeros_like(tone) if left_only else tone
        out.append(np.stack([tone, right], axis=1).reshape(1, -1))
    return out


def dominant_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])


def make_audio(**kwargs) -> tuple[WebRtcAudio, list[np.ndarray]]:
    sent: list[np.ndarray] = []
    return WebRtcAudio(sent.append, inband_dtmf=False, **kwargs), sent


def test_48k_stereo_frames_become_16k_mono_20ms_ticks():
    audio, _ = make_audio()
    heard: list[np.ndarray] = []
    audio.audio_listeners.append(heard.append)
    for frame in stereo_tone(1000.0, 10):
        audio.receive(frame, OPUS_RATE, 2)
        audio.tick(0.0)
    assert all(len(h) == FRAME_SAMPLES == 320 for h in heard)
    pcm = np.concatenate(heard[3:])  # past the resampler's start-up delay
    assert abs(dominant_hz(pcm, CALL_RATE) - 1000.0) < 20
    assert 6000 < np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) < 7800  # a 10,000-peak sine: RMS ~7,071


def test_downmix_averages_the_channels():
    assert downmix(np.array([[1000, 3000, -2000, 0]], dtype=np.int16), 2).tolist() == [2000, -1000]
    left_only = stereo_tone(500.0, 1, left_only=True)[0]
    mono = downmix(left_only, 2)
    assert np.max(np.abs(mono)) <= 5001  # half of the left channel, never clipped


def test_an_empty_fifo_ticks_silence_and_counts_an_underrun():
    audio, sent = make_audio()
    heard: list[np.ndarray] = []
    audio.audio_listeners.append(heard.append)
    audio.tick(0.0)
    assert len(heard) == 1 and not heard[0].any() and len(heard[0]) == FRAME_SAMPLES
    assert audio.counters.underruns == 1
    assert len(sent) == 1 and not sent[0].any() and len(sent[0]) == FRAME_SAMPLES


def test_a_burst_cannot_grow_the_fifo_past_its_bound():
    fifo = SampleFifo(MAX_BUFFERED_SAMPLES)
    for _ in range(200):  # 4 s of audio at once
        fifo.push(np.arange(320, dtype=np.int16))
    assert len(fifo) == MAX_BUFFERED_SAMPLES
    assert fifo.dropped == 200 * 320 - MAX_BUFFERED_SAMPLES
    fifo.push(np.arange(MAX_BUFFERED_SAMPLES * 3, dtype=np.int16))  # one chunk larger than the bound
    assert len(fifo) == MAX_BUFFERED_SAMPLES
    newest = fifo.read(MAX_BUFFERED_SAMPLES)
    assert newest is not None and newest[-1] == MAX_BUFFERED_SAMPLES * 3 - 1  # the newest samples were kept
    assert fifo.read(1) is None


def test_fifo_reads_exact_frames_across_chunks():
    fifo = SampleFifo(10_000)
    fifo.push(np.arange(0, 100, dtype=np.int16))
    fifo.push(np.arange(100, 500, dtype=np.int16))
    first = fifo.read(320)
    assert first is not None and first.tolist() == list(range(320))
    assert fifo.read(320) is None and len(fifo) == 180


def test_our_prompts_go_to_the_sender_and_the_recorder_gets_both_sides():
    async def run() -> None:
        recorded: list[tuple[np.ndarray, np.ndarray]] = []
        recorder = SimpleNamespace(write=lambda heard, said: recorded.append((heard.copy(), said.copy())),
                                   close=lambda: None)
        audio, sent = make_audio(recorder=recorder)
        played = audio.play(PcmSource(np.full(500, 1234, dtype=np.int16), CALL_RATE))
        audio.receive(stereo_tone(1000.0, 1)[0], OPUS_RATE, 2)
        audio.tick(0.0)
        audio.tick(0.02)
        audio.tick(0.04)
        assert sent[0].tolist() == [1234] * 320
        assert sent[1][:180].tolist() == [1234] * 180 and not sent[1][180:].any()  # padded to a full frame
        assert await asyncio.wait_for(played, 1) is True
        assert len(recorded) == 3 and recorded[0][1].tolist() == [1234] * 320
        audio.close()
        assert audio.closed

    asyncio.run(run())


def test_hold_music_replaces_prompts_and_remote_hold_sends_silence():
    audio, sent = make_audio(hold_source=PcmSource(np.full(10_000, 7, dtype=np.int16), CALL_RATE))
    audio.set_hold("local")
    audio.tick(0.0)
    assert sent[-1].tolist() == [7] * 320
    audio.set_hold("remote")
    audio.tick(0.02)
    assert not sent[-1].any()


def test_close_resolves_queued_prompts_false():
    async def run() -> None:
        audio, _ = make_audio()
        played = audio.play(PcmSource(np.zeros(16_000, dtype=np.int16), CALL_RATE))
        audio.close()
        assert await asyncio.wait_for(played, 1) is False

    asyncio.run(run())


def test_telephone_events_reach_the_collector_once_per_key():
    keys = []
    audio, _ = make_audio(on_dtmf=keys.append)
    for digit, start in (("1", 1000), ("1", 5000), ("#", 9000)):
        for packet in digit_packets(digit, start):  # the end packet three times (RFC 4733 §2.5.1.4)
            audio.telephone_event(packet.timestamp, packet.marker, packet.payload, ssrc=42)
    assert [(k.digit, k.source) for k in keys] == [("1", "rfc4733"), ("1", "rfc4733"), ("#", "rfc4733")]
    assert audio.counters.dtmf_packets == sum(len(digit_packets("1", 0)) for _ in range(3))


def test_the_tap_takes_telephone_events_out_before_aiortcs_decoder():
    async def run() -> None:
        decoded, tapped = [], []

        async def handle(packet, arrival_time_ms):
            decoded.append(packet.payload_type)

        receiver = SimpleNamespace(_handle_rtp_packet=handle)
        tap_payload_type(receiver, 126, lambda ts, marker, payload, ssrc: tapped.append((ts, marker, payload, ssrc)))
        for pt in (111, 126, 111):
            await receiver._handle_rtp_packet(SimpleNamespace(payload_type=pt, timestamp=5, marker=1,
                                                              payload=b"\x01\x8a\x03\x20", ssrc=9), 0)
        assert decoded == [111, 111]
        assert tapped == [(5, True, b"\x01\x8a\x03\x20", 9)]

    asyncio.run(run())


CHROMIUM_AUDIO = """v=0\r
o=- 1 2 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
m=audio 9 UDP/TLS/RTP/SAVPF 111 9 0 8 110 126\r
a=rtpmap:111 opus/48000/2\r
a=rtpmap:9 G722/8000\r
a=rtpmap:0 PCMU/8000\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:110 telephone-event/48000\r
a=rtpmap:126 telephone-event/8000\r
"""


@pytest.mark.parametrize("sdp, expected", [(CHROMIUM_AUDIO, 126),
                                           (CHROMIUM_AUDIO.replace("a=rtpmap:126 telephone-event/8000\r\n", ""), None)])
def test_the_offers_telephone_event_8000_is_found(sdp, expected):
    codec = telephone_event_codec(sdp)
    assert (codec.payloadType if codec is not None else None) == expected
