"""ChatBrain against a protocol-faithful fake OpenAI server over real HTTP."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from callbridge.agent.llm import (
    ChatBrain,
    ChatConfig,
    ChatError,
    ChatEvent,
    Done,
    SentenceReady,
    SentenceSplitter,
    TextDelta,
    ToolCallRequest,
    ToolOutcome,
    run_turn,
)
from tests.support.fake_openai import FakeOpenAI

MESSAGES = [{"role": "system", "content": "You answer phones."},
            {"role": "user", "content": "Where is my order?"}]
TOOLS = [{"type": "function", "function": {
    "name": "lookup_order", "description": "Find an order.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}}}}]


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key="sk-test") as fake:
        yield fake


def make_brain(server: FakeOpenAI, **overrides: object) -> ChatBrain:
    settings: dict = {"api_key": "sk-test", "timeout_s": 2.0} | overrides
    return ChatBrain(ChatConfig(base_url=server.base_url, model="fake-model", **settings))


async def collect(brain: ChatBrain, tools: list[dict] | None = None) -> list[ChatEvent]:
    async with brain:
        return [event async for event in brain.stream(MESSAGES, tools)]


def of_type[T](events: list[ChatEvent], kind: type[T]) -> list[T]:
    return [event for event in events if isinstance(event, kind)]


# -- text and sentences ------------------------------------------------------

async def test_text_is_streamed_and_the_first_sentence_arrives_early(server: FakeOpenAI) -> None:
    server.reply_text("Hello", " there, it is 3.5 miles. ", "How can", 0.5, " I help", " you?")
    timeline: list[tuple[float, ChatEvent]] = []
    async with make_brain(server) as brain:
        async for event in brain.stream(MESSAGES, None):
            timeline.append((time.monotonic(), event))
    events = [event for _, event in timeline]

    assert "".join(e.text for e in of_type(events, TextDelta)) == \
        "Hello there, it is 3.5 miles. How can I help you?"
    assert [e.text for e in of_type(events, SentenceReady)] == \
        ["Hello there, it is 3.5 miles.", "How can I help you?"]
    first_sentence_at = next(t for t, e in timeline if isinstance(e, SentenceReady))
    done_at = next(t for t, e in timeline if isinstance(e, Done))
    assert done_at - first_sentence_at >= 0.4  # it came before the server's pause
    assert events[-1] == Done("stop", {"prompt_tokens": 7, "completion_tokens": 5,
                                       "total_tokens": 12})


async def test_request_is_an_openai_streaming_request(server: FakeOpenAI) -> None:
    server.reply_text("Hi.")
    await collect(make_brain(server, temperature=0.1, max_tokens=42), TOOLS)
    (request,) = server.requests
    assert request.method == "POST" and request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.json == {"model": "fake-model", "messages": MESSAGES, "stream": True,
                            "stream_options": {"include_usage": True}, "temperature": 0.1,
                            "max_tokens": 42, "tools": TOOLS}


async def test_no_authorization_header_without_a_key() -> None:
    async with FakeOpenAI(api_key=None) as server:
        server.reply_text("Fine.")
        events = await collect(make_brain(server, api_key=None))
    assert "authorization" not in server.requests[0].headers
    assert of_type(events, SentenceReady) == [SentenceReady("Fine.")]


async def test_shared_http_client_is_not_closed_by_the_brain(server: FakeOpenAI) -> None:
    server.reply_text("One.")
    server.reply_text("Two.")
    async with httpx.AsyncClient() as http:
        brain = ChatBrain(ChatConfig(server.base_url, "fake-model", api_key="sk-test"), http)
        await collect(brain)
        second = await collect(brain)
        assert not http.is_closed
    assert of_type(second, SentenceReady) == [SentenceReady("Two.")]


# -- tool calls --------------------------------------------------------------

async def test_tool_call_is_assembled_from_fragments(server: FakeOpenAI) -> None:
    arguments = {"order_id": "A-17", "note": "leave at the door"}
    server.reply_tool_call("lookup_order", arguments, call_id="call_abc", fragments=5)
    events = await collect(make_brain(server), TOOLS)

    (call,) = of_type(events, ToolCallRequest)
    assert (call.id, call.name) == ("call_abc", "lookup_order")
    assert json.loads(call.arguments_json) == arguments
    assert not of_type(events, TextDelta)
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "tool_calls"
    assert events[-1].usage is not None and events[-1].usage["completion_tokens"] == 5


async def test_parallel_tool_calls_keep_their_order(server: FakeOpenAI) -> None:
    server.reply_tool_calls([("call_1", "lookup_order", {"order_id": "1"}),
                             ("call_2", "transfer", {"queue": "billing"})])
    events = await collect(make_brain(server), TOOLS)
    assert [(c.id, c.name, json.loads(c.arguments_json)) for c in of_type(events, ToolCallRequest)] \
        == [("call_1", "lookup_order", {"order_id": "1"}),
            ("call_2", "transfer", {"queue": "billing"})]


# -- failures become ChatError events -----------------------------------------

async def test_wrong_key_gives_auth_error_with_server_message(server: FakeOpenAI) -> None:
    events = await collect(make_brain(server, api_key="sk-wrong"))
    assert events == [ChatError("auth", "Incorrect API key provided.", 401)]


@pytest.mark.parametrize(("status", "kind"), [(429, "rate_limit"), (500, "server"), (400, "http")])
async def test_http_errors_carry_kind_status_and_message(
        server: FakeOpenAI, status: int, kind: str) -> None:
    server.reply_error(status, f"scripted {status}")
    events = await collect(make_brain(server))
    assert events == [ChatError(kind, f"scripted {status}", status)]


async def test_stalled_server_times_out(server: FakeOpenAI) -> None:
    server.reply_stall()
    started = time.monotonic()
    events = await collect(make_brain(server, timeout_s=0.3))
    assert [e.kind for e in events] == ["timeout"]
    assert time.monotonic() - started < 2


async def test_stall_mid_stream_times_out(server: FakeOpenAI) -> None:
    server.reply_stall(after_first_chunk=True)
    events = await collect(make_brain(server, timeout_s=0.3))
    assert isinstance(events[-1], ChatError) and events[-1].kind == "timeout"


async def test_malformed_chunk_is_a_protocol_error(server: FakeOpenAI) -> None:
    good = {"choices": [{"index": 0, "delta": {"content": "Partial "}, "finish_reason": None}]}
    server.reply_raw(b"data: " + json.dumps(good).encode() + b'\n\ndata: {"choices": [\n\n')
    events = await collect(make_brain(server))
    assert events[0] == TextDelta("Partial ")
    assert isinstance(events[-1], ChatError) and events[-1].kind == "protocol"
    assert not of_type(events, Done)


async def test_stream_cut_before_finish_is_a_protocol_error(server: FakeOpenAI) -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}
    server.reply_raw(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    events = await collect(make_brain(server))
    assert isinstance(events[-1], ChatError) and events[-1].kind == "protocol"


async def test_finished_stream_without_done_marker_is_tolerated(server: FakeOpenAI) -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "Ok."}, "finish_reason": "stop"}]}
    server.reply_raw(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    events = await collect(make_brain(server))
    assert events == [TextDelta("Ok."), SentenceReady("Ok."), Done("stop", None)]


async def test_error_object_inside_the_stream(server: FakeOpenAI) -> None:
    server.reply_raw(b'data: {"error": {"message": "model overloaded"}}\n\n')
    events = await collect(make_brain(server))
    assert events == [ChatError("upstream", "model overloaded")]


async def test_unreachable_server_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    brain = ChatBrain(ChatConfig(f"http://127.0.0.1:{port}/v1", "m", timeout_s=1))
    events = await collect(brain)
    assert [e.kind for e in events] == ["connection"]


async def test_fake_server_refuses_non_streaming_requests(server: FakeOpenAI) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(server.base_url + "/chat/completions",
                                   headers={"Authorization": "Bearer sk-test"},
                                   json={"model": "m", "messages": MESSAGES})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


# -- sentence splitting --------------------------------------------------------

def split_streamed(text: str) -> list[str]:
    splitter = SentenceSplitter()
    sentences = [s for ch in text for s in splitter.push(ch)]
    tail = splitter.flush()
    return sentences + ([tail] if tail else [])


@pytest.mark.parametrize(("text", "sentences"), [
    ("It costs 3.50. Anything else?", ["It costs 3.50.", "Anything else?"]),
    ("Mr. Smith will call. Dr. Who too.", ["Mr. Smith will call.", "Dr. Who too."]),
    ("See e.g. the U.S. office. Done", ["See e.g. the U.S. office.", "Done"]),
    ("Ask J. Smith now! Really?! Yes...", ["Ask J. Smith now!", "Really?!", "Yes..."]),
    ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
    ("1. Press one. 2. Press two.", ["1. Press one.", "2. Press two."]),
    ("Version 2.0.1 is out", ["Version 2.0.1 is out"]),
    ("   ", []),
])
def test_sentence_boundaries(text: str, sentences: list[str]) -> None:
    assert split_streamed(text) == sentences


# -- a full turn with tools -------------------------------------------------------

@dataclass
class FakeResult:
    ok: bool
    value: Any = None
    error: str | None = None
    duration_ms: float = 1.5


class FakeRegistry:
    """Stands in for the tool registry: same two methods, no dependency on it."""

    def __init__(self) -> None:
        self.invocations: list[tuple[str, Any, Any]] = []

    def schemas(self) -> list[dict]:
        return TOOLS

    async def invoke(self, name: str, arguments: Any, context: Any) -> FakeResult:
        self.invocations.append((name, arguments, context))
        if name != "lookup_order":
            return FakeResult(False, error=f"unknown tool {name!r}")
        return FakeResult(True, {"status": "shipped", "order": json.loads(arguments)["order_id"]})


async def run_all(brain: ChatBrain, messages: list[dict], registry: FakeRegistry,
                  **options: Any) -> list:
    async with brain:
        return [event async for event in run_turn(brain, messages, registry, **options)]


async def test_run_turn_calls_the_tool_and_feeds_the_result_back(server: FakeOpenAI) -> None:
    server.reply_tool_call("lookup_order", {"order_id": "A-17"}, call_id="call_9")
    server.reply_text("Your order ", "has shipped.")
    registry = FakeRegistry()
    messages = list(MESSAGES)
    events = await run_all(make_brain(server), messages, registry, context="ctx")

    assert registry.invocations == [("lookup_order", '{"order_id": "A-17"}', "ctx")]
    (outcome,) = of_type(events, ToolOutcome)
    assert outcome.ok and json.loads(outcome.content) == {"status": "shipped", "order": "A-17"}
    assert of_type(events, SentenceReady) == [SentenceReady("Your order has shipped.")]
    assert [e.finish_reason for e in of_type(events, Done)] == ["stop"]
    assert messages[2:] == [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_9", "type": "function",
            "function": {"name": "lookup_order", "arguments": '{"order_id": "A-17"}'}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": outcome.content},
        {"role": "assistant", "content": "Your order has shipped."},
    ]
    assert server.requests[1].json["messages"] == messages[:-1]


async def test_run_turn_drops_tools_after_the_last_round(server: FakeOpenAI) -> None:
    server.reply_tool_call("no_such_tool", {})
    server.reply_text("Sorry, I cannot do that.")
    events = await run_all(make_brain(server), list(MESSAGES), FakeRegistry(), max_tool_rounds=1)
    (outcome,) = of_type(events, ToolOutcome)
    assert not outcome.ok and "unknown tool" in json.loads(outcome.content)["error"]
    assert "tools" in server.requests[0].json and "tools" not in server.requests[1].json


async def test_run_turn_stops_at_the_first_error(server: FakeOpenAI) -> None:
    server.reply_error(500)
    messages = list(MESSAGES)
    events = await run_all(make_brain(server), messages, FakeRegistry())
    assert [type(e) for e in events] == [ChatError] and messages == MESSAGES
