"""WAV files: a tolerant reader, a crash-safe incremental writer, and repair.

Layout follows the RIFF/WAVE definition in Microsoft/IBM "Multimedia
Programming Interface and Data Specifications 1.0" (1991): a ``RIFF`` header
naming form type ``WAVE``, then chunks of ``<fourcc> <u32 size> <body>``, each
body padded to an even length. ``fmt `` describes the samples, ``data``
holds them, everything else (LIST, fact, bext, ...) is skipped.
WAVE_FORMAT_EXTENSIBLE and its sub-format GUIDs are from Microsoft's
"Multiple Channel Audio Data and WAVE Files"; RF64 from EBU Tech 3306.

The reader is written for files from the wild (prompts uploaded by users,
recordings cut short by a crash), so sizes in headers are treated as hints:
a size of 0 or 0xFFFFFFFF, or one running past the end of the file, means
"the audio runs to the end of the file".

The writer produces 16-bit PCM and rewrites the header sizes every
``header_interval_s`` of audio, so after a process crash the file on disk is
a valid WAV holding all but the last interval; :func:`repair_wav` then
recovers the rest from the file length.

One module at ~600 lines: reader, writer and repair share the chunk layout and
its edge cases, and splitting them would spread one format over three files.

One module over the usual size because the reader, the writer and repair
share the header layout and its constants.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import sys
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
from numpy.typing import NDArray

from .codecs.g711 import ALAW_DECODE_TABLE, ULAW_DECODE_TABLE
from .resample import resample

log = logging.getLogger("callbridge.media")

PcmArray = NDArray[np.int16]
PathLike = str | os.PathLike[str]

RIFF_MAGIC = b"RIFF"
RF64_MAGIC = b"RF64"  # EBU Tech 3306: RIFF whose real sizes live in a ds64 chunk
RIFX_MAGIC = b"RIFX"  # big-endian RIFF
WAVE_MAGIC = b"WAVE"
FMT_ID = b"fmt "
DATA_ID = b"data"
DS64_ID = b"ds64"

RIFF_HEADER_SIZE = 12  # "RIFF" <u32 size> "WAVE"
CHUNK_HEADER_SIZE = 8  # <fourcc> <u32 size>
RIFF_SIZE_OFFSET = 4
U32_MAX = 0xFFFFFFFF
RIFF_SIZE_MAX = U32_MAX
SIZE_UNKNOWN = 0xFFFFFFFF  # written by streaming tools and by RF64 (EBU 3306 §3)
FOURCC_MIN, FOURCC_MAX = 0x20, 0x7E  # chunk ids are printable ASCII (RIFF spec, "FOURCC")

FMT_MIN_SIZE = 16  # PCMWAVEFORMAT: tag, channels, rate, byte rate, block align, bits
FMT_READ_LIMIT = 64  # we never need more of fmt than WAVEFORMATEXTENSIBLE's 40 bytes
FMT_EXTENSIBLE_SIZE = 40  # WAVEFORMATEX (18) + cbSize 22 extension bytes
EXTENSIBLE_SUBFORMAT_OFFSET = 24  # the GUID's first two bytes are the old format tag
DS64_DATA_SIZE_OFFSET = 8  # ds64 body: riffSize u64, dataSize u64, ...
DS64_MIN_SIZE = 16

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_ALAW = 0x0006
WAVE_FORMAT_MULAW = 0x0007
WAVE_FORMAT_EXTENSIBLE = 0xFFFE

FORMAT_NAMES: dict[int, str] = {
    WAVE_FORMAT_PCM: "PCM",
    0x0002: "MS ADPCM",
    WAVE_FORMAT_IEEE_FLOAT: "IEEE float",
    WAVE_FORMAT_ALAW: "A-law",
    WAVE_FORMAT_MULAW: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0050: "MPEG",
    0x0055: "MP3",
    WAVE_FORMAT_EXTENSIBLE: "extensible",
}

# Bytes per sample (container size) each supported format may use.
SUPPORTED_WIDTHS: dict[int, frozenset[int]] = {
    WAVE_FORMAT_PCM: frozenset({1, 2, 3, 4}),
    WAVE_FORMAT_IEEE_FLOAT: frozenset({4, 8}),
    WAVE_FORMAT_ALAW: frozenset({1}),
    WAVE_FORMAT_MULAW: frozenset({1}),
}

# Rates outside this range are corrupt headers, not audio; resampling from
# them would also allocate absurd amounts (1 Hz -> 8 kHz is an 8000x blow-up).
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000

INT16_FULL_SCALE = 32768.0
INT16_MIN, INT16_MAX = -32768, 32767
UNSIGNED_8BIT_ZERO = 128  # 8-bit WAV PCM is unsigned with 128 as silence

# Writer: canonical 44-byte PCM header.
PCM16_BYTES = 2
PCM16_BITS = 16
PCM_FMT_SIZE = 16
DATA_SIZE_OFFSET = 40
WAV_HEADER_SIZE = 44
RIFF_SIZE_OVER_DATA = WAV_HEADER_SIZE - CHUNK_HEADER_SIZE  # RIFF size = 36 + data size
MAX_DATA_SIZE = RIFF_SIZE_MAX - RIFF_SIZE_OVER_DATA  # both sizes must fit in u32
MAX_WRITE_CHANNELS = 0xFFFF // PCM16_BYTES
FLUSH_INTERVAL_S = 0.5  # disk writes: ~2 per second per file, whatever the frame size
_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
_CHUNK = struct.Struct("<4sI")
_U32 = struct.Struct("<I")
_LITTLE_ENDIAN_HOST = sys.byteorder == "little"
_INT16 = np.dtype(np.int16)


class WavError(ValueError):
    """The bytes are not a WAV file we can read (or repair)."""


@dataclass(frozen=True, slots=True)
class _Format:
    tag: int  # after resolving WAVE_FORMAT_EXTENSIBLE to its sub-format
    channels: int
    sample_rate: int
    width: int  # bytes per sample of one channel (the container size)

    @property
    def frame_bytes(self) -> int:
        return self.width * self.channels


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where the pieces of a WAV file are, as its headers declare them."""

    magic: bytes
    riff_size: int
    file_size: int
    fmt_body: bytes
    fmt_offset: int  # offset of the fmt chunk's header
    data_offset: int  # offset of the data chunk's header
    data_size: int  # as declared by the data chunk header
    ds64_data_size: int | None

    @property
    def data_start(self) -> int:
        return self.data_offset + CHUNK_HEADER_SIZE

    @property
    def available(self) -> int:
        """Bytes from the start of the audio to the end of the file."""
        return self.file_size - self.data_start


