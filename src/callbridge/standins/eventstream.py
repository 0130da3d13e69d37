"""The AWS event-stream binary framing (``application/vnd.amazon.eventstream``), sans-IO.

A message on the wire (AWS "Event stream encoding" in the Transcribe / S3 Select
streaming docs; the same framing carries Bedrock bidirectional streams)::

    total length   uint32 BE   (whole message, including both CRCs)
    headers length uint32 BE
    prelude CRC    uint32 BE   CRC32 of the 8 bytes above
    headers        headers-length bytes
    payload        total - headers - 16 bytes
    message CRC    uint32 BE   CRC32 of everything before it

A header is ``name length (1 byte) | name (UTF-8) | type (1 byte) | value``; the ten
value types are listed in :class:`HeaderType`. Bytes in, messages out: no sockets here.
"""

from __future__ import annotations

import datetime
import enum
import struct
import uuid
import zlib
from dataclasses import dataclass, field

PRELUDE_LENGTH = 12  # total length, headers length, prelude CRC
CRC_LENGTH = 4
MIN_MESSAGE_LENGTH = PRELUDE_LENGTH + CRC_LENGTH
# Limits the AWS SDKs enforce; a length past them means a corrupt or hostile peer.
MAX_HEADERS_LENGTH = 128 * 1024
MAX_PAYLOAD_LENGTH = 16 * 1024 * 1024
MAX_HEADER_NAME_LENGTH = 255
MAX_HEADER_VALUE_LENGTH = 32 * 1024 - 1


class EventStreamError(ValueError):
    """The bytes are not a valid event-stream message (bad CRC, length or header)."""


class HeaderType(enum.IntEnum):
    BOOL_TRUE = 0
    BOOL_FALSE = 1
    BYTE = 2  # int8
    SHORT = 3  # int16
    INTEGER = 4  # int32
    LONG = 5  # int64
    BYTE_ARRAY = 6  # uint16 length + bytes
    STRING = 7  # uint16 length + UTF-8
    TIMESTAMP = 8  # int64 milliseconds since the epoch
    UUID = 9  # 16 bytes


@dataclass(frozen=True, slots=True)
class HeaderValue:
    """A header value with its explicit wire type (Python ints alone cannot say int8 vs int64)."""

    type: HeaderType
    value: bool | int | bytes | str | datetime.datetime | uuid.UUID


HeaderInput = HeaderValue | bool | int | bytes | str | datetime.datetime | uuid.UUID

_INT_FORMATS = {HeaderType.BYTE: ">b", HeaderType.SHORT: ">h", HeaderType.INTEGER: ">i", HeaderType.LONG: ">q"}


@dataclass(slots=True)
class Message:
    """One event-stream message; ``headers`` maps names to plain Python values."""

    headers: dict[str, HeaderInput] = field(default_factory=dict)
    payload: bytes = b""

    def header_type(self, name: str) -> HeaderType:
        return _typed(self.headers[name]).type

    def value(self, name: str) -> object:
        """A header's plain value (or None when absent)."""
        raw = self.headers.get(name)
        return None if raw is None else _typed(raw).value


def _typed(value: HeaderInput) -> HeaderValue:
    """Infer the wire type of a plain value; ints default to INTEGER (int32) like the SDKs."""
    match value:
        case HeaderValue():
            return value
        case bool():
            return HeaderValue(HeaderType.BOOL_TRUE if value else HeaderType.BOOL_FALSE, value)
        case int():
            return HeaderValue(HeaderType.INTEGER, value)
        case bytes():
            return HeaderValue(HeaderType.BYTE_ARRAY, value)
        case str():
            return HeaderValue(HeaderType.STRING, value)
        case datetime.datetime():
            return HeaderValue(HeaderType.TIMESTAMP, value)
        case uuid.UUID():
            return HeaderValue(HeaderType.UUID, value)
    raise EventStreamError(f"cannot encode header value of type {type(value).__name__}")


# -- encoding ---------------------------------------------------------------------------------

def encode_header(name: str, value: HeaderInput) -> bytes:
    raw_name = name.encode("utf-8")
    if not 0 < len(raw_name) <= MAX_HEADER_NAME_LENGTH:
        raise EventStreamError(f"header name length {len(raw_name)} out of range")
    typed = _typed(value)
    out = bytearray([len(raw_name)]) + raw_name + bytes([typed.type])
    match typed.type:
        case HeaderType.BOOL_TRUE | HeaderType.BOOL_FALSE:
            pass  # the type byte is the value
        case HeaderType.BYTE | HeaderType.SHORT | HeaderType.INTEGER | HeaderType.LONG:
            try:
                out += struct.pack(_INT_FORMATS[typed.type], typed.value)
            except struct.error as exc:
                raise EventStreamError(f"header {name!r}: {exc}") from None
        case HeaderType.BYTE_ARRAY | HeaderType.STRING:
            data = typed.value.encode("utf-8") if isinstance(typed.value, str) else bytes(typed.value)  # type: ignore[arg-type]
            if len(data) > MAX_HEADER_VALUE_LENGTH:
                raise EventStreamError(f"header {name!r} value is {len(data)} bytes, over the limit")
            out += struct.pack(">H", len(data)) + data
        case HeaderType.TIMESTAMP:
            stamp = typed.value
            assert isinstance(stamp, datetime.datetime)
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=datetime.UTC)
            out += struct.pack(">q", round(stamp.timestamp() * 1000))
        case HeaderType.UUID:
            assert isinstance(typed.value, uuid.UUID)
            out += typed.value.bytes
    return bytes(out)


