"""The Nova Sonic adapter, through the real AWS SDK (CRT, HTTP/2, TLS), against the Bedrock stand-in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import numpy as np
import pytest

from callbridge.agent.providers.bedrock_clients import pooled_sessions
from callbridge.agent.providers.nova_sonic import NovaSonicBackend, NovaSonicConfig
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
    UserTranscript,
)
from callbridge.standins.bedrock import BedrockStandin
from callbridge.standins.bedrock_script import (DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, BedrockScript, CallTool,
                                                Fail, Say)
from callbridge.standins.certs import StandinCertificates

EVENT_TIMEOUT_S = 5.0
SPEECH_AMPLITUDE = 6000
TOOLS = [{"type": "function", "function": {
    "name": "lookup_order", "description": "Find an order by number",
    "parameters": {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]}}}]

@asynccontextmanager
async def standin(certs: StandinCertificates, script: BedrockScript) -> AsyncIterator[BedrockStandin]:
    server = BedrockStandin(script, certs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def backend_for(server: BedrockStandin, secret: str = DEFAULT_SECRET_KEY, **config: object) -> NovaSonicBackend:
    return NovaSonicBackend(NovaSonicConfig(
        endpoint_uri=server.endpoint_uri, region="us-east-1", aws_access_key_id=DEFAULT_ACCESS_KEY,
        aws_secret_access_key=secret, max_attempts=1, **config))  # type: ignore[arg-type]


def setup(**overrides: object) -> SessionSetup:
    values: dict[str, object] = {"instructions": "You are a helpful phone agent.", "language": "en-US",
                                 "voice": "tiffany", "tools": []}
    values.update(overrides)
    return SessionSetup(**values)  # type: ignore[arg-type]


def speech(ms: int) -> np.ndarray:
    t = np.arange(16 * ms) / 16000
    return (np.sin(2 * np.pi * 300 * t) * SPEECH_AMPLITUDE).astype(np.int16)


def silence(ms: int) -> np.ndarray:
    return np.zeros(16 * ms, dtype=np.int16)


async def until(backend: NovaSonicBackend, stop: Callable[[AgentEvent], bool],
                timeout: float = EVENT_TIMEOUT_S) -> list[AgentEvent]:
    """Events up to and including the first one ``stop`` accepts."""
    seen: list[AgentEvent] = []
    async with asyncio.timeout(timeout):
        async for event in backend.events():
            seen.append(event)
            if stop(event):
                return seen
    raise AssertionError(f"stream ended before the expected event; got {seen}")


def of(kind: type, events: list[AgentEvent]) -> list:
    return [event for event in events if isinstance(event, kind)]


async def test_spoken_reply_events_order_and_exact_audio(certs: StandinCertificates) -> None:
    script = BedrockScript(turns=[Say("Hello, how can I help?", audio_ms=300, user_text="hi there")])
    history = [{"role": "user", "text": "I called earlier"}, {"role": "assistant", "text": "Welcome back."}]
    async with standin(certs, script) as server:
        backend = backend_for(server)
        await backend.start(setup(history=history, tools=TOOLS))
        sent = np.concatenate([silence(100), speech(400), silence(500), silence(7)])  # not a whole chunk
        backend.send_audio(sent[:5000])
        backend.send_audio(sent[5000:])
        events = await until(backend, lambda e: isinstance(e, TurnEnded))
        await backend.close()
        record = await server.wait_session_done(0)

    assert of(UserTranscript, events) == [UserTranscript("hi there", True, of(UserTranscript, events)[0].turn_id)]
    texts = of(AgentTranscript, events)
    assert [(t.text, t.final) for t in texts] == [("Hello, how can I help?", False), ("Hello, how can I help?", True)]
    audio = of(AgentAudio, events)
    assert sum(len(a.pcm) for a in audio) == 24000 * 300 // 1000
    turn = of(TurnEnded, events)[0]
    assert turn.reason == "completed"
    assert {t.turn_id for t in texts} | {a.turn_id for a in audio} == {turn.turn_id}

    assert len(record.audio) == 2 * len(sent)
    assert bytes(record.audio) == sent.astype("<i2").tobytes()
    assert backend.audio_samples_sent == len(sent)
    assert record.system_prompt == "You are a helpful phone agent."
    assert record.history == [("USER", "I called earlier"), ("ASSISTANT", "Welcome back.")]
    assert record.prompt_start["audioOutputConfiguration"]["voiceId"] == "tiffany"
    spec = record.prompt_start["toolConfiguration"]["tools"][0]["toolSpec"]
    assert spec["name"] == "lookup_order" and json.loads(spec["inputSchema"]["json"])["required"] == ["order"]
    first_audio = record.events.index("audioInput")
    assert record.events[:11] == ["sessionStart", "promptStart",
                                  "contentStart", "textInput", "contentEnd",  # SYSTEM
                                  "contentStart", "textInput", "contentEnd",  # USER history
                                  "contentStart", "textInput", "contentEnd"]  # ASSISTANT history
    assert record.events[11] == "contentStart" and first_audio == 12
    assert record.events[-3:] == ["contentEnd", "promptEnd", "sessionEnd"]
    assert record.ended_cleanly and not record.rejected


async def test_greeting_is_spoken_first_on_nova_2(certs: StandinCertificates) -> None:
    script = BedrockScript(greeting=Say("Welcome to Acme.", audio_ms=200))
    async with standin(certs, script) as server:
        backend = backend_for(server)
        await backend.start(setup(greeting="Welcome to Acme."))
        events = await until(backend, lambda e: isinstance(e, TurnEnded))
        await backend.close()
        record = await server.wait_session_done(0)
    assert [t.text for t in of(AgentTranscript, events) if t.final] == ["Welcome to Acme."]
    assert len(record.interactive_texts) == 1 and "Welcome to Acme." in record.interactive_texts[0][1]
    # SYSTEM text, then the interactive greeting turn, then the audio content opens
    assert record.events[2:] == ["contentStart", "textInput", "contentEnd"] * 2 + [
        "contentStart", "contentEnd", "promptEnd", "sessionEnd"]


async def test_long_system_prompt_is_split_into_1kb_text_inputs(certs: StandinCertificates) -> None:
    instructions = "Ünïcødé instructions. " * 200  # ~5 KB, multi-byte characters
    async with standin(certs, BedrockScript()) as server:
        backend = backend_for(server)
        await backend.start(setup(instructions=instructions))
        await backend.close()
        record = await server.wait_session_done(0)
    assert record.system_prompt == instructions and not record.rejected


async def test_tool_call_then_spoken_answer(certs: StandinCertificates) -> None:
    script = BedrockScript(turns=[CallTool("lookup_order", {"order": "42"}, user_text="where is order 42",
                                           then=Say("Order 42 ships today.", audio_ms=200))])
    async with standin(certs, script) as server:
        backend = backend_for(server)
        await backend.start(setup(tools=TOOLS))
        backend.send_audio(np.concatenate([speech(300), silence(400)]))
        events = await until(backend, lambda e: isinstance(e, TurnEnded))
        call = of(ToolCall, events)[0]
        assert (call.name, json.loads(call.arguments)) == ("lookup_order", {"order": "42"})
        assert events[-1].reason == "tool_call"  # type: ignore[union-attr]
        backend.send_tool_result(call.call_id, '{"status": "shipped"}')
        answer = await until(backend, lambda e: isinstance(e, TurnEnded))
        await backend.close()
        record = await server.wait_session_done(0)
    assert [t.text for t in of(AgentTranscript, answer) if t.final] == ["Order 42 ships today."]
    assert answer[-1].reason == "completed"  # type: ignore[union-attr]
    assert record.tool_results == [(call.call_id, '{"status": "shipped"}')]


async def test_barge_in_interrupts_the_reply(certs: StandinCertificates) -> None:
    script = BedrockScript(turns=[Say("A very long answer.", audio_ms=4000, user_text="tell me")])
    async with standin(certs, script) as server:
        backend = backend_for(server)
        await backend.start(setup())
        backend.send_audio(np.concatenate([speech(300), silence(400)]))
        events = await until(backend, lambda e: isinstance(e, AgentAudio))
        backend.send_audio(speech(200))
        events += await until(backend, lambda e: isinstance(e, TurnEnded))
        await backend.close()
    assert of(SpeechStarted, events) == [SpeechStarted()]
    assert events[-1].reason == "interrupted"  # type: ignore[union-attr]
    assert events[-1].turn_id == of(AgentAudio, events)[0].turn_id  # type: ignore[union-attr]
    assert not [t for t in of(AgentTranscript, events) if t.final]


@pytest.mark.parametrize(("exception", "code"), [
    ("throttlingException", ErrorCode.THROTTLED),
    ("internalServerException", ErrorCode.INTERNAL),
    ("modelStreamErrorException", ErrorCode.INTERNAL),
    ("serviceUnavailableException", ErrorCode.UNAVAILABLE),
])
async def test_exception_mid_turn_is_a_backend_error(certs: StandinCertificates, exception: str, code: str) -> None:
    script = BedrockScript(turns=[Fail(exception, "scripted failure", user_text="hello", speculative="Let me")])
    async with standin(certs, script) as server:
        backend = backend_for(server)
        await backend.start(setup())
        backend.send_audio(np.concatenate([speech(300), silence(400)]))
        events = await until(backend, lambda e: isinstance(e, BackendError))
        rest = [event async for event in backend.events()]  # the iterator ends after the error
        await backend.close()
    error = events[-1]
    assert isinstance(error, BackendError) and error.code == code and error.recoverable
    assert "scripted failure" in error.message
    assert [t.final for t in of(AgentTranscript, events)] == [False] and rest == []


async def test_session_limit_is_session_expired(certs: StandinCertificates) -> None:
    async with standin(certs, BedrockScript(session_limit_s=0.5)) as server:
        backend = backend_for(server)
        await backend.start(setup())
        backend.send_audio(silence(200))
        events = await until(backend, lambda e: isinstance(e, BackendError))
        await backend.close()
    error = events[-1]
    assert isinstance(error, BackendError)
    assert (error.code, error.recoverable) == (ErrorCode.SESSION_EXPIRED, True)


async def test_sessions_share_one_connection_and_give_it_back(certs: StandinCertificates) -> None:
    # Two calls at once, then a renewal's new session: one TLS connection, one
    # native client, and nothing left leased once every session has closed.
    async with standin(certs, BedrockScript()) as server:
        first, second = backend_for(server), backend_for(server)
        await asyncio.gather(first.start(setup()), second.start(setup()))
        assert pooled_sessions() == [2]
        for backend in (first, second):
            backend.send_audio(silence(100))
        await first.close()
        third = backend_for(server)
        await third.start(setup())
        await asyncio.gather(second.close(), third.close())
        assert pooled_sessions() == [0]
        assert server.connections_accepted == 1
        assert len(server.sessions) == 3
        records = [await server.wait_session_done(index) for index in range(3)]
    # Streams on a shared connection stay apart: each got exactly its own audio.
    assert [len(record.audio) for record in records] == [3200, 3200, 0]
    assert [record.rejected for record in records] == [[], [], []]


async def test_wrong_secret_is_an_auth_error_at_start(certs: StandinCertificates) -> None:
    async with standin(certs, BedrockScript()) as server:
        backend = backend_for(server, secret="not-the-secret")
        with pytest.raises(ProviderError) as raised:
            await backend.start(setup())
        await backend.close()
    assert pooled_sessions() == [0]  # the refused session gave its client back
    assert (raised.value.code, raised.value.recoverable) == (ErrorCode.AUTH, False)
    assert "InvalidSignature" in str(raised.value)
    assert server.sessions == []  # refused before any session began


async def test_history_over_40kb_is_rejected(certs: StandinCertificates) -> None:
    history = [{"role": "user" if i % 2 == 0 else "assistant", "text": "x" * 1000} for i in range(41)]
    async with standin(certs, BedrockScript()) as server:
        backend = backend_for(server)
        await backend.start(setup(history=history))
        events = await until(backend, lambda e: isinstance(e, BackendError))
        await backend.close()
        record = server.sessions[0]
    assert events[-1].code == ErrorCode.INVALID  # type: ignore[union-attr]
    assert "history exceeds" in record.rejected[0]
    assert "audioInput" not in record.events


async def test_oversized_text_input_is_rejected_by_the_standin(certs: StandinCertificates) -> None:
    """Sent raw through the SDK, bypassing the adapter's splitting."""
    async with standin(certs, BedrockScript()) as server:
        backend = backend_for(server)
        await backend.start(setup())
        backend._enqueue({"event": {"contentStart": {  # a deliberate protocol violation
            "promptName": backend._input.prompt_name, "contentName": "big", "type": "TEXT", "role": "USER",
            "interactive": True, "textInputConfiguration": {"mediaType": "text/plain"}}}})
        backend._enqueue({"event": {"textInput": {"promptName": backend._input.prompt_name,
                                                  "contentName": "big", "content": "y" * 1025}}})
        events = await until(backend, lambda e: isinstance(e, BackendError))
        await backend.close()
    assert events[-1].code == ErrorCode.INVALID  # type: ignore[union-attr]
    assert "1025 bytes" in server.sessions[0].rejected[0]


async def test_dtmf_becomes_a_user_text_turn(certs: StandinCertificates) -> None:
    script = BedrockScript(turns=[Say("You pressed four.", audio_ms=100)])
    async with standin(certs, script) as server:
        backend = backend_for(server)
        await backend.start(setup())
        backend.send_dtmf("4")
        events = await until(backend, lambda e: isinstance(e, TurnEnded))
        await backend.close()
        record = await server.wait_session_done(0)
    assert record.interactive_texts == [("USER", "The caller pressed 4")]
    assert [t.text for t in of(AgentTranscript, events) if t.final] == ["You pressed four."]


async def test_region_defaults_to_us_east_1_without_environment(certs: StandinCertificates) -> None:
    async with standin(certs, BedrockScript()) as server:
        backend = NovaSonicBackend(NovaSonicConfig(
            endpoint_uri=server.endpoint_uri, aws_access_key_id=DEFAULT_ACCESS_KEY,
            aws_secret_access_key=DEFAULT_SECRET_KEY, max_attempts=1))
        await backend.start(setup())
        await backend.close()
        record = await server.wait_session_done(0)
    assert record.ended_cleanly and record.region == "us-east-1"
