"""Content-Length framing of SIP over streams (RFC 3261 §18.3) with StreamFramer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.sip.errors import SipParseError
from callbridge.sip.framing import MAX_HEADER_BYTES, FramingError, StreamFramer, content_length_of
from callbridge.sip.message import Request
from callbridge.sip.parser import parse_message


def message(n: int, body: bytes = b"", *, cl_name: str = "Content-Length", cl_value: str | None = None,
            cl_first: bool = False) -> bytes:
    cl = f"{cl_name}: {len(body) if cl_value is None else cl_value}"
    lines = [
        "OPTIONS sip:bob@example.com SIP/2.0",
        f"Via: SIP/2.0/TCP client.example.com;branch=z9hG4bK{n}",
        "Max-Forwards: 70",
        "To: <sip:bob@example.com>",
        "From: <sip:alice@example.com>;tag=1",
        f"Call-ID: call-{n}@example.com",
        f"CSeq: {n} OPTIONS",
    ]
    if cl_first:
        lines.insert(1, cl)
    else:
        lines.append(cl)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


BODY = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n\r\nnot the end\r\n\r\n"
STREAM = message(1) + message(2, BODY) + message(3, b"\x00\r\n\r\n\x00")


def test_single_message():
    assert StreamFramer().feed(message(1)) == [message(1)]


def test_content_length_need_not_be_the_last_header():
    data = message(1, BODY, cl_first=True)
    assert StreamFramer().feed(data) == [data]


def test_several_messages_in_one_chunk():
    framer = StreamFramer()
    out = framer.feed(STREAM)
    assert out == [message(1), message(2, BODY), message(3, b"\x00\r\n\r\n\x00")]
    assert framer.buffered == 0
    parsed = [parse_message(m, stream=True) for m in out]
    assert [p.call_id for p in parsed] == ["call-1@example.com", "call-2@example.com", "call-3@example.com"]
    assert parsed[1].body == BODY


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_every_split_point(cut):
    framer = StreamFramer()
    out = framer.feed(STREAM[:cut]) + framer.feed(STREAM[cut:])
    assert b"".join(out) == STREAM and len(out) == 3
    assert framer.buffered == 0


def test_byte_by_byte():
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(len(STREAM)):
        out += framer.feed(STREAM[i : i + 1])
    assert out == [message(1), message(2, BODY), message(3, b"\x00\r\n\r\n\x00")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_arbitrary_chunking(cuts):
    points = sorted(set(cuts) | {0, len(STREAM)})
    framer = StreamFramer()
    out: list[bytes] = []
    for start, end in zip(points, points[1:], strict=False):
        out += framer.feed(STREAM[start:end])
    assert b"".join(out) == STREAM and len(out) == 3


def test_crlf_keepalives_between_messages_are_skipped():
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.buffered == 0
    out = framer.feed(b"\r\n" + message(1) + b"\r\n\r\n\r\n" + message(2))
    assert out == [message(1), message(2)]
    assert framer.feed(b"\r") == [] and framer.buffered == 1
    assert framer.feed(b"\n") == [] and framer.buffered == 0


def test_split_keepalive_then_message():
    framer = StreamFramer()
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n" + message(1)[:10]) == []
    assert framer.feed(message(1)[10:]) == [message(1)]


def test_partial_body_waits():
    framer = StreamFramer()
    data = message(1, BODY)
    assert framer.feed(data[:-1]) == []
    assert framer.buffered == len(data) - 1
    assert framer.feed(data[-1:]) == [data]


@pytest.mark.parametrize("name", ["Content-Length", "content-length", "CONTENT-LENGTH", "l", "L", "Content-Length  "])
def test_content_length_spellings(name):
    data = message(1, BODY, cl_name=name)
    assert StreamFramer().feed(data) == [data]


def test_folded_content_length():
    data = message(1, b"abc", cl_value="\r\n 3")
    assert StreamFramer().feed(data) == [data]
    assert content_length_of(data.split(b"\r\n\r\n")[0]) == 3


def test_leading_zeros():
    data = message(1, b"abc", cl_value="0003")
    assert StreamFramer().feed(data) == [data]


@pytest.mark.parametrize(
    "data,match",
    [
        (b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n", "required"),
        (message(1, cl_value="-1"), "bad Content-Length"),
        (message(1, cl_value="five"), "bad Content-Length"),
        (message(1, cl_value="５"), "bad Content-Length"),
        (message(1, cl_value=""), "bad Content-Length"),
        (message(1, cl_value="1 2"), "bad Content-Length"),
        (message(1).replace(b"\r\n\r\n", b"\r\nl: 0\r\n\r\n"), "more than one"),
        (message(1, cl_value="9" * 5000), "too large"),
        (message(1, cl_value=str(2**20 + 1)), "too large"),
    ],
)
def test_framing_errors(data, match):
    with pytest.raises(SipParseError, match=match):
        StreamFramer().feed(data)


def test_start_line_is_not_mistaken_for_a_header():
    data = b"OPTIONS sip:l:5@example.com SIP/2.0\r\n" + message(1).split(b"\r\n", 1)[1]
    assert StreamFramer().feed(data) == [data]


def test_oversize_body_is_refused_before_buffering():
    framer = StreamFramer(max_body_bytes=100)
    with pytest.raises(SipParseError, match="body too large") as info:
        framer.feed(message(1, cl_value="101"))
    assert info.value.status == 513


def test_oversize_header_section_is_refused():
    framer = StreamFramer(max_header_bytes=1024)
    with pytest.raises(SipParseError, match="header section too large"):
        framer.feed(b"OPTIONS sip:a@example.com SIP/2.0\r\n" + b"X-Pad: " + b"a" * 2000)
    framer = StreamFramer(max_header_bytes=1024)
    with pytest.raises(SipParseError, match="header section too large"):
        framer.feed(b"OPTIONS sip:a@example.com SIP/2.0\r\nX-Pad: " + b"a" * 2000 + b"\r\nl: 0\r\n\r\n")


def test_default_limits():
    framer = StreamFramer()
    assert framer.feed(b"X" * MAX_HEADER_BYTES) == []
    with pytest.raises(SipParseError):
        framer.feed(b"X")


def test_slow_header_is_not_rescanned_quadratically():
    framer = StreamFramer()
    head = message(1)
    for i in range(len(head) - 1):
        assert framer.feed(head[i : i + 1]) == []
    assert framer.feed(head[-1:]) == [head]


def test_framed_message_parses_as_stream():
    (framed,) = StreamFramer().feed(message(7, b"hello"))
    msg = parse_message(framed, stream=True)
    assert isinstance(msg, Request) and msg.body == b"hello"


def test_error_carries_the_messages_framed_ahead_of_it():
    # Found by fuzzing (tests/fuzz, sip_parser): how the bytes were chunked decided
    # whether the whole messages ahead of a broken one were delivered or lost.
    broken = b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n"  # no Content-Length
    with pytest.raises(FramingError) as caught:
        StreamFramer().feed(message(1) + message(2) + broken)
    assert caught.value.messages == [message(1), message(2)]
    assert isinstance(caught.value, SipParseError) and caught.value.status == 400
    framer = StreamFramer()
    assert framer.feed(message(1) + message(2)) == [message(1), message(2)]
    with pytest.raises(FramingError) as caught:
        framer.feed(broken)
    assert caught.value.messages == []