ReadAt = Callable[[int, int], bytes]


class JobRunner(Protocol):
    """Runs disk jobs in order elsewhere (see media.diskwriter.BackgroundFileWriter)."""

    def submit(self, job: Callable[[], None]) -> None: ...


def _bytes_reader(buf: bytes) -> ReadAt:
    return lambda offset, size: buf[offset : offset + size]


def _file_reader(f: BinaryIO) -> ReadAt:
    def read_at(offset: int, size: int) -> bytes:
        f.seek(offset)
        return f.read(size)

    return read_at


def _is_fourcc(fourcc: bytes) -> bool:
    return len(fourcc) == 4 and all(FOURCC_MIN <= b <= FOURCC_MAX for b in fourcc)


def _scan(read_at: ReadAt, file_size: int) -> _Layout:
    """Walk the chunk list until both fmt and data are found."""
    head = read_at(0, RIFF_HEADER_SIZE)
    magic = head[:4]
    if len(head) < RIFF_HEADER_SIZE or magic not in (RIFF_MAGIC, RF64_MAGIC) or head[8:12] != WAVE_MAGIC:
        if magic == RIFX_MAGIC:
            raise WavError("big-endian (RIFX) WAV files are not supported")
        raise WavError("not a RIFF/WAVE file")
    riff_size = _U32.unpack_from(head, RIFF_SIZE_OFFSET)[0]
    fmt: tuple[int, bytes] | None = None
    data: tuple[int, int] | None = None
    ds64_data_size: int | None = None
    offset = RIFF_HEADER_SIZE
    while offset + CHUNK_HEADER_SIZE <= file_size and (fmt is None or data is None):
        fourcc, size = _CHUNK.unpack(read_at(offset, CHUNK_HEADER_SIZE))
        body = offset + CHUNK_HEADER_SIZE
        if fourcc == FMT_ID and fmt is None:
            fmt = (offset, read_at(body, min(size, FMT_READ_LIMIT)))
        elif fourcc == DS64_ID and magic == RF64_MAGIC and size >= DS64_MIN_SIZE:
            ds64 = read_at(body, DS64_MIN_SIZE)
            if len(ds64) == DS64_MIN_SIZE:
                ds64_data_size = struct.unpack_from("<Q", ds64, DS64_DATA_SIZE_OFFSET)[0]
        elif fourcc == DATA_ID and data is None:
            data = (offset, size)
            if size == SIZE_UNKNOWN or body + size > file_size:
                break  # audio runs to the end of the file: nothing follows it
        offset = body + size + (size & 1)  # RIFF pads odd-sized bodies
    if fmt is None:
        raise WavError("no fmt chunk")
    if data is None:
        raise WavError("no data chunk")
    return _Layout(magic, riff_size, file_size, fmt[1], fmt[0], data[0], data[1], ds64_data_size)


