"""The OpenAI Realtime adapter against the GA stand-in, over a real WebSocket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from callbridge.agent.providers.openai_realtime import OpenAIRealtimeBackend, OpenAIRealtimeConfig
from callbridge.agent.realtime import (
    ErrorCode,
    AgentAudio,
    AgentEvent,
    AgentTranscript,
    BackendError,
    ProviderError,
    SessionSetup,
    SpeechStarted,
    ToolCall,
    TurnEnded,
    Usage,
    UserTranscript,
)
from callbridge.media.codecs.g711 import ulaw_decode, ulaw_encode
from callbridge.standins.openai_realtime import OpenAIRealtimeScript, OpenAIRealtimeStandin, Reply

KEY = "sk-test-standin"
TIMEOUT_S = 5.0
SILENCE_MS = 200  # short server-VAD silence keeps the tests fast
TOOLS = [{"type": "function", "function": {
    "name": "lookup_order", "description": "Find an order by its number.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}]


def config(server: OpenAIRealtimeStandin, **overrides: Any) -> OpenAIRealtimeConfig:
    fields: dict[str, Any] = {"api_key": KEY, "url": server.url, "silence_duration_ms": SILENCE_MS,
                              "prefix_padding_ms": 100}
    fields.update(overrides)
    return OpenAIRealtimeConfig(**fields)


def setup(greeting: str | None = None, history: list[dict[str, str]] | None = None) -> SessionSetup:
    return SessionSetup(instructions="You answer the phone for Pizza Co.", language="en-US", voice=None,
                        tools=TOOLS, history=history or [], greeting=greeting)


def tone(ms: int, rate: int, amplitude: int = 8000) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return (amplitude * np.sin(2 * np.pi * 300 * t)).astype(np.int16)


def speak(backend: OpenAIRealtimeBackend, speech_ms: int = 300, silence_ms: int = 2 * SILENCE_MS) -> None:
    """A caller utterance, then enough silence for the server VAD to end the turn."""
    rate = backend.input_rate
    audio = np.concatenate([tone(speech_ms, rate), np.zeros(rate * silence_ms // 1000, np.int16)])
    for frame in np.array_split(audio, max(1, len(audio) // (rate // 50))):
        backend.send_audio(frame)


async def collect(backend: OpenAIRealtimeBackend, until: Callable[[AgentEvent], bool],
                  into: list[AgentEvent] | None = None) -> list[AgentEvent]:
    """Events until one matches ``until`` (included); fails after TIMEOUT_S."""
    events = into if into is not None else []
    stream = backend.events()
    async with asyncio.timeout(TIMEOUT_S):
        async for event in stream:
            events.append(event)
            if until(event):
                return events
    raise AssertionError(f"event stream ended first: {events}")


async def drain(backend: OpenAIRealtimeBackend) -> list[AgentEvent]:
    """All remaining events; fails unless the stream ends within TIMEOUT_S."""
    async with asyncio.timeout(TIMEOUT_S):
        return [event async for event in backend.events()]


async def eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT_S):
        while not condition():
            await asyncio.sleep(0.01)


def turn_ended(event: AgentEvent) -> bool:
    return isinstance(event, TurnEnded)


def audio_of(events: list[AgentEvent], turn_id: str) -> np.ndarray:
    return np.concatenate([e.pcm for e in events if isinstance(e, AgentAudio) and e.turn_id == turn_id])


async def test_reply_audio_and_transcripts_arrive_in_order() -> None:
    script = (OpenAIRealtimeScript().reply("Pizza Co, how can I help?", audio_ms=400)
              .reply("We open at nine.", audio_ms=600, transcript="when do you open"))
    async with OpenAIRealtimeStandin(script, key=KEY) as server:
        backend = OpenAIRealtimeBackend(config(server))
        assert backend.input_rate == backend.output_rate == 24_000
        await backend.start(setup(greeting="Pizza Co, how can I help?"))
        try:
            greeting = await collect(backend, turn_ended)
            first = next(e for e in greeting if isinstance(e, AgentAudio))
            assert len(audio_of(greeting, first.turn_id)) == 400 * 24
            assert [type(e) for e in greeting if not isinstance(e, AgentAudio)] == [AgentTranscript, TurnEnded]
            assert greeting[-2] == AgentTranscript("Pizza Co, how can I help?", first.turn_id, True)
            assert greeting[-1] == TurnEnded(first.turn_id, "completed")

            speak(backend)
            events = await collect(backend, turn_ended)
            kinds = [type(e) for e in events if not isinstance(e, (AgentAudio, Usage))]
            assert kinds == [SpeechStarted, UserTranscript, AgentTranscript, TurnEnded]
            user = next(e for e in events if isinstance(e, UserTranscript))
            assert (user.text, user.final) == ("when do you open", True)
            reply = next(e for e in events if isinstance(e, AgentTranscript))
            assert reply.text == "We open at nine." and reply.final
            assert len(audio_of(events, reply.turn_id)) == 600 * 24
            audio_at = [i for i, e in enumerate(events) if isinstance(e, AgentAudio)]
            assert events.index(user) < audio_at[0] and audio_at[-1] < events.index(reply)
            usage = await collect(backend, lambda e: isinstance(e, Usage))
            assert usage[-1].output_tokens > 0 and usage[-1].audio_seconds_out == pytest.approx(0.6)

            record = server.sessions[0]
            session = record.session
            assert session["type"] == "realtime" and session["instructions"].startswith("You answer the phone")
            assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
            assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
            assert session["audio"]["input"]["transcription"]["model"]
            assert session["tools"][0]["name"] == "lookup_order" and "function" not in session["tools"][0]
            assert record.model == "gpt-realtime"
            greeting_request = record.received("response.create")[0]
            assert "Pizza Co, how can I help?" in greeting_request["response"]["instructions"]
        finally:
            await backend.close()


async def test_function_call_then_tool_result_then_spoken_answer() -> None:
    script = OpenAIRealtimeScript().function_call(
        "lookup_order", {"order_id": "42"}, Reply("Order 42 left the oven.", audio_ms=300),
        transcript="where is order 42")
    async with OpenAIRealtimeStandin(script, key=KEY) as server:
        backend = OpenAIRealtimeBackend(config(server))
        await backend.start(setup())
        try:
            speak(backend)
            events = await collect(backend, turn_ended)
            call = next(e for e in events if isinstance(e, ToolCall))
            assert call.name == "lookup_order" and json.loads(call.arguments) == {"order_id": "42"}
            assert events[-1].reason == "tool_call"

            backend.send_tool_result(call.call_id, '{"status": "baked"}')
            answer = await collect(backend, turn_ended)
            spoken = next(e for e in answer if isinstance(e, AgentTranscript))
            assert spoken.text == "Order 42 left the oven."
            assert len(audio_of(answer, spoken.turn_id)) == 300 * 24
            assert answer[-1] == TurnEnded(spoken.turn_id, "completed")

            record = server.sessions[0]
            assert record.function_outputs == [{"type": "function_call_output", "call_id": call.call_id,
                                                "output": '{"status": "baked"}'}]
            types = record.types()
            assert types.index("response.create") > types.index("conversation.item.create")
        finally:
            await backend.close()


async def test_barge_in_cancels_and_truncates_at_what_was_heard() -> None:
    script = OpenAIRealtimeScript()
    script.reply("Welcome to Pizza Co where every pie is baked fresh to order.", audio_ms=3000, speed=1.0)
    script.listen("wait a second")
    async with OpenAIRealtimeStandin(script, key=KEY) as server:
        backend = OpenAIRealtimeBackend(config(server))
        await backend.start(setup(greeting="Welcome to Pizza Co where every pie is baked fresh to order."))
        try:
            received = 0

            def enough_audio(event: AgentEvent) -> bool:  # a session can only have played what arrived
                nonlocal received
                received += len(event.pcm) if isinstance(event, AgentAudio) else 0
                return received >= 300 * 24

            events = await collect(backend, enough_audio)
            turn = events[0].turn_id
            speak(backend, speech_ms=200)  # the caller talks over the greeting
            await collect(backend, lambda e: isinstance(e, SpeechStarted), events)
            backend.interrupted(turn, "Welcome to", 150)
            after = await collect(backend, turn_ended)
            assert after[-1] == TurnEnded(turn, "interrupted")
            assert not any(isinstance(e, AgentTranscript) for e in after)  # the session already knows what was heard

            record = server.sessions[0]
            await eventually(lambda: bool(record.truncations))
            assert len(record.received("response.cancel")) == 1
            assert record.truncations == [{"item_id": turn, "content_index": 0, "audio_end_ms": 150}]
            assert not [e for e in record.sent if e["type"] == "error"]
            done = [e for e in record.sent if e["type"] == "response.done"][0]
            assert done["response"]["status"] == "cancelled"
        finally:
            await backend.close()


@pytest.mark.parametrize(("error_type", "code", "expected"), [
    ("server_error", "server_error", ErrorCode.INTERNAL),
    ("invalid_request_error", "rate_limit_exceeded", ErrorCode.THROTTLED),
    ("invalid_request_error", "invalid_value", ErrorCode.INVALID),
])
async def test_error_mid_turn_is_a_backend_error_and_ends_the_stream(error_type: str, code: str,
                                                                    expected: str) -> None:
    script = OpenAIRealtimeScript().error(code, "Something broke.", type=error_type, partial_audio_ms=200)
    async with OpenAIRealtimeStandin(script, key=KEY) as server:
        backend = OpenAIRealtimeBackend(config(server))
        await backend.start(setup(greeting="Hello"))
        try:
            events = await drain(backend)
            assert any(isinstance(e, AgentAudio) for e in events)  # the failure came mid-turn
            errors = [e for e in events if isinstance(e, BackendError)]
            assert len(errors) == 1 and errors[0].code == expected and errors[0].recoverable
            assert events[-1] is errors[0]
        finally:
            await backend.close()


async def test_session_limit_is_session_expired() -> None:
    script = OpenAIRealtimeScript(session_limit_s=0.3)
    async with OpenAIRealtimeStandin(script, key=KEY) as server:
        backend = OpenAIRealtimeBackend(config(server))
        await backend.start(setup())
        try:
            events = await drain(backend)
            assert len(events) == 1 and isinstance(events[0], BackendError)
            assert events[0].code == ErrorCode.SESSION_EXPIRED and events[0].recoverable
            assert "maximum duration" in events[0].message
            await asyncio.wait_for(server.sessions[0].closed.wait(), TIMEOUT_S)
        finally:
            await backend.close()


async def test_connection_lost_is_unavailable() -> None:
    server = OpenAIRealtimeStandin(OpenAIRealtimeScript(), key=KEY)
    await server.start()
    backend = OpenAIRealtimeBackend(config(server))
    try:
        await backend.start(setup())
        await server.close()  # the provider goes away without an error event
        events = await drain(backend)
        assert [(type(e), e.code) for e in events] == [(BackendError, ErrorCode.UNAVAILABLE)]
    finally:
        await backend.close()
        await server.close()


async def test_wrong_key_is_auth_error_and_not_recoverable() -> None:
    async with OpenAIRealtimeStandin(OpenAIRealtimeScript(), key=KEY) as server:
        backend = OpenAIRealtimeBackend(config(server, api_key="sk-wrong"))
        with pytest.raises(ProviderError) as caught:
            await backend.start(setup())
        assert caught.value.code == ErrorCode.AUTH and not caught.value.recoverable
        assert server.rejected == [401] and server.sessions == []
        await backend.close()


async def test_refused_connection_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = OpenAIRealtimeBackend(OpenAIRealtimeConfig(api_key=KEY, url=f"ws://127.0.0.1:{port}/v1/realtime"))
    with pytest.raises(ProviderError) as caught:
        await backend.start(setup())
    assert caught.value.code == ErrorCode.UNAVAILABLE and caught.value.recoverable
    await backend.close()


async def test_history_arrives_before_the_first_audio_and_in_order() -> None:
    history = [{"role": "user", "text": "I would like a pizza."},
               {"role": "assistant", "text": "Which size?"},
               {"role": "user", "text": "Large, with olives."}]
    async with OpenAIRealtimeStandin(OpenAIRealtimeScript(), key=KEY) as server:
        backend = OpenAIRealtimeBackend(config(server))
        backend.send_audio(np.zeros(480, np.int16))  # the session may hand over audio early
        await backend.start(setup(history=history))
        try:
            backend.send_audio(np.zeros(480, np.int16))
            record = await server.session()
            await eventually(lambda: len(record.input_audio) == 2 * 960)
            assert [(i["role"], i["content"]) for i in record.history] == [
                ("user", [{"type": "input_text", "text": "I would like a pizza."}]),
                ("assistant", [{"type": "output_text", "text": "Which size?"}]),
                ("user", [{"type": "input_text", "text": "Large, with olives."}]),
            ]
            types = record.types()
            first_audio = types.index("input_audio_buffer.append")
            creates = [i for i, t in enumerate(types) if t == "conversation.item.create"]
            assert types[0] == "session.update" and len(creates) == 3 and max(creates) < first_audio
            assert not [e for e in record.sent if e["type"] == "error"]
        finally:
            await backend.close()


async def test_pcm16_input_bytes_arrive_exactly() -> None:
    rng = np.random.default_rng(7)
    async with OpenAIRealtimeStandin(OpenAIRealtimeScript(), key=KEY) as server:
        backend = OpenAIRealtimeBackend(config(server))
        await backend.start(setup())
        try:
            chunks = [rng.integers(-200, 200, size, dtype=np.int16) for size in (137, 480, 1001, 3, 960, 2400)]
            for chunk in chunks:
                backend.send_audio(chunk)
            expected = np.concatenate(chunks).astype("<i2").tobytes()
            record = server.sessions[0]
            await eventually(lambda: len(record.input_audio) >= len(expected))
            assert bytes(record.input_audio) == expected
            appends = record.received("input_audio_buffer.append")
            assert 1 < len(appends) < len(chunks) + 2  # batched, not one event a frame
            assert record.extensions is None  # no permessage-deflate: base64 audio is not worth deflating
        finally:
            await backend.close()


async def test_g711_ulaw_is_8khz_on_the_wire_both_ways() -> None:
    rng = np.random.default_rng(11)
    script = OpenAIRealtimeScript().reply("Hi.", audio_ms=200)
    async with OpenAIRealtimeStandin(script, key=KEY) as server:
        backend = OpenAIRealtimeBackend(config(server, audio_format="g711_ulaw"))
        assert backend.input_rate == backend.output_rate == 8000
        await backend.start(setup(greeting="Hi."))
        try:
            greeting = await collect(backend, turn_ended)
            pcm = audio_of(greeting, greeting[-1].turn_id)
            assert len(pcm) == 200 * 8
            record = server.sessions[0]
            sent = b"".join(base64.b64decode(e["delta"]) for e in record.sent
                            if e["type"] == "response.output_audio.delta")
            assert np.array_equal(pcm, ulaw_decode(sent))

            chunks = [rng.integers(-300, 300, size, dtype=np.int16) for size in (160, 77, 800, 1)]
            for chunk in chunks:
                backend.send_audio(chunk)
            expected = ulaw_encode(np.concatenate(chunks))
            await eventually(lambda: len(record.input_audio) >= len(expected))
            assert bytes(record.input_audio) == expected
            assert record.session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
            assert record.session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
        finally:
            await backend.close()


# -- the stand-in on its own: bad input gets an error event, never a crash -------------------

async def raw_session(server: OpenAIRealtimeStandin) -> Any:
    return await connect(f"{server.url}?model=gpt-realtime", additional_headers={"Authorization": f"Bearer {KEY}"})


async def next_of(ws: Any, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == kind:
                return event


async def test_standin_answers_bad_input_with_error_events_and_keeps_going() -> None:
    async with OpenAIRealtimeStandin(OpenAIRealtimeScript(), key=KEY) as server:
        async with await raw_session(server) as ws:
            created = await next_of(ws, "session.created")
            assert created["session"]["type"] == "realtime" and created["event_id"]
            bad = [
                ("{not json", "invalid_json", None),
                (json.dumps({"type": "response.dance"}), "invalid_value", "type"),
                (json.dumps({"type": "session.update", "session": {"voice": "alloy"}}),
                 "missing_required_parameter", "session.type"),
                (json.dumps({"type": "session.update", "session": {"type": "realtime", "temperature": 0.7}}),
                 "unknown_parameter", "session.temperature"),
                (json.dumps({"type": "session.update", "session": {"type": "realtime", "tools": TOOLS}}),
                 "unknown_parameter", "session.tools[0].function"),
                (json.dumps({"type": "conversation.item.create", "event_id": "e1", "item": {
                    "type": "message", "role": "assistant", "content": [{"type": "text", "text": "beta"}]}}),
                 "invalid_value", "item.content[0].type"),
                (json.dumps({"type": "response.cancel"}), "response_cancel_not_active", None),
                (json.dumps({"type": "input_audio_buffer.append", "audio": "***"}), "invalid_value", "audio"),
            ]
            for raw, code, param in bad:
                await ws.send(raw)
                error = (await next_of(ws, "error"))["error"]
                assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param), raw
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
            assert (await next_of(ws, "session.updated"))["session"]["type"] == "realtime"
        assert len(server.sessions[0].events) == len(bad) + 1


async def test_standin_rejects_truncation_past_the_audio() -> None:
    script = OpenAIRealtimeScript().reply("Hello there.", audio_ms=300)
    async with OpenAIRealtimeStandin(script, key=KEY) as server:
        async with await raw_session(server) as ws:
            await ws.send(json.dumps({"type": "response.create"}))
            done = await next_of(ws, "response.done")
            item_id = done["response"]["output"][0]["id"]
            assert done["response"]["usage"]["output_tokens"] > 0
            await ws.send(json.dumps({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                                      "audio_end_ms": 301}))
            error = (await next_of(ws, "error"))["error"]
            assert (error["code"], error["param"]) == ("invalid_value", "audio_end_ms")
            await ws.send(json.dumps({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                                      "audio_end_ms": 300}))
            assert (await next_of(ws, "conversation.item.truncated"))["audio_end_ms"] == 300
        assert server.sessions[0].truncations == [{"item_id": item_id, "content_index": 0, "audio_end_ms": 300}]


async def test_standin_requires_the_model_parameter() -> None:
    async with OpenAIRealtimeStandin(OpenAIRealtimeScript(), key=KEY) as server:
        with pytest.raises(InvalidStatus) as caught:
            await connect(server.url, additional_headers={"Authorization": f"Bearer {KEY}"})
        assert caught.value.response.status_code == 400
        assert json.loads(caught.value.response.body)["error"]["code"] == "missing_required_parameter"


async def test_dtmf_becomes_one_user_text_turn() -> None:
    script = OpenAIRealtimeScript().reply("You chose delivery.", audio_ms=200)
    async with OpenAIRealtimeStandin(script, key=KEY) as server:
        backend = OpenAIRealtimeBackend(config(server, dtmf_pause_s=0.05))
        await backend.start(setup())
        try:
            backend.send_dtmf("4")
            backend.send_dtmf("2")
            events = await collect(backend, turn_ended)
            assert any(isinstance(e, AgentTranscript) and e.text == "You chose delivery." for e in events)
            record = server.sessions[0]
            [item] = record.received("conversation.item.create")
            assert item["item"]["content"] == [{"type": "input_text", "text": "The caller pressed 4 2"}]
            assert record.types()[-1] == "response.create"
        finally:
            await backend.close()
