"""WAV reader, crash-safe writer and repair, checked against sox and the stdlib ``wave`` module."""

from __future__ import annotations

import logging
import shutil
import struct
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callbridge.media.wavfile import (
    WavError,
    WavWriter,
    read_wav,
    repair_wav,
    scan_and_repair,
)

SOX = shutil.which("sox")
TONE_HZ = 1000
TONE_S = 0.5
FRAME_S = 0.02


def sox(*args: str | Path) -> str:
    if SOX is None:
        pytest.fail("sox not installed; scripts/setup.sh --test installs it")
    # -D: no dither, so the reference conversion is deterministic
    result = subprocess.run([SOX, "-D", *map(str, args)], check=True, capture_output=True, text=True)
    return result.stdout


def sox_info(flag: str, path: Path) -> str:
    if SOX is None:
        pytest.fail("sox not installed; scripts/setup.sh --test installs it")
    return subprocess.run([SOX, "--i", flag, str(path)], check=True, capture_output=True, text=True).stdout.strip()


def sox_reference_mono16(path: Path) -> np.ndarray:
    """sox's own decoding of ``path`` to mono 16-bit: an independent reference."""
    raw = path.with_suffix(".raw")
    sox(path, "-t", "raw", "-e", "signed-integer", "-b", "16", "-L", "-c", "1", raw)
    return np.frombuffer(raw.read_bytes(), dtype="<i2").astype(np.int16)


def peak_hz(pcm: np.ndarray, rate: int) -> float:
    x = pcm.astype(np.float64) * np.hanning(pcm.size)
    return float(np.argmax(np.abs(np.fft.rfft(x))) * rate / pcm.size)


def tone(freq: float, seconds: float, rate: int, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


# --- hand-built files -------------------------------------------------------


def chunk(fourcc: bytes, body: bytes, size: int | None = None) -> bytes:
    declared = len(body) if size is None else size
    return fourcc + struct.pack("<I", declared) + body + (b"\0" if len(body) % 2 else b"")


def fmt_body(tag: int = 1, channels: int = 1, rate: int = 8000, bits: int = 16,
             block_align: int | None = None, sub_tag: int | None = None) -> bytes:
    align = channels * ((bits + 7) // 8) if block_align is None else block_align
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    if sub_tag is not None:  # WAVE_FORMAT_EXTENSIBLE: cbSize, valid bits, mask, GUID
        guid = struct.pack("<H", sub_tag) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        body += struct.pack("<HHI", 22, bits, 0) + guid
    return body


def riff(*chunks: bytes, magic: bytes = b"RIFF", size: int | None = None) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return magic + struct.pack("<I", len(body) if size is None else size) + body


def pcm16_wav(samples: np.ndarray, rate: int = 8000, data_size: int | None = None) -> bytes:
    return riff(chunk(b"fmt ", fmt_body(rate=rate)), chunk(b"data", samples.astype("<i2").tobytes(), data_size))


RAMP = np.arange(-400, 400, 7, dtype=np.int16)


# --- reading sox's output -----------------------------------------------------

SOX_ENCODINGS = {
    "pcm8": ["-b", "8"],
    "pcm16": ["-b", "16"],
    "pcm24": ["-b", "24"],
    "pcm32": ["-e", "signed", "-b", "32"],
    "float32": ["-e", "floating-point", "-b", "32"],
    "float64": ["-e", "floating-point", "-b", "64"],
    "ulaw": ["-e", "u-law"],
    "alaw": ["-e", "a-law"],
}


def make_tone(tmp_path: Path, encoding: str, rate: int, channels: int) -> Path:
    path = tmp_path / f"tone_{encoding}_{rate}_{channels}.wav"
    sox("-n", "-r", rate, "-c", channels, *SOX_ENCODINGS[encoding], path, "synth", TONE_S, "sine", TONE_HZ, "gain", -3)
    return path


@pytest.mark.parametrize("encoding", sorted(SOX_ENCODINGS))
@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (44100, 2), (16000, 3)])
def test_reads_sox_formats_like_sox(tmp_path: Path, encoding: str, rate: int, channels: int) -> None:
    path = make_tone(tmp_path, encoding, rate, channels)
    pcm, got_rate = read_wav(path)
    assert got_rate == rate
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert pcm.size == round(TONE_S * rate)
    assert abs(peak_hz(pcm, rate) - TONE_HZ) <= rate / pcm.size
    reference = sox_reference_mono16(path)
    assert reference.size == pcm.size
    # sox and we may round the last bit differently when narrowing to 16 bits
    assert np.max(np.abs(pcm.astype(np.int32) - reference)) <= 1