def _tiles_to_eof(read_at: ReadAt, start: int, end: int) -> bool:
    """True if [start, end) is a run of well-formed chunks (or empty).

    Tells a real trailing chunk (LIST after data) from audio that a crashed
    writer appended after its last header update.
    """
    offset = start
    while offset < end:
        if offset + CHUNK_HEADER_SIZE > end:
            return False
        fourcc, size = _CHUNK.unpack(read_at(offset, CHUNK_HEADER_SIZE))
        chunk_end = offset + CHUNK_HEADER_SIZE + size
        if not _is_fourcc(fourcc) or chunk_end > end:
            return False
        offset = chunk_end + (size & 1)  # a missing final pad byte is tolerated
    return True


def _data_tail_start(layout: _Layout) -> int:
    """Offset just past the declared data chunk (and its pad byte, if present)."""
    end = layout.data_start + layout.data_size
    return min(end + (layout.data_size & 1), layout.file_size)


def _parse_fmt(body: bytes) -> _Format:
    if len(body) < FMT_MIN_SIZE:
        raise WavError(f"fmt chunk too short ({len(body)} bytes)")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if len(body) < FMT_EXTENSIBLE_SIZE:
            raise WavError(f"WAVE_FORMAT_EXTENSIBLE fmt chunk too short ({len(body)} bytes)")
        tag = struct.unpack_from("<H", body, EXTENSIBLE_SUBFORMAT_OFFSET)[0]
    if tag not in SUPPORTED_WIDTHS:
        raise WavError(f"unsupported WAV format 0x{tag:04X} ({FORMAT_NAMES.get(tag, 'unknown')})")
    if channels == 0:
        raise WavError("WAV declares 0 channels")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise WavError(f"unsupported WAV sample rate {rate} Hz (expected {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE})")
    # Block align is what lays the bytes out; bits may be fewer than the
    # container (20-bit in 24, 24-bit in 32), with samples left-justified.
    if block_align and block_align % channels == 0:
        width = block_align // channels
    else:
        width = (bits + 7) // 8
    if width not in SUPPORTED_WIDTHS[tag] or bits > 8 * width:
        name = FORMAT_NAMES[tag]
        raise WavError(f"unsupported {name} WAV: {bits} bits in {block_align}-byte frames of {channels} channel(s)")
    return _Format(tag, channels, rate, width)


