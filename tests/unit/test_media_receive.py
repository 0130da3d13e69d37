"""The inbound audio path: packets in at any size and timing, exactly 20 ms out per tick."""

from __future__ import annotations

import numpy as np

from callbridge.media.codecs import codec_for
from callbridge.media.receive import AudioReceiver

RATE = 8000


def sine(seconds: float, freq: float = 400.0, rate: int = RATE, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)


def run(receiver: AudioReceiver, codec, audio: np.ndarray, packet_ms: int, *, drop: set[int] = frozenset(),
        reorder: bool = False, cn_after: int | None = None) -> np.ndarray:
    """Send ``audio`` in real time (simulated clock) and tick every 20 ms; return what was read."""
    per_packet = codec.sample_rate * packet_ms // 1000
    ts_per_packet = codec.clock_rate * packet_ms // 1000
    packets = []
    for index in range(len(audio) // per_packet):
        chunk = audio[index * per_packet:(index + 1) * per_packet]
        packets.append((index * packet_ms / 1000, index, index * ts_per_packet, codec.encode(chunk)))
    if reorder:  # swap every other pair: arrives out of order by one packet
        for i in range(0, len(packets) - 1, 2):
            packets[i], packets[i + 1] = ((packets[i + 1][0] - 0.001, *packets[i][1:]),
                                          (packets[i][0], *packets[i + 1][1:]))
    out = []
    pending = sorted(packets)
    total_ticks = len(audio) // (codec.sample_rate // 50) + 15
    receiver.concealed_in_speech = None
    delivered = len([p for p in packets if p[1] not in drop and (cn_after is None or p[1] < cn_after)])
    for tick in range(total_ticks):
        if receiver.frames_decoded == delivered and receiver.concealed_in_speech is None:
            # Once the last packet has played, concealment is just the stream ending.
            receiver.concealed_in_speech = receiver.frames_concealed
        now = tick * 0.020
        while pending and pending[0][0] <= now:
            _, seq, ts, payload = pending.pop(0)
            if seq in drop:
                continue
            if cn_after is not None and seq >= cn_after:
                receiver.push(seq, ts, bytes([40]), now, marker=False, payload_type=13, ssrc=7)
                continue
            receiver.push(seq, ts, payload, now, marker=seq == 0, payload_type=0, ssrc=7)
        out.append(receiver.read(now))
    assert all(len(frame) == receiver.tick_samples for frame in out)
    return np.concatenate(out)


def aligned_error(sent: np.ndarray, heard: np.ndarray, skip: int = 0) -> float:
    """Worst sample error from ``skip`` on, at the playout delay that fits best."""
    part = sent[skip:len(sent) - 800].astype(np.int32)
    errors = [np.max(np.abs(heard[d:d + len(part)].astype(np.int32) - part)) for d in range(0, len(heard) - len(part))]
    return float(min(errors))


def test_twenty_ms_packets_play_back_unchanged():
    codec = codec_for("PCMU")()
    audio = sine(1.0)
    receiver = AudioReceiver(codec)
    heard = run(receiver, codec, audio, 20)
    roundtrip = codec.decode(codec.encode(audio))
    assert aligned_error(roundtrip, heard) == 0
    assert receiver.concealed_in_speech == 0 and receiver.frames_stretched == 0


def test_thirty_ms_packets_are_not_squeezed_into_twenty_ms_ticks():
    # SIPp's shipped PCMA pcap uses 30 ms packets: every sample must still play, in order.
    codec = codec_for("PCMA")()
    receiver = AudioReceiver(codec)
    audio = sine(1.2)
    heard = run(receiver, codec, audio, 30)
    assert receiver.concealed_in_speech == 0
    # At most one stretch while the buffer learns the packet size; after that, bit-exact.
    assert receiver.frames_stretched <= 1
    assert aligned_error(codec.decode(codec.encode(audio)), heard, skip=2400) == 0
    assert receiver.jitter.samples_per_frame == 240  # learnt from the packets


def test_reordered_packets_are_put_back_in_order():
    codec = codec_for("PCMU")()
    receiver = AudioReceiver(codec)
    audio = sine(1.0)
    run(receiver, codec, audio, 20, reorder=True)
    assert receiver.concealed_in_speech == 0
    assert receiver.frames_decoded == 50  # every packet played, none discarded as late
    # The buffer grew its delay to absorb the 20 ms of jitter, a frame at a time.
    assert 1 <= receiver.frames_stretched <= 5
    assert receiver.jitter.stats().late == 0


def test_lost_packets_are_concealed_not_dropped():
    codec = codec_for("PCMU")()
    receiver = AudioReceiver(codec)
    audio = sine(1.0)
    heard = run(receiver, codec, audio, 20, drop={20, 21})
    assert receiver.concealed_in_speech == 2
    # The stream keeps its timing: speech after the gap is still there at full level.
    tail = heard[5000:7000].astype(np.float64)
    assert np.sqrt(np.mean(tail**2)) > 0.2 * 32767 * 0.6


def test_comfort_noise_plays_at_the_signalled_level():
    codec = codec_for("PCMU")()
    receiver = AudioReceiver(codec)
    heard = run(receiver, codec, sine(1.0), 20, cn_after=10)
    noise = heard[-3000:].astype(np.float64)
    rms_dbov = 20 * np.log10(np.sqrt(np.mean(noise**2)) / 32767)
    assert -43 < rms_dbov < -37  # RFC 3389: level 40 means -40 dBov


def test_g722_reads_twenty_ms_at_sixteen_khz():
    codec = codec_for("G722")()
    receiver = AudioReceiver(codec)
    assert receiver.tick_samples == 320
    audio = sine(1.0, rate=16000)
    heard = run(receiver, codec, audio, 20)
    assert receiver.concealed_in_speech == 0
    assert np.sqrt(np.mean(heard[8000:].astype(np.float64) ** 2)) > 3000


def test_garbage_payload_is_concealed_without_raising():
    codec = codec_for("G722")()
    receiver = AudioReceiver(codec)
    receiver.push(1, 0, b"", 0.0, marker=True, payload_type=9, ssrc=1)
    receiver.push(2, 160, b"\xff" * 3, 0.0, marker=False, payload_type=9, ssrc=1)
    frames = [receiver.read(0.02 * i) for i in range(10)]
    assert all(len(f) == 320 for f in frames)


def test_nothing_received_reads_silence():
    receiver = AudioReceiver(codec_for("PCMU")())
    assert not np.any(receiver.read(0.0)) and not np.any(receiver.read(0.02))