@pytest.mark.parametrize("encoding", sorted(SOX_ENCODINGS))
@pytest.mark.parametrize(("rate", "target"), [(44100, 16000), (8000, 16000), (48000, 8000), (22050, 24000)])
def test_resamples_to_target_rate(tmp_path: Path, encoding: str, rate: int, target: int) -> None:
    path = make_tone(tmp_path, encoding, rate, 2)
    pcm, got_rate = read_wav(path, target_rate=target)
    assert got_rate == target
    assert abs(pcm.size - TONE_S * target) <= 1
    assert abs(peak_hz(pcm, target) - TONE_HZ) <= target / pcm.size


def test_target_rate_equal_to_file_rate_is_untouched(tmp_path: Path) -> None:
    path = make_tone(tmp_path, "pcm16", 8000, 1)
    assert np.array_equal(read_wav(path, target_rate=8000)[0], read_wav(path)[0])


def test_stereo_is_averaged(tmp_path: Path) -> None:
    path = tmp_path / "two.wav"
    sox("-n", "-r", 8000, "-c", 2, "-b", 16, path, "synth", 1, "sine", 500, "sine", 2000, "gain", -3)
    pcm, _ = read_wav(path)
    with wave.open(str(path)) as w:
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2).astype(np.int32)
    assert np.max(np.abs(pcm - frames.mean(axis=1))) <= 0.5
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    hz = np.fft.rfftfreq(pcm.size, 1 / 8000)
    for freq in (500, 2000):
        assert spectrum[np.argmin(np.abs(hz - freq))] > 0.3 * spectrum.max()


def test_reads_bytes_as_well_as_paths(tmp_path: Path) -> None:
    path = make_tone(tmp_path, "pcm24", 16000, 2)
    from_path = read_wav(path)
    for data in (path.read_bytes(), bytearray(path.read_bytes()), memoryview(path.read_bytes())):
        pcm, rate = read_wav(data)
        assert rate == from_path[1] and np.array_equal(pcm, from_path[0])
    assert np.array_equal(read_wav(str(path))[0], from_path[0])


def test_pcm_conversions_are_exact() -> None:
    # 8-bit unsigned: 128 is silence, one step is 256 in int16
    data = riff(chunk(b"fmt ", fmt_body(bits=8)), chunk(b"data", bytes([0, 127, 128, 129, 255])))
    assert read_wav(data)[0].tolist() == [-32768, -256, 0, 256, 32512]
    # 24-bit: the top 16 bits, rounded by the low byte
    samples24 = [0x123456, -0x123456, 0x7FFFFF, -0x800000]
    body = b"".join(v.to_bytes(3, "little", signed=True) for v in samples24)
    data = riff(chunk(b"fmt ", fmt_body(bits=24)), chunk(b"data", body))
    assert read_wav(data)[0].tolist() == [0x1234, -0x1234, 32767, -32768]
    # float: +-1.0 is full scale, beyond it clips, NaN is silence
    floats = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 3.0, np.nan], dtype="<f4")
    data = riff(chunk(b"fmt ", fmt_body(tag=3, bits=32)), chunk(b"data", floats.tobytes()))
    assert read_wav(data)[0].tolist() == [0, 16384, -16384, 32767, -32768, 32767, 0]


