"""The sans-IO SSE parser, fed in every awkward way a socket might deliver."""

from __future__ import annotations

import pytest

from callbridge.agent.llm.sse import SseError, SseEvent, SseParser


def feed_all(parser: SseParser, chunks: list[bytes]) -> list[SseEvent]:
    events: list[SseEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events + parser.close()


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


STREAM = (b'data: {"a": 1}\n\n'
          b": keep-alive comment\n\n"
          b"event: note\ndata: line one\ndata: line two\nid: 7\n\n"
          b"data: [DONE]\n\n")


def expected() -> list[SseEvent]:
    return [SseEvent('{"a": 1}'),
            SseEvent("line one\nline two", event="note", id="7"),
            SseEvent("[DONE]", id="7")]


def test_whole_stream_in_one_chunk() -> None:
    assert feed_all(SseParser(), [STREAM]) == expected()


def test_byte_by_byte_gives_the_same_events() -> None:
    assert feed_all(SseParser(), byte_by_byte(STREAM)) == expected()


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_endings(newline: bytes) -> None:
    data = STREAM.replace(b"\n", newline)
    assert feed_all(SseParser(), [data]) == expected()
    assert feed_all(SseParser(), byte_by_byte(data)) == expected()


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    parser = SseParser()
    assert parser.feed(b"data: x\r") == []
    assert parser.feed(b"\n\r") == [SseEvent("x")]
    assert parser.feed(b"\n") == []  # LF completing the blank line's CR, not another line
    assert parser.feed(b"data: y\r\n\r\n") == [SseEvent("y")]


def test_done_sentinel() -> None:
    (event,) = SseParser().feed(b"data: [DONE]\n\n")
    assert event.is_done
    (event,) = SseParser().feed(b"data: [DONE] \n\n")
    assert not event.is_done


def test_comments_only_produce_nothing() -> None:
    assert feed_all(SseParser(), [b":ping\n\n: another\n\n"]) == []


def test_field_parsing_rules() -> None:
    events = SseParser().feed(b"data:no-space\n\ndata:  two spaces\n\ndata\n\n")
    assert [e.data for e in events] == ["no-space", " two spaces", ""]


def test_empty_data_line_contributes_a_newline() -> None:
    assert SseParser().feed(b"data: a\ndata:\ndata: b\n\n") == [SseEvent("a\n\nb")]


def test_unknown_fields_and_retry_are_ignored() -> None:
    assert SseParser().feed(b"retry: 10\nfoo: bar\ndata: ok\n\n") == [SseEvent("ok")]


def test_blank_line_without_data_dispatches_nothing_and_resets_event_type() -> None:
    events = SseParser().feed(b"event: x\n\ndata: y\n\n")
    assert events == [SseEvent("y", event="message")]


def test_unterminated_trailing_event_is_dropped() -> None:
    parser = SseParser()
    assert parser.feed(b"data: complete\n\ndata: partial") == [SseEvent("complete")]
    assert parser.close() == []


def test_utf8_split_across_chunks_and_leading_bom() -> None:
    data = "\ufeffdata: héllo ☎\n\n".encode()
    assert feed_all(SseParser(), byte_by_byte(data)) == [SseEvent("héllo ☎")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert SseParser().feed(b"data: \xff\n\n") == [SseEvent("\ufffd")]


def test_endless_line_is_rejected() -> None:
    parser = SseParser(max_line_bytes=16)
    with pytest.raises(SseError):
        parser.feed(b"data: " + b"x" * 32)