def _block_align(fmt_body: bytes) -> int:
    """Frame size for repair; any format will do, we never decode it."""
    if len(fmt_body) < FMT_MIN_SIZE:
        raise WavError(f"fmt chunk too short ({len(fmt_body)} bytes)")
    _tag, channels, _rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", fmt_body)
    return block_align or max(1, channels * ((bits + 7) // 8))


def _audio_size(layout: _Layout, read_at: ReadAt) -> int:
    """How many bytes of the data chunk to believe (see module docstring)."""
    declared = layout.data_size
    available = layout.available
    if declared == SIZE_UNKNOWN and layout.magic == RF64_MAGIC and layout.ds64_data_size is not None:
        declared = layout.ds64_data_size
    if declared == SIZE_UNKNOWN or declared > available:
        return available
    if declared == 0 and not _tiles_to_eof(read_at, layout.data_start, layout.file_size):
        return available  # header never updated by a streaming/crashed writer
    return declared


def _to_int16(mono: NDArray[np.floating], scale: float) -> PcmArray:
    mono = np.nan_to_num(mono * scale, nan=0.0, posinf=INT16_MAX, neginf=INT16_MIN)
    return np.clip(np.rint(mono), INT16_MIN, INT16_MAX).astype(np.int16)


def _decode(audio: bytes | memoryview, fmt: _Format) -> PcmArray:
    """Samples of any supported format -> mono int16 (channel average)."""
    frames = len(audio) // fmt.frame_bytes
    audio = audio[: frames * fmt.frame_bytes]  # drop a trailing partial frame
    raw = np.frombuffer(audio, dtype=np.uint8)
    # Each branch yields interleaved samples and the value of full scale.
    samples: NDArray[Any]  # int16, int32 or float, by format
    if fmt.tag == WAVE_FORMAT_MULAW:
        samples, full_scale = ULAW_DECODE_TABLE[raw], INT16_FULL_SCALE
    elif fmt.tag == WAVE_FORMAT_ALAW:
        samples, full_scale = ALAW_DECODE_TABLE[raw], INT16_FULL_SCALE
    elif fmt.tag == WAVE_FORMAT_IEEE_FLOAT:
        samples, full_scale = raw.view("<f4" if fmt.width == 4 else "<f8"), 1.0
    elif fmt.width == 1:
        samples = (raw.astype(np.int16) - UNSIGNED_8BIT_ZERO) << 8
        full_scale = INT16_FULL_SCALE
    elif fmt.width == 2:
        samples, full_scale = raw.view("<i2"), INT16_FULL_SCALE
    else:
        # 24/32-bit: left-justify into int32 (the low byte of 24-bit is zero)
        if fmt.width == 3:
            wide = np.zeros((raw.size // 3, 4), dtype=np.uint8)
            wide[:, 1:] = raw.reshape(-1, 3)
            raw = wide.reshape(-1)
        samples, full_scale = raw.view("<i4"), 2.0**31
    if fmt.channels == 1 and full_scale == INT16_FULL_SCALE:
        return samples.astype(np.int16)  # already int16 scale: exact, no rounding
    mono = samples.reshape(frames, fmt.channels).sum(axis=1, dtype=np.float64)
    return _to_int16(mono, INT16_FULL_SCALE / (full_scale * fmt.channels))


def _check_rate_argument(rate: int, what: str) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"{what} {rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}")


def read_wav(path_or_bytes: PathLike | bytes | bytearray | memoryview,
             target_rate: int | None = None) -> tuple[PcmArray, int]:
    """Decode a WAV file (path or its bytes) to mono int16 and its rate.

    With ``target_rate`` the audio is resampled to it (one-shot, for
    prompts and assets, not live frames). Raises :class:`WavError` for
    anything that is not a WAV we can decode.
    """
    if target_rate is not None:
        _check_rate_argument(target_rate, "target_rate")
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        buf = bytes(path_or_bytes)
    else:
        buf = Path(path_or_bytes).read_bytes()
    read_at = _bytes_reader(buf)
    layout = _scan(read_at, len(buf))
    fmt = _parse_fmt(layout.fmt_body)
    start = layout.data_start
    pcm = _decode(memoryview(buf)[start : start + _audio_size(layout, read_at)], fmt)
    if target_rate is None or target_rate == fmt.sample_rate:
        return pcm, fmt.sample_rate
    return resample(pcm, fmt.sample_rate, target_rate), target_rate


def _pcm16_header(sample_rate: int, channels: int, data_size: int) -> bytes:
    block_align = channels * PCM16_BYTES
    return _HEADER.pack(
        RIFF_MAGIC, RIFF_SIZE_OVER_DATA + data_size, WAVE_MAGIC,
        FMT_ID, PCM_FMT_SIZE, WAVE_FORMAT_PCM, channels, sample_rate,
        sample_rate * block_align, block_align, PCM16_BITS,
        DATA_ID, data_size,
    )


class WavWriter:
    """Incremental 16-bit PCM WAV writer that survives a crash.

    ``write`` only appends to an in-memory buffer (a bytearray: no per-sample
    Python work); about every 0.5 s of audio the buffer goes to the file,
    and every ``header_interval_s`` the RIFF and data sizes are rewritten in
    place. The header never claims more than is on disk, so a reader sees a
    valid file missing at most the last interval; :func:`repair_wav`
    recovers what was written after it. No fsync: this guards against the
    process dying, not the machine (the page cache survives the former).

    With ``io`` even opening the file and writing its first header run there:
    a slow disk (or a network mount) never stalls the caller's thread. The
    constructor then returns at once; :attr:`opened` says how the open went,
    and an open that failed turns the later disk jobs into no-ops and
    :meth:`write` into an OSError. ``parents`` creates missing directories
    first, in the same job.
    """

    def __init__(self, path: PathLike, sample_rate: int, channels: int, *,
                 header_interval_s: float = 1.0, io: JobRunner | None = None, parents: bool = False) -> None:
        _check_rate_argument(sample_rate, "sample_rate")
        # block align is a u16 and byte rate a u32 in the fmt chunk
        if not 1 <= channels <= MAX_WRITE_CHANNELS or sample_rate * channels * PCM16_BYTES > U32_MAX:
            raise ValueError(f"channels must be 1..{MAX_WRITE_CHANNELS}, got {channels}")
        if not (header_interval_s > 0 and math.isfinite(header_interval_s)):
            raise ValueError(f"header_interval_s must be positive, got {header_interval_s}")
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self._frame_bytes = channels * PCM16_BYTES
        header_frames = max(1, round(header_interval_s * sample_rate))
        self._header_every = header_frames * self._frame_bytes
        # Split the header interval into equal flushes so header updates fall
        # on flush boundaries instead of lagging by up to one flush.
        flushes = max(1, math.ceil(header_interval_s / FLUSH_INTERVAL_S))
        self._flush_at = max(1, header_frames // flushes) * self._frame_bytes
        self._buf = bytearray()
        self._on_disk = 0  # data bytes in the file
        self._in_header = 0  # data bytes the header currently claims
        self._frames = 0
        self._closed = False
        # With ``io`` (a BackgroundFileWriter) the disk work runs on its thread, in order.
        self._io = io
        self._parents = parents
        self._file: BinaryIO | None = None
        self._failed: BaseException | None = None
        self.opened: Future[None] = Future()  # resolved once the file and its first header are on disk
        if io is None:
            self._open()
        else:
            io.submit(self._open_in_background)

    def _open(self) -> None:
        try:
            if self._parents:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            file = open(self.path, "wb")  # noqa: SIM115 - lives as long as the writer
            try:
                file.write(_pcm16_header(self.sample_rate, self.channels, 0))
                file.flush()
            except BaseException:
                file.close()
                raise
        except BaseException as exc:
            self._failed = exc
            self.opened.set_exception(exc)
            raise
        self._file = file
        self.opened.set_result(None)

    def _open_in_background(self) -> None:
        try:
            self._open()
        except OSError as exc:  # a full or read-only disk: this file is lost, the writer's caller goes on
            log.error("cannot open %s for writing: %s", self.path, exc)

    @property
    def frames_written(self) -> int:
        """Frames accepted by :meth:`write` (buffered ones included)."""
        return self._frames

    @property
    def duration_s(self) -> float:
        return self._frames / self.sample_rate

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def failed(self) -> BaseException | None:
        """Why the file could not be opened (only ever set with ``io``, where the open runs later)."""
        return self._failed

    def write(self, frames: NDArray[np.int16]) -> None:
        """Append int16 frames: shape (n,) for mono or (n, channels)."""
        if self._closed:
            raise ValueError(f"write to closed WavWriter for {self.path}")
        if self._failed is not None:
            raise OSError(f"{self.path} could not be opened: {self._failed}")
        if frames.dtype != _INT16:
            raise TypeError(f"expected int16 samples, got {frames.dtype}")
        shape = frames.shape
        if not ((len(shape) == 2 and shape[1] == self.channels) or (len(shape) == 1 and self.channels == 1)):
            raise ValueError(f"expected shape (n, {self.channels}), got {shape}")
        count = shape[0]
        if self._on_disk + len(self._buf) + count * self._frame_bytes > MAX_DATA_SIZE:
            raise WavError(f"{self.path}: WAV size limit (4 GiB) reached")
        # tobytes() copies in C order, so interleaving and non-contiguous
        # views come out right; WAV samples are little-endian.
        self._buf += frames.tobytes() if _LITTLE_ENDIAN_HOST else frames.astype("<i2").tobytes()
        self._frames += count
        if len(self._buf) >= self._flush_at:
            self._flush()

    def _flush(self) -> None:
        chunk = None
        if self._buf:
            chunk = bytes(self._buf)
            self._on_disk += len(chunk)
            self._buf.clear()
        header = None
        if self._on_disk - self._in_header >= self._header_every:
            header = self._in_header = self._on_disk
        if chunk is not None or header is not None:
            self._run(lambda: self._write_to_disk(chunk, header))

    def _run(self, job: Callable[[], None]) -> None:
        if self._io is None:
            job()
        else:
            self._io.submit(job)

    def _write_to_disk(self, chunk: bytes | None, header_size: int | None) -> None:
        f = self._file
        if f is None:  # the open failed (and was logged): nothing to write to
            return
        if chunk is not None:
            f.write(chunk)
            f.flush()
        if header_size is not None:
            # Data first, sizes second: the header never claims more than the file holds.
            f.seek(RIFF_SIZE_OFFSET)
            f.write(_U32.pack(RIFF_SIZE_OVER_DATA + header_size))
            f.seek(DATA_SIZE_OFFSET)
            f.write(_U32.pack(header_size))
            f.seek(0, os.SEEK_END)
            f.flush()

    def close(self) -> None:
        """Flush and finalise the header. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        chunk = bytes(self._buf) if self._buf else None
        self._on_disk += len(self._buf)
        self._buf.clear()
        self._in_header = self._on_disk
        final_size = self._on_disk

        def finish() -> None:
            try:
                self._write_to_disk(chunk, final_size)
            finally:
                if self._file is not None:
                    self._file.close()

        self._run(finish)

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def repair_wav(path: PathLike) -> bool:
    """Make the RIFF and data sizes of ``path`` agree with its length.

    For files a crashed writer left behind: the audio after the data chunk
    header runs to the end of the file, less any trailing partial frame.
    Bytes after the declared data that form well-formed chunks (a LIST
    written after the audio) are kept as chunks; anything else there is
    taken to be audio written after the last header update. Returns True if
    the file was changed. RF64 files are left alone (their sizes live in
    ds64). Raises :class:`WavError` if the file is not a WAV.
    """
    path = Path(path)
    with open(path, "rb") as f:
        file_size = f.seek(0, os.SEEK_END)
        read_at = _file_reader(f)
        layout = _scan(read_at, file_size)
        if layout.magic == RF64_MAGIC:
            return False
        frame_bytes = _block_align(layout.fmt_body)
        declared = layout.data_size
        sizes_fit = declared != SIZE_UNKNOWN and declared <= layout.available
        if sizes_fit and _tiles_to_eof(read_at, _data_tail_start(layout), file_size):
            data_size, new_length = declared, file_size
        elif layout.fmt_offset > layout.data_offset:
            # fmt after data: the audio cannot run to the end of the file,
            # so what follows it is damage we have no rule to undo
            raise WavError(f"{path}: damaged chunks after the data chunk")
        else:
            data_size = layout.available - layout.available % frame_bytes
            new_length = layout.data_start + data_size + (data_size & 1)
        riff_size = new_length - CHUNK_HEADER_SIZE
        if riff_size > RIFF_SIZE_MAX:
            raise WavError(f"{path}: {file_size} bytes is too large for a RIFF WAV")
        if (riff_size, data_size, new_length) == (layout.riff_size, declared, file_size):
            return False
    with open(path, "r+b") as f:
        f.seek(RIFF_SIZE_OFFSET)
        f.write(_U32.pack(riff_size))
        f.seek(layout.data_offset + 4)
        f.write(_U32.pack(data_size))
        if data_size & 1:  # RIFF pad byte after an odd-sized body
            f.seek(layout.data_start + data_size)
            f.write(b"\0")
        f.truncate(new_length)
    return True


def scan_and_repair(directory: PathLike) -> list[Path]:
    """Repair every ``*.wav`` directly in ``directory``; return those changed.

    Meant for server start, before any recorder is open: a file still being
    written would look truncated and be "repaired" under its writer.
    """
    root = Path(directory)
    if not root.is_dir():
        return []
    repaired: list[Path] = []
    for path in sorted(root.iterdir()):
        if path.suffix.lower() != ".wav" or not path.is_file():
            continue
        try:
            if repair_wav(path):
                log.info("repaired WAV header of %s", path)
                repaired.append(path)
        except WavError as exc:
            log.warning("skipping %s: %s", path, exc)
        except OSError as exc:
            log.warning("cannot repair %s: %s", path, exc)
    return repaired