def test_extensible_24_in_32_container() -> None:
    # wBitsPerSample is the container; valid bits are left-justified in it
    values = np.array([0x12345600, -0x12345600], dtype="<i4")
    fmt = fmt_body(tag=0xFFFE, bits=32, sub_tag=1)
    assert read_wav(riff(chunk(b"fmt ", fmt), chunk(b"data", values.tobytes())))[0].tolist() == [0x1234, -0x1234]


def test_skips_unknown_chunks_with_odd_padding() -> None:
    data = riff(
        chunk(b"LIST", b"INFOodd"),  # 7 bytes: padded to 8
        chunk(b"fmt ", fmt_body()),
        chunk(b"fact", struct.pack("<I", RAMP.size)),
        chunk(b"junk", b"x"),
        chunk(b"data", RAMP.astype("<i2").tobytes()),
        chunk(b"id3 ", b"tag"),
    )
    assert np.array_equal(read_wav(data)[0], RAMP)


def test_fmt_after_data() -> None:
    data = riff(chunk(b"data", RAMP.astype("<i2").tobytes()), chunk(b"fmt ", fmt_body(rate=16000)))
    pcm, rate = read_wav(data)
    assert rate == 16000 and np.array_equal(pcm, RAMP)


@pytest.mark.parametrize("declared", [0, 0xFFFFFFFF, RAMP.size * 2 + 1000])
def test_placeholder_or_oversized_data_size_reads_to_end(declared: int) -> None:
    data = pcm16_wav(RAMP, data_size=declared) + b"\x01"  # plus a partial frame
    assert np.array_equal(read_wav(data)[0], RAMP)


@pytest.mark.parametrize("riff_size", [0, 0xFFFFFFFF, 10**6])
def test_riff_size_is_not_trusted(riff_size: int) -> None:
    data = pcm16_wav(RAMP)
    data = data[:4] + struct.pack("<I", riff_size) + data[8:]
    assert np.array_equal(read_wav(data)[0], RAMP)


def test_empty_data_followed_by_a_chunk_is_empty() -> None:
    data = riff(chunk(b"fmt ", fmt_body()), chunk(b"data", b""), chunk(b"LIST", b"INFOISFT"))
    assert read_wav(data)[0].size == 0


def test_rf64_uses_ds64_data_size() -> None:
    body = RAMP.astype("<i2").tobytes()
    ds64 = struct.pack("<QQQI", 0, len(body), RAMP.size, 0)
    data = riff(chunk(b"ds64", ds64), chunk(b"fmt ", fmt_body()), chunk(b"data", body, 0xFFFFFFFF),
                chunk(b"LIST", b"INFO"), magic=b"RF64", size=0xFFFFFFFF)
    assert np.array_equal(read_wav(data)[0], RAMP)


