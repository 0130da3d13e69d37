"""Nova Sonic output events: whatever JSON arrives, the read loop gets events or nothing.

An exception out of ``decode_output_event`` or ``NovaOutput.feed`` ends the
session's read loop (it is reported as a backend error), so malformed events
must be dropped instead. The cases were found by fuzzing (tests/fuzz,
target ``nova_events``) and by reviewing the handlers it exercised.
"""

from __future__ import annotations

import json

import pytest

from callbridge.agent.providers.nova_events import NovaOutput, decode_output_event
from callbridge.agent.realtime import AgentTranscript, Usage


@pytest.mark.parametrize("raw", [
    b"7", b"[1]", b'"text"', b"null", b"\xff\xfe", b"{", b"[" * 100_000,
])
def test_anything_but_a_json_object_is_dropped(raw: bytes) -> None:
    assert decode_output_event(raw) is None  # found by fuzzing: 7 reached feed() as an int


def test_empty_chunk_is_an_empty_event() -> None:
    assert decode_output_event(b"") == {} and decode_output_event(None) == {}


def event(name: str, fields: dict) -> dict:
    return decode_output_event(json.dumps({"event": {name: fields}}).encode())  # type: ignore[return-value]


@pytest.mark.parametrize("value", ["x", [1], 1e400, {"a": 1}, -5])
def test_unreadable_usage_totals_count_as_zero(value) -> None:
    # Found by fuzzing: int("x") escaped from the usage handler.
    output = NovaOutput()
    (usage,) = output.feed(event("usageEvent", {"totalInputTokens": value, "totalOutputTokens": 4}))
    assert isinstance(usage, Usage) and (usage.input_tokens, usage.output_tokens) == (0, 4)


def test_usage_totals_still_give_deltas() -> None:
    output = NovaOutput()
    output.feed(event("usageEvent", {"totalInputTokens": 10, "totalOutputTokens": "4"}))
    (usage,) = output.feed(event("usageEvent", {"totalInputTokens": 15, "totalOutputTokens": 6}))
    assert (usage.input_tokens, usage.output_tokens) == (5, 2)


def test_audio_that_is_not_a_string_is_dropped() -> None:
    assert NovaOutput().feed(event("audioOutput", {"contentId": "c", "content": 5})) == []


def test_deeply_nested_json_inside_fields_is_harmless() -> None:
    output = NovaOutput()
    deep = "[" * 100_000
    assert output.feed(event("contentStart", {"contentId": "c", "role": "ASSISTANT", "type": "TEXT",
                                              "additionalModelFields": deep})) == []
    (transcript,) = output.feed(event("textOutput", {"contentId": "c", "content": "interrupted" + deep}))
    assert isinstance(transcript, AgentTranscript)
