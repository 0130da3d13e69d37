"""Codec and resampler tests against independent references (sox) and real signals."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from callbridge.media.codecs import (
    AudioCodec,
    G722Codec,
    L16Codec,
    PcmaCodec,
    PcmuCodec,
    UnsupportedCodecError,
    available_codecs,
    codec_for,
    g722_available,
)
from callbridge.media.codecs.base import as_pcm
from callbridge.media.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from callbridge.media.resample import StreamResampler, resample
from tests.support.tools import must_have

SOX = shutil.which("sox")
needs_sox = must_have(SOX is not None, "sox")
needs_g722 = must_have(g722_available(), "the g722 package")

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
RAW_S16 = ["-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1", "-r", "8000", "-L"]


def sox(*args: str) -> None:
    # -D: no dither, otherwise sox adds noise when narrowing to 8-bit G.711
    subprocess.run([SOX, "-D", *args], check=True, capture_output=True)


def raw(encoding: str) -> list[str]:
    return ["-t", "raw", "-e", encoding, "-b", "8", "-c", "1", "-r", "8000"]


def tone(freq: float, seconds: float, rate: int, amplitude: float = 10000.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def tone_snr_db(signal: np.ndarray, freq: float, rate: int) -> float:
    """SNR of ``signal`` against the best-fitting sinusoid at ``freq`` (any phase,
    so codec delay does not matter). Everything that is not the tone is noise."""
    x = signal.astype(np.float64)
    t = np.arange(x.size) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t), np.ones_like(t)], axis=1)
    coeffs, *_ = np.linalg.lstsq(basis, x, rcond=None)
    fitted = basis @ coeffs
    residual = x - fitted
    return float(10 * np.log10(np.sum((fitted - coeffs[2]) ** 2) / np.sum(residual**2)))


# ------------------------------------------------------------------ G.711


@needs_sox
@pytest.mark.parametrize(("encoding", "encode"), [("u-law", ulaw_encode), ("a-law", alaw_encode)])
def test_g711_encode_matches_sox_for_every_int16(tmp_path: Path, encoding: str, encode) -> None:
    src = tmp_path / "all.s16"
    ALL_INT16.astype("<i2").tofile(src)
    ref = tmp_path / "all.g711"
    sox(*RAW_S16, str(src), *raw(encoding), str(ref))
    expected = ref.read_bytes()
    got = encode(ALL_INT16)
    mismatches = np.flatnonzero(np.frombuffer(got, np.uint8) != np.frombuffer(expected, np.uint8))
    assert mismatches.size == 0, f"first mismatching samples: {ALL_INT16[mismatches[:5]]}"


@needs_sox
@pytest.mark.parametrize(("encoding", "decode"), [("u-law", ulaw_decode), ("a-law", alaw_decode)])
def test_g711_decode_matches_sox_for_every_code(tmp_path: Path, encoding: str, decode) -> None:
    src = tmp_path / "codes.g711"
    src.write_bytes(bytes(range(256)))
    ref = tmp_path / "codes.s16"
    sox(*raw(encoding), str(src), *RAW_S16, str(ref))
    np.testing.assert_array_equal(decode(bytes(range(256))), np.fromfile(ref, dtype="<i2"))


@needs_sox
@pytest.mark.parametrize(("encoding", "encode"), [("u-law", ulaw_encode), ("a-law", alaw_encode)])
def test_g711_matches_sox_on_synthesised_speechband_signal(tmp_path: Path, encoding: str, encode) -> None:
    # sox generates the audio itself, so the input is independent of our code too
    wav = tmp_path / "sweep.s16"
    sox("-n", *RAW_S16, str(wav), "synth", "1.0", "sine", "300-3400", "sine", "1000", "vol", "0.7")
    ref = tmp_path / "sweep.g711"
    sox(*RAW_S16, str(wav), *raw(encoding), str(ref))
    assert encode(np.fromfile(wav, dtype="<i2")) == ref.read_bytes()


@pytest.mark.parametrize(("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
def test_g711_tone_round_trip_snr(encode, decode) -> None:
    # G.711 gives ~38 dB SNR over a wide range of levels (that is its point)
    for amplitude in (30000.0, 10000.0, 1000.0):
        x = tone(1000.0 * 1.01, 1.0, 8000, amplitude)  # off-grid so samples don't repeat
        assert tone_snr_db(decode(encode(x)), 1010.0, 8000) > 35.0


@pytest.mark.parametrize(("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
def test_g711_decode_then_encode_is_identity(encode, decode) -> None:
    codes = np.arange(256, dtype=np.uint8)
    if encode is ulaw_encode:
        codes = codes[codes != 0x7F]  # µ-law "negative zero" decodes to 0, re-encodes as 0xFF
    assert encode(decode(codes.tobytes())) == codes.tobytes()


def test_g711_known_values() -> None:
    # G.711 idle/zero codes: µ-law 0xFF, A-law 0xD5; full-scale saturates.
    assert ulaw_encode(np.array([0, 32767, -32768], np.int16)) == bytes([0xFF, 0x80, 0x00])
    assert alaw_encode(np.array([0, 32767, -32768], np.int16)) == bytes([0xD5, 0xAA, 0x2A])
    assert ulaw_decode(b"\xff\x7f").tolist() == [0, 0]
    assert alaw_decode(b"\xd5\x55").tolist() == [8, -8]


def test_g711_codecs_via_registry() -> None:
    pcmu = codec_for("pcmu")()
    pcma = codec_for("PCMA", 8000)()
    assert isinstance(pcmu, PcmuCodec) and isinstance(pcma, PcmaCodec)
    frame = tone(440.0, 0.02, 8000)
    for codec in (pcmu, pcma):
        assert isinstance(codec, AudioCodec)
        assert (codec.clock_rate, codec.sample_rate) == (8000, 8000)
        payload = codec.encode(frame)
        assert len(payload) == 160
        decoded = codec.decode(payload)
        assert decoded.dtype == np.int16 and decoded.shape == (160,)


# ------------------------------------------------------------------ G.722


@needs_g722
def test_g722_tone_round_trip() -> None:
    codec = codec_for("G722")()
    assert isinstance(codec, G722Codec)
    assert (codec.clock_rate, codec.sample_rate) == (8000, 16000)  # RFC 3551 §4.5.2
    x = tone(1000.0, 1.0, 16000)
    out = []
    for start in range(0, x.size, 320):  # 20 ms frames
        payload = codec.encode(x[start : start + 320])
        assert len(payload) == 160  # 64 kbit/s * 20 ms
        out.append(codec.decode(payload))
    decoded = np.concatenate(out)
    assert decoded.dtype == np.int16 and decoded.size == x.size
    # skip the ADPCM start-up transient
    assert tone_snr_db(decoded[1600:], 1000.0, 16000) > 40.0


@needs_g722
def test_g722_wideband_content_survives() -> None:
    # a 6 kHz tone is impossible in narrowband codecs; G.722's upper band keeps it
    codec = G722Codec()
    x = tone(6000.0, 0.5, 16000)
    decoded = np.concatenate([codec.decode(codec.encode(x[i : i + 320])) for i in range(0, x.size, 320)])
    assert tone_snr_db(decoded[1600:], 6000.0, 16000) > 20.0


@needs_g722
def test_g722_carries_odd_sample_to_next_frame() -> None:
    codec = G722Codec()
    assert len(codec.encode(np.zeros(321, np.int16))) == 160
    assert len(codec.encode(np.zeros(319, np.int16))) == 160  # 1 pending + 319


@needs_g722
def test_g722_instances_have_independent_state() -> None:
    x = tone(700.0, 0.2, 16000)
    a, b = G722Codec(), G722Codec()
    a.encode(tone(3000.0, 0.2, 16000))  # disturb a's predictor
    a.reset()
    assert a.encode(x) == b.encode(x)


# ------------------------------------------------------------------ L16


def test_l16_is_big_endian() -> None:
    codec = L16Codec(16000)
    pcm = np.array([1, -2, 0x1234, -32768], dtype=np.int16)
    assert codec.encode(pcm) == b"\x00\x01\xff\xfe\x12\x34\x80\x00"
    np.testing.assert_array_equal(codec.decode(b"\x00\x01\xff\xfe\x12\x34\x80\x00"), pcm)


def test_l16_round_trip_and_truncated_payload() -> None:
    codec = codec_for("L16", 48000)()
    assert (codec.clock_rate, codec.sample_rate) == (48000, 48000)
    pcm = tone(1000.0, 0.02, 48000)
    np.testing.assert_array_equal(codec.decode(codec.encode(pcm)), pcm)
    assert codec.decode(b"\x00\x01\x02").tolist() == [1]  # dangling byte dropped
    assert codec.decode(b"").size == 0


# ------------------------------------------------------------------ registry / helpers


def test_registry() -> None:
    names = {name for name, _ in available_codecs()}
    assert {"PCMU", "PCMA", "G722", "L16"} <= names
    assert codec_for("L16")().sample_rate == 16000
    with pytest.raises(UnsupportedCodecError):
        codec_for("opus")
    with pytest.raises(UnsupportedCodecError):
        codec_for("PCMU", 16000)
    # each call to the factory is a fresh per-call instance
    factory = codec_for("PCMU")
    assert factory() is not factory()


def test_as_pcm_saturates_instead_of_wrapping() -> None:
    assert as_pcm(np.array([40000.0, -40000.0, 1.6])).tolist() == [32767, -32768, 2]
    with pytest.raises(ValueError):
        as_pcm(np.zeros((2, 2), np.int16))


# ------------------------------------------------------------------ resampling

RATES = (8000, 16000, 22050, 24000, 48000)


def dominant_freq(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * rate / x.size)


@pytest.mark.parametrize("src", RATES)
@pytest.mark.parametrize("dst", RATES)
def test_resample_one_shot_rates(src: int, dst: int) -> None:
    x = tone(1000.0, 1.0, src)
    y = resample(x, src, dst)
    assert y.dtype == np.int16
    assert abs(y.size - dst) <= 1
    assert abs(dominant_freq(y, dst) - 1000.0) <= 2.0


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 8000), (22050, 16000), (16000, 24000), (48000, 8000)])
def test_stream_resampler_is_continuous_across_frames(src: int, dst: int) -> None:
    x = tone(440.0 * 1.003, 1.0, src, amplitude=12000.0)
    frame = src // 50  # 20 ms
    stream = StreamResampler(src, dst)
    chunks = [stream.process(x[i : i + frame]) for i in range(0, x.size, frame)]
    chunks.append(stream.flush())
    y = np.concatenate(chunks)
    assert abs(y.size - dst) <= 2
    # after the filter settles the output is one clean sinusoid: a click at any
    # of the 50 frame boundaries would show up as broadband residual
    assert tone_snr_db(y[dst // 10 : -dst // 10], 440.0 * 1.003, dst) > 70.0


def test_stream_resampler_output_does_not_depend_on_chunking() -> None:
    rng = np.random.default_rng(7)
    x = (rng.normal(0, 3000, 22050)).astype(np.int16)

    def run(sizes: list[int]) -> np.ndarray:
        stream = StreamResampler(22050, 16000)
        out, pos = [], 0
        for size in sizes:
            out.append(stream.process(x[pos : pos + size]))
            pos += size
        out.append(stream.flush())
        return np.concatenate(out)

    whole = run([x.size])
    irregular = rng.integers(1, 900, size=200)
    irregular = irregular[np.cumsum(irregular) < x.size].tolist()
    irregular.append(x.size - sum(irregular))
    chunked = run(irregular)
    assert chunked.size == whole.size
    # identical up to float rounding inside libsoxr (a few LSB on int16)
    diff = np.abs(chunked.astype(int) - whole.astype(int))
    assert diff.max() <= 4 and diff.mean() < 0.5


def test_per_frame_one_shot_resampling_would_click() -> None:
    # why the streaming object exists: restarting the filter every 20 ms
    x = tone(440.0 * 1.003, 1.0, 8000, amplitude=12000.0)
    naive = np.concatenate([resample(x[i : i + 160], 8000, 16000) for i in range(0, x.size, 160)])
    assert tone_snr_db(naive[1600:-1600], 440.0 * 1.003, 16000) < 40.0


def test_stream_resampler_passthrough_and_types() -> None:
    stream = StreamResampler(16000, 16000)
    assert stream.passthrough
    x = tone(300.0, 0.02, 16000)
    np.testing.assert_array_equal(stream.process(x), x)
    with pytest.raises(TypeError):
        StreamResampler(8000, 16000).process(np.zeros(160, np.float32))
    with pytest.raises(ValueError):
        StreamResampler(0, 16000)