# --- errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a RIFF/WAVE file"),
        (b"RIFF\x00\x00\x00\x00WAV", "not a RIFF/WAVE file"),
        (b"ID3\x03" + bytes(100), "not a RIFF/WAVE file"),
        (b"RIFF\x24\x00\x00\x00AVI " + bytes(40), "not a RIFF/WAVE file"),
        (b"RIFX\x24\x00\x00\x00WAVE" + bytes(40), "big-endian"),
        (riff(chunk(b"data", b"\x00\x00")), "no fmt chunk"),
        (riff(chunk(b"fmt ", fmt_body())), "no data chunk"),
        (riff(chunk(b"fmt ", fmt_body()), chunk(b"LIST", b"INFO")), "no data chunk"),
        (riff(chunk(b"fmt ", fmt_body()[:14]), chunk(b"data", b"")), "fmt chunk too short"),
        (riff(chunk(b"fmt ", fmt_body(tag=0x55)), chunk(b"data", b"")), r"unsupported WAV format 0x0055 \(MP3\)"),
        (riff(chunk(b"fmt ", fmt_body(tag=0x11, bits=4)), chunk(b"data", b"")), "IMA ADPCM"),
        (riff(chunk(b"fmt ", fmt_body(tag=0x1234)), chunk(b"data", b"")), "0x1234 \\(unknown\\)"),
        (riff(chunk(b"fmt ", fmt_body(tag=0xFFFE, sub_tag=0x55)), chunk(b"data", b"")), "0x0055 \\(MP3\\)"),
        (riff(chunk(b"fmt ", fmt_body(tag=0xFFFE)), chunk(b"data", b"")), "EXTENSIBLE fmt chunk too short"),
        (riff(chunk(b"fmt ", fmt_body(channels=0, block_align=2)), chunk(b"data", b"")), "0 channels"),
        (riff(chunk(b"fmt ", fmt_body(rate=0)), chunk(b"data", b"")), "sample rate 0 Hz"),
        (riff(chunk(b"fmt ", fmt_body(rate=10**8)), chunk(b"data", b"")), "sample rate"),
        (riff(chunk(b"fmt ", fmt_body(tag=3, bits=16)), chunk(b"data", b"")), "16 bits"),
        (riff(chunk(b"fmt ", fmt_body(tag=7, bits=16)), chunk(b"data", b"")), "mu-law"),
        (riff(chunk(b"fmt ", fmt_body(bits=40)), chunk(b"data", b"")), "40 bits"),
    ],
)
def test_malformed_input_raises_wav_error(data: bytes, message: str) -> None:
    with pytest.raises(WavError, match=message):
        read_wav(data)


def test_every_truncation_of_a_valid_file_reads_or_raises_wav_error(tmp_path: Path) -> None:
    full = make_tone(tmp_path, "pcm24", 8000, 2).read_bytes()
    for cut in range(len(full) + 1):
        try:
            pcm, rate = read_wav(full[:cut])
        except WavError:
            assert cut < 100  # only a cut inside the header may fail (sox's extensible header + fact is 80 bytes)
        else:
            assert rate == 8000 and pcm.dtype == np.int16


def test_invalid_target_rate_is_a_plain_value_error(tmp_path: Path) -> None:
    path = make_tone(tmp_path, "pcm16", 8000, 1)
    for bad in (0, -8000, 10**9):
        with pytest.raises(ValueError, match="target_rate") as info:
            read_wav(path, target_rate=bad)
        assert not isinstance(info.value, WavError)


def test_missing_file_is_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_wav(tmp_path / "nope.wav")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    for candidate in (data, b"RIFF" + data, b"RIFF\x00\x00\x00\x00WAVE" + data):
        try:
            pcm, rate = read_wav(candidate)
        except WavError:
            continue
        assert pcm.dtype == np.int16 and pcm.ndim == 1 and rate > 0


@settings(max_examples=400, deadline=None)
@given(
    tag=st.sampled_from([1, 3, 6, 7, 0xFFFE, 0x55, 0]),
    sub_tag=st.sampled_from([1, 3, 6, 7, 2]),
    channels=st.integers(0, 9),
    rate=st.sampled_from([0, 1, 8000, 44100, 2**32 - 1]),
    bits=st.integers(0, 70),
    block_align=st.integers(0, 40),
    data=st.binary(max_size=300),
    data_size=st.one_of(st.none(), st.sampled_from([0, 1, 3, 0xFFFFFFFF]), st.integers(0, 2**32 - 1)),
    tail=st.binary(max_size=20),
)
def test_fuzz_header_fields(tag: int, sub_tag: int, channels: int, rate: int, bits: int, block_align: int,
                            data: bytes, data_size: int | None, tail: bytes) -> None:
    body = struct.pack("<HHIIHH", tag, channels, rate, 0, block_align, bits)
    if tag == 0xFFFE:
        body += struct.pack("<HHIH", 22, bits, 0, sub_tag) + bytes(14)
    wav = riff(chunk(b"fmt ", body), chunk(b"data", data, data_size)) + tail
    try:
        pcm, got_rate = read_wav(wav)
    except WavError:
        return
    assert got_rate == rate and pcm.dtype == np.int16 and pcm.size <= len(data) + 1 + len(tail)  # + pad byte