def encode_headers(headers: dict[str, HeaderInput]) -> bytes:
    return b"".join(encode_header(name, value) for name, value in headers.items())


def encode(message: Message) -> bytes:
    headers = encode_headers(message.headers)
    if len(headers) > MAX_HEADERS_LENGTH:
        raise EventStreamError("headers exceed 128 KiB")
    if len(message.payload) > MAX_PAYLOAD_LENGTH:
        raise EventStreamError("payload exceeds 16 MiB")
    total = PRELUDE_LENGTH + len(headers) + len(message.payload) + CRC_LENGTH
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + headers + message.payload
    return body + struct.pack(">I", zlib.crc32(body))


# -- decoding ---------------------------------------------------------------------------------

def decode_headers(data: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    pos = 0
    view = memoryview(data)

    def take(count: int) -> bytes:
        nonlocal pos
        if pos + count > len(data):
            raise EventStreamError("header block truncated")
        chunk = bytes(view[pos:pos + count])
        pos += count
        return chunk

    while pos < len(data):
        name_length = take(1)[0]
        if name_length == 0:
            raise EventStreamError("empty header name")
        try:
            name = take(name_length).decode("utf-8")
        except UnicodeDecodeError:
            raise EventStreamError("header name is not UTF-8") from None
        try:
            kind = HeaderType(take(1)[0])
        except ValueError:
            raise EventStreamError(f"header {name!r} has an unknown type") from None
        value: bool | int | bytes | str | datetime.datetime | uuid.UUID
        match kind:
            case HeaderType.BOOL_TRUE:
                value = True
            case HeaderType.BOOL_FALSE:
                value = False
            case HeaderType.BYTE | HeaderType.SHORT | HeaderType.INTEGER | HeaderType.LONG:
                fmt = _INT_FORMATS[kind]
                (value,) = struct.unpack(fmt, take(struct.calcsize(fmt)))
            case HeaderType.BYTE_ARRAY | HeaderType.STRING:
                (length,) = struct.unpack(">H", take(2))
                raw = take(length)
                if kind is HeaderType.BYTE_ARRAY:
                    value = raw
                else:
                    try:
                        value = raw.decode("utf-8")
                    except UnicodeDecodeError:
                        raise EventStreamError(f"header {name!r} is not UTF-8") from None
            case HeaderType.TIMESTAMP:
                (millis,) = struct.unpack(">q", take(8))
                try:
                    value = datetime.datetime.fromtimestamp(millis / 1000, tz=datetime.UTC)
                except (OverflowError, OSError, ValueError):
                    raise EventStreamError(f"header {name!r} timestamp out of range") from None
            case HeaderType.UUID:
                value = uuid.UUID(bytes=take(16))
        headers[name] = HeaderValue(kind, value)
    return headers


def _check_prelude(prelude: bytes) -> tuple[int, int]:
    total, headers_length, prelude_crc = struct.unpack(">III", prelude)
    if zlib.crc32(prelude[:8]) != prelude_crc:
        raise EventStreamError("prelude CRC mismatch")
    if total < MIN_MESSAGE_LENGTH or headers_length > MAX_HEADERS_LENGTH:
        raise EventStreamError(f"bad lengths in prelude (total {total}, headers {headers_length})")
    if headers_length > total - MIN_MESSAGE_LENGTH:
        raise EventStreamError("headers longer than the message")
    if total - MIN_MESSAGE_LENGTH - headers_length > MAX_PAYLOAD_LENGTH:
        raise EventStreamError("payload exceeds 16 MiB")
    return total, headers_length


def decode(data: bytes) -> Message:
    """Decode exactly one complete message."""
    if len(data) < MIN_MESSAGE_LENGTH:
        raise EventStreamError(f"message truncated: {len(data)} bytes")
    total, headers_length = _check_prelude(data[:PRELUDE_LENGTH])
    if len(data) != total:
        raise EventStreamError(f"message length {len(data)} does not match the prelude's {total}")
    (message_crc,) = struct.unpack(">I", data[-CRC_LENGTH:])
    if zlib.crc32(data[:-CRC_LENGTH]) != message_crc:
        raise EventStreamError("message CRC mismatch")
    headers_end = PRELUDE_LENGTH + headers_length
    typed = decode_headers(data[PRELUDE_LENGTH:headers_end])
    return Message(headers=dict(typed), payload=bytes(data[headers_end:-CRC_LENGTH]))


class Decoder:
    """Incremental decoder: ``feed`` any slices of the stream, get whole messages back.

    After an error the stream cannot be resynchronised (there is no frame marker), so
    the decoder stays failed and keeps raising."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._error: EventStreamError | None = None

    def feed(self, data: bytes) -> list[Message]:
        if self._error is not None:
            raise self._error
        self._buffer += data
        messages: list[Message] = []
        try:
            while len(self._buffer) >= PRELUDE_LENGTH:
                total, _ = _check_prelude(bytes(self._buffer[:PRELUDE_LENGTH]))
                if len(self._buffer) < total:
                    break
                messages.append(decode(bytes(self._buffer[:total])))
                del self._buffer[:total]
        except EventStreamError as exc:
            self._error = exc
            raise
        return messages

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a message (non-zero at end of stream = truncated)."""
        return len(self._buffer)
