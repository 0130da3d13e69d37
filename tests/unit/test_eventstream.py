"""The sans-IO AWS event-stream codec used by the Bedrock stand-in."""

from __future__ import annotations

import datetime
import io
import struct
import uuid

import pytest
from smithy_aws_event_stream.events import Event, EventMessage, Long, Short

from callbridge.standins import eventstream
from callbridge.standins.eventstream import Decoder, EventStreamError, HeaderType, HeaderValue, Message

STAMP = datetime.datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=datetime.UTC)
ALL_TYPES: dict[str, eventstream.HeaderInput] = {
    "yes": True,
    "no": False,
    "byte": HeaderValue(HeaderType.BYTE, -7),
    "short": HeaderValue(HeaderType.SHORT, 30000),
    "int": 123456,
    "long": HeaderValue(HeaderType.LONG, 2**40),
    "blob": b"\x00\xffraw",
    ":event-type": "chunk",
    ":date": STAMP,
    "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}


def sample() -> bytes:
    return eventstream.encode(Message(dict(ALL_TYPES), b'{"bytes": "aGVsbG8="}'))


def test_round_trip_all_header_types() -> None:
    decoded = eventstream.decode(sample())
    assert decoded.payload == b'{"bytes": "aGVsbG8="}'
    assert {name: decoded.value(name) for name in ALL_TYPES} == {
        "yes": True, "no": False, "byte": -7, "short": 30000, "int": 123456, "long": 2**40,
        "blob": b"\x00\xffraw", ":event-type": "chunk", ":date": STAMP,
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678")}
    assert decoded.header_type("long") is HeaderType.LONG
    assert eventstream.encode(decoded) == sample()  # typed headers re-encode byte for byte


def test_interoperates_with_the_sdk_codec() -> None:
    sdk = EventMessage(headers={":message-type": "event", "n": Long(5), "s": Short(-2), "t": STAMP,
                                "b": b"\x01\x02", "ok": True}, payload=b"payload")
    ours = eventstream.decode(sdk.encode())
    assert (ours.value("n"), ours.header_type("n"), ours.value("t"), ours.payload) == (5, HeaderType.LONG, STAMP,
                                                                                         b"payload")
    theirs = Event.decode(io.BytesIO(eventstream.encode(ours)))
    assert theirs is not None and theirs.message == sdk


def test_empty_message() -> None:
    data = eventstream.encode(Message())
    assert len(data) == eventstream.MIN_MESSAGE_LENGTH
    assert eventstream.decode(data) == Message({}, b"")


@pytest.mark.parametrize(("offset", "error"), [(2, "prelude CRC"), (-6, "message CRC"), (-1, "message CRC")])
def test_corruption_is_a_clear_error(offset: int, error: str) -> None:
    data = bytearray(sample())
    data[offset] ^= 0x40
    with pytest.raises(EventStreamError, match=error):
        eventstream.decode(bytes(data))


def test_truncated_input() -> None:
    data = sample()
    with pytest.raises(EventStreamError, match="does not match"):
        eventstream.decode(data[:-3])
    with pytest.raises(EventStreamError, match="truncated"):
        eventstream.decode(data[:5])
    decoder = Decoder()
    assert decoder.feed(data[:-3]) == []
    assert decoder.pending == len(data) - 3  # end of stream now would mean a truncated message


def test_incremental_decoder_byte_by_byte_and_batched() -> None:
    data = sample() + eventstream.encode(Message({"k": "v"}, b"second"))
    decoder = Decoder()
    messages = [message for byte in data for message in decoder.feed(bytes([byte]))]
    assert [m.payload for m in messages] == [b'{"bytes": "aGVsbG8="}', b"second"]
    assert decoder.pending == 0
    assert [m.payload for m in Decoder().feed(data)] == [b'{"bytes": "aGVsbG8="}', b"second"]


def test_decoder_stays_failed_after_an_error() -> None:
    decoder = Decoder()
    bad = bytearray(sample())
    bad[-1] ^= 1
    with pytest.raises(EventStreamError):
        decoder.feed(bytes(bad))
    with pytest.raises(EventStreamError):
        decoder.feed(sample())


def test_bad_header_block_and_lengths() -> None:
    headers = bytes([3]) + b"abc" + bytes([42])  # unknown type 42
    body = struct.pack(">II", 16 + len(headers), len(headers))
    body += struct.pack(">I", __import__("zlib").crc32(body)) + headers
    body += struct.pack(">I", __import__("zlib").crc32(body))
    with pytest.raises(EventStreamError, match="unknown type"):
        eventstream.decode(body)
    prelude = struct.pack(">II", 8, 0)  # shorter than a prelude plus CRC
    prelude += struct.pack(">I", __import__("zlib").crc32(prelude))
    with pytest.raises(EventStreamError, match="bad lengths"):
        Decoder().feed(prelude)


def test_encode_rejects_values_it_cannot_carry() -> None:
    with pytest.raises(EventStreamError):
        eventstream.encode(Message({"b": HeaderValue(HeaderType.BYTE, 300)}))
    with pytest.raises(EventStreamError):
        eventstream.encode(Message({"": "empty name"}))
    with pytest.raises(EventStreamError):
        eventstream.encode(Message({"s": "x" * 40000}))