# --- writer -------------------------------------------------------------------


def stereo_tone(seconds: float, rate: int) -> np.ndarray:
    return np.stack([tone(440, seconds, rate), tone(1000, seconds, rate)], axis=1)


def write_in_frames(writer: WavWriter, frames: np.ndarray, rate: int) -> None:
    step = round(FRAME_S * rate)
    for start in range(0, frames.shape[0], step):
        writer.write(frames[start : start + step])


def test_writer_round_trip_with_stdlib_wave_and_sox(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    audio = stereo_tone(1.23, 8000)
    with WavWriter(path, 8000, 2) as writer:
        write_in_frames(writer, audio, 8000)
        assert writer.frames_written == audio.shape[0]
        assert writer.duration_s == pytest.approx(1.23)
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (2, 2, 8000, audio.shape[0])
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    assert np.array_equal(frames, audio)
    assert sox_info("-s", path) == str(audio.shape[0])
    assert sox_info("-c", path) == "2" and sox_info("-r", path) == "8000"
    assert path.stat().st_size == 44 + audio.size * 2


def test_writer_mono_and_non_contiguous_input(tmp_path: Path) -> None:
    path = tmp_path / "mono.wav"
    audio = stereo_tone(0.5, 16000)
    with WavWriter(path, 16000, 1) as writer:
        writer.write(audio[:4000, 1])  # a strided column view
        writer.write(audio[4000:, 1:2])  # (n, 1)
        writer.write(np.zeros(0, dtype=np.int16))
    pcm, rate = read_wav(path)
    assert rate == 16000 and np.array_equal(pcm, audio[:, 1])
    stereo_path = tmp_path / "fortran.wav"
    with WavWriter(stereo_path, 8000, 2) as writer:
        writer.write(np.asfortranarray(audio))
    with wave.open(str(stereo_path)) as w:
        assert np.array_equal(np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2), audio)


def test_writer_rejects_bad_frames_and_writes_after_close(tmp_path: Path) -> None:
    writer = WavWriter(tmp_path / "x.wav", 8000, 2)
    with pytest.raises(TypeError):
        writer.write(np.zeros((160, 2), dtype=np.float32))
    with pytest.raises(ValueError):
        writer.write(np.zeros(160, dtype=np.int16))  # mono frames to a stereo file
    with pytest.raises(ValueError):
        writer.write(np.zeros((160, 3), dtype=np.int16))
    writer.close()
    writer.close()  # idempotent
    assert writer.closed
    with pytest.raises(ValueError, match="closed"):
        writer.write(np.zeros((160, 2), dtype=np.int16))
    assert read_wav(tmp_path / "x.wav")[0].size == 0


@pytest.mark.parametrize(
    ("rate", "channels", "interval"), [(0, 1, 1.0), (8000, 0, 1.0), (8000, 1, 0.0), (8000, 1, float("nan"))]
)
def test_writer_rejects_bad_parameters(tmp_path: Path, rate: int, channels: int, interval: float) -> None:
    with pytest.raises(ValueError):
        WavWriter(tmp_path / "bad.wav", rate, channels, header_interval_s=interval)


def declared_data_size(path: Path) -> int:
    with open(path, "rb") as f:
        f.seek(40)
        return int(struct.unpack("<I", f.read(4))[0])


@pytest.mark.parametrize("interval", [1.0, 0.3, 0.75, 2.0])
def test_header_never_lags_more_than_the_interval(tmp_path: Path, interval: float) -> None:
    rate, path = 8000, tmp_path / "lag.wav"
    writer = WavWriter(path, rate, 2, header_interval_s=interval)
    frame = np.zeros((160, 2), dtype=np.int16)
    worst = 0
    for _ in range(round(5 / FRAME_S)):
        writer.write(frame)
        on_disk = path.stat().st_size - 44
        declared = declared_data_size(path)
        assert declared <= on_disk  # never claims bytes that are not there
        worst = max(worst, writer.frames_written - declared // 4)
    assert worst < interval * rate
    assert worst >= interval * rate - 2 * 160  # and it does batch the header writes
    writer.close()


def test_crash_leaves_a_readable_file_that_repair_makes_exact(tmp_path: Path) -> None:
    rate, interval = 8000, 1.0
    path = tmp_path / "call.wav"
    audio = stereo_tone(3.7, rate)
    writer = WavWriter(path, rate, 2, header_interval_s=interval)
    write_in_frames(writer, audio, rate)
    crashed = tmp_path / "crashed.wav"
    crashed.write_bytes(path.read_bytes())  # the file as a crash would leave it
    writer.close()

    pcm, got_rate = read_wav(crashed)
    assert got_rate == rate
    assert pcm.size >= (3.7 - interval) * rate
    on_disk = (crashed.stat().st_size - 44) // 4
    assert on_disk >= (3.7 - 0.5 - 0.02) * rate  # at most one flush interval was still in memory

    assert repair_wav(crashed) is True
    assert crashed.stat().st_size == 44 + on_disk * 4
    assert declared_data_size(crashed) == on_disk * 4
    assert struct.unpack("<I", crashed.read_bytes()[4:8])[0] == crashed.stat().st_size - 8
    with wave.open(str(crashed)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (2, rate, on_disk)
        frames = np.frombuffer(w.readframes(on_disk), dtype="<i2").reshape(-1, 2)
    assert np.array_equal(frames, audio[:on_disk])
    assert sox_info("-s", crashed) == str(on_disk)
    assert read_wav(crashed)[0].size == on_disk
    assert repair_wav(crashed) is False  # now a good file


def test_crash_before_first_header_update(tmp_path: Path) -> None:
    path = tmp_path / "early.wav"
    writer = WavWriter(path, 8000, 2)
    write_in_frames(writer, stereo_tone(0.7, 8000), 8000)
    snapshot = path.read_bytes()
    writer.close()
    crashed = tmp_path / "early_crash.wav"
    crashed.write_bytes(snapshot + b"\x01\x02\x03")  # and a torn final frame
    assert declared_data_size(crashed) == 0
    assert read_wav(crashed)[0].size == 4000  # size 0 means "to the end": the 0.5 s flushed
    assert repair_wav(crashed) is True
    assert crashed.stat().st_size == 44 + 4000 * 4
    with wave.open(str(crashed)) as w:
        assert w.getnframes() == 4000


# --- repair -------------------------------------------------------------------


@pytest.mark.parametrize("encoding", sorted(SOX_ENCODINGS))
def test_repair_leaves_good_files_alone(tmp_path: Path, encoding: str) -> None:
    for channels in (1, 2):
        path = tmp_path / f"good{channels}.wav"
        # 0.10025 s at 8 kHz: 802 frames, odd-sized data for the 8-bit mono formats
        sox("-n", "-r", 8000, "-c", channels, *SOX_ENCODINGS[encoding], path, "synth", "802s", "sine", 300)
        before = path.read_bytes()
        assert repair_wav(path) is False
        assert path.read_bytes() == before


def test_repair_keeps_a_trailing_chunk(tmp_path: Path) -> None:
    path = tmp_path / "tail.wav"
    data = riff(chunk(b"fmt ", fmt_body()), chunk(b"data", RAMP.astype("<i2").tobytes()), chunk(b"LIST", b"INFOabc"))
    path.write_bytes(data)
    assert repair_wav(path) is False
    path.write_bytes(data[:4] + b"\x00\x00\x00\x00" + data[8:])  # only the RIFF size is wrong
    assert repair_wav(path) is True
    assert path.read_bytes() == data


@pytest.mark.parametrize("declared", [0xFFFFFFFF, 10**6])
def test_repair_fixes_placeholder_sizes(tmp_path: Path, declared: int) -> None:
    path = tmp_path / "stream.wav"
    good = pcm16_wav(RAMP)
    path.write_bytes(pcm16_wav(RAMP, data_size=declared) + b"\x07")  # plus a torn frame
    assert repair_wav(path) is True
    assert path.read_bytes() == good


def test_repair_pads_odd_data(tmp_path: Path) -> None:
    path = tmp_path / "odd.wav"
    path.write_bytes(riff(chunk(b"fmt ", fmt_body(bits=8)), chunk(b"data", b"", 0)) + b"\x80\x81\x82")
    assert repair_wav(path) is True
    data = path.read_bytes()
    assert declared_data_size(path) == 3 and len(data) == 48 and data[-1] == 0
    assert struct.unpack("<I", data[4:8])[0] == 40
    assert read_wav(path)[0].tolist() == [0, 256, 512]
    assert repair_wav(path) is False


def test_repair_rejects_non_wav(tmp_path: Path) -> None:
    path = tmp_path / "text.wav"
    path.write_text("hello, not audio")
    with pytest.raises(WavError):
        repair_wav(path)
    assert path.read_text() == "hello, not audio"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    channels=st.integers(1, 3),
    declared=st.one_of(st.integers(0, 400), st.just(0xFFFFFFFF)),
    riff_size=st.one_of(st.integers(0, 500), st.just(0xFFFFFFFF)),
    audio=st.binary(max_size=300),
    trailer=st.sampled_from([b"", chunk(b"LIST", b"INFOx"), b"\x00" * 9]),
)
def test_fuzz_repair_is_idempotent(tmp_path: Path, channels: int, declared: int, riff_size: int,
                                   audio: bytes, trailer: bytes) -> None:
    path = tmp_path / "fuzz.wav"
    body = riff(chunk(b"fmt ", fmt_body(channels=channels)), size=riff_size)
    path.write_bytes(body + b"data" + struct.pack("<I", declared) + audio + trailer)
    try:
        repair_wav(path)
    except WavError:
        return
    assert repair_wav(path) is False
    pcm, _ = read_wav(path)
    size = declared_data_size(path)
    assert size % (2 * channels) == 0 or size == declared
    assert pcm.size == size // (2 * channels)
    with wave.open(str(path)) as w:
        assert w.getnframes() == size // (2 * channels)


def test_scan_and_repair(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = tmp_path / "good.wav"
    good.write_bytes(pcm16_wav(RAMP))
    crashed = tmp_path / "crashed.wav"
    crashed.write_bytes(pcm16_wav(RAMP, data_size=0))
    upper = tmp_path / "LOUD.WAV"
    upper.write_bytes(pcm16_wav(RAMP, data_size=0xFFFFFFFF))
    (tmp_path / "notes.wav").write_text("not a wav")
    (tmp_path / "other.txt").write_bytes(pcm16_wav(RAMP, data_size=0))
    (tmp_path / "dir.wav").mkdir()
    nested = tmp_path / "dir.wav" / "nested.wav"
    nested.write_bytes(pcm16_wav(RAMP, data_size=0))
    with caplog.at_level(logging.INFO, logger="callbridge.media"):
        repaired = scan_and_repair(tmp_path)
    assert repaired == [upper, crashed]
    assert "notes.wav" in caplog.text
    assert declared_data_size(crashed) == RAMP.size * 2 and declared_data_size(nested) == 0
    assert (tmp_path / "other.txt").read_bytes() == pcm16_wav(RAMP, data_size=0)
    assert scan_and_repair(tmp_path) == []
    assert scan_and_repair(tmp_path / "missing") == []
