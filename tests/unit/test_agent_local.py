"""The offline back end on its own, with the real models: events in the order a session needs them."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from callbridge.agent.brain.intents import IntentEngine
from callbridge.agent.desk import DEMO_INTENTS, DEMO_INTENTS_BY_LANGUAGE
from callbridge.agent.llm import ChatBrain, ChatConfig
from callbridge.agent.local import DEFAULT_SILENCE_MS, LocalBackend
from callbridge.agent.realtime import (AgentAudio, AgentTranscript, BackendError, ErrorCode, SessionSetup,
                                       SpeechStarted, ToolCall, TurnEnded, TurnTiming, UserTranscript)
from callbridge.media.resample import resample
from callbridge.speech import Transcriber, synthesizer_for
from tests.support.fake_openai import FakeOpenAI

RATE = 16000
FRAME = RATE // 50


@pytest.fixture(scope="module")
def models():
    return IntentEngine(DEMO_INTENTS), Transcriber(beam_size=1), synthesizer_for("en")


def speech(text: str) -> np.ndarray:
    synth = synthesizer_for("en")
    return resample(synth.synthesize(text), synth.sample_rate, RATE)


async def feed(backend: LocalBackend, pcm: np.ndarray) -> None:
    """At real time, 20 ms a frame, like a call."""
    for start in range(0, len(pcm) - FRAME + 1, FRAME):
        backend.send_audio(pcm[start:start + FRAME])
        await asyncio.sleep(0.02)


async def collect(backend: LocalBackend, until, timeout: float = 20.0) -> list:
    seen = []

    async def run():
        async for event in backend.events():
            seen.append(event)
            if isinstance(event, ToolCall) and event.name == "lookup_order":
                backend.send_tool_result(event.call_id, json.dumps(
                    {"found": True, "order_id": "4572", "status": "shipped", "detail": "It is arriving on Thursday."}))
            if until(seen):
                return

    await asyncio.wait_for(run(), timeout)
    return seen


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


async def test_a_question_becomes_transcript_tool_call_and_spoken_answer(models):
    brain, transcriber, synth = models
    backend = LocalBackend(brain=brain, transcriber=transcriber, synthesizer=synth, input_rate=RATE)
    await backend.start(SessionSetup(instructions="", language="en", voice=None, tools=[]))
    talk = asyncio.get_running_loop().create_task(
        feed(backend, np.concatenate([silence(0.3), speech("What is the status of order four five seven two?"),
                                      silence(1.5)])))
    events = await collect(backend, lambda seen: any(isinstance(e, TurnEnded) for e in seen))
    await talk
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("SpeechStarted") < kinds.index("UserTranscript") < kinds.index("ToolCall")
    assert kinds.index("ToolCall") < kinds.index("AgentTranscript") < kinds.index("AgentAudio")
    [user] = [e for e in events if isinstance(e, UserTranscript)]
    [call] = [e for e in events if isinstance(e, ToolCall)]
    assert json.loads(call.arguments) == {"order_id": "4572"}, user.text
    [said] = [e for e in events if isinstance(e, AgentTranscript)]
    assert said.text == "Order number 4572 is shipped. It is arriving on Thursday."
    audio = np.concatenate([e.pcm for e in events if isinstance(e, AgentAudio)])
    assert len(audio) / backend.output_rate > 2.0 and np.abs(audio).max() > 3000
    [timing] = [e for e in events if isinstance(e, TurnTiming)]
    assert timing.vad_ms >= DEFAULT_SILENCE_MS - 50, timing  # the caller's pause is honoured before we answer
    await backend.close()


async def test_a_short_pause_mid_sentence_is_not_the_end_of_the_turn(models):
    brain, transcriber, synth = models
    backend = LocalBackend(brain=brain, transcriber=transcriber, synthesizer=synth, input_rate=RATE)
    await backend.start(SessionSetup(instructions="", language="en", voice=None, tools=[]))
    # A hesitation of about 400 ms (piper pads the clips with ~0.19 s and ~0.05 s of quiet): longer
    # than the 250 ms that starts recognition, shorter than the 500 ms that ends a turn.
    said = np.concatenate([silence(0.3), speech("What is the status of"), silence(0.15),
                           speech("order four five seven two?"), silence(1.5)])
    talk = asyncio.get_running_loop().create_task(feed(backend, said))
    events = await collect(backend, lambda seen: any(isinstance(e, TurnEnded) for e in seen))
    await talk
    users = [e.text for e in events if isinstance(e, UserTranscript)]
    assert len(users) == 1 and "status" in users[0].lower() and "4572" in users[0].replace(" ", ""), users
    assert sum(isinstance(e, SpeechStarted) for e in events) == 1, "the resumed sentence is not a barge-in"
    await backend.close()


async def test_keys_answer_the_agents_question(models):
    brain, transcriber, synth = models
    backend = LocalBackend(brain=brain, transcriber=transcriber, synthesizer=synth, input_rate=RATE)
    await backend.start(SessionSetup(instructions="", language="en", voice=None, tools=[]))
    talk = asyncio.get_running_loop().create_task(
        feed(backend, np.concatenate([silence(0.3), speech("Where is my order?"), silence(1.2)])))
    asked = await collect(backend, lambda seen: any(isinstance(e, TurnEnded) for e in seen))
    await talk
    assert [e.text for e in asked if isinstance(e, AgentTranscript)] == ["Sure. What is your order number?"]
    for key in "4572#":
        backend.send_dtmf(key)
    answered = await collect(backend, lambda seen: any(isinstance(e, TurnEnded) for e in seen))
    [call] = [e for e in answered if isinstance(e, ToolCall)]
    assert json.loads(call.arguments) == {"order_id": "4572"}
    assert [e.text for e in answered if isinstance(e, UserTranscript)] == ["4572"]
    await backend.close()


# -- the optional chat-model brain, over real HTTP + SSE -------------------------------------------


ORDER_TOOL = {"type": "function", "function": {
    "name": "lookup_order", "description": "Look up an order.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}


async def test_a_chat_model_answers_with_a_tool_and_speaks_sentence_by_sentence(models):
    _, transcriber, synth = models
    async with FakeOpenAI() as llm:
        llm.reply_tool_call("lookup_order", {"order_id": "4572"})
        llm.reply_text("Order 4572 has shipped.", 0.3, " It arrives on Thursday.")
        chat = ChatBrain(ChatConfig(base_url=llm.base_url, model=llm.model, api_key=llm.api_key))
        backend = LocalBackend(brain=None, chat=chat, transcriber=transcriber, synthesizer=synth, input_rate=RATE)
        await backend.start(SessionSetup(instructions="You are the order desk.", language="en", voice=None,
                                         tools=[ORDER_TOOL], history=[{"role": "user", "text": "My name is Ana."},
                                                                      {"role": "assistant", "text": "Hi Ana."}]))
        backend.send_text("Where is order 4572?")
        events = await collect(backend, lambda seen: any(isinstance(e, TurnEnded) for e in seen))
        await backend.close()
    [call] = [e for e in events if isinstance(e, ToolCall)]
    assert json.loads(call.arguments) == {"order_id": "4572"}
    said = [e.text for e in events if isinstance(e, AgentTranscript)]
    assert said == ["Order 4572 has shipped.", "It arrives on Thursday."]
    kinds = [type(e).__name__ for e in events]
    # the first sentence is already audio before the second one is text: streamed, not batched
    assert kinds.index("AgentAudio") < [i for i, k in enumerate(kinds) if k == "AgentTranscript"][1]
    first, second = llm.requests[0].json, llm.requests[1].json
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant", "user"]
    assert first["messages"][1]["content"] == "My name is Ana."  # the primed history reached the model
    assert first["tools"][0]["function"]["name"] == "lookup_order"
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool" and "shipped" in tool_message["content"]


async def test_a_failing_chat_model_gets_an_apology_not_silence(models):
    _, transcriber, synth = models
    async with FakeOpenAI() as llm:
        llm.reply_error(500)
        chat = ChatBrain(ChatConfig(base_url=llm.base_url, model=llm.model, api_key=llm.api_key))
        backend = LocalBackend(brain=None, chat=chat, transcriber=transcriber, synthesizer=synth, input_rate=RATE)
        await backend.start(SessionSetup(instructions="", language="en", voice=None, tools=[]))
        backend.send_text("Hello?")
        events = await collect(backend, lambda seen: any(isinstance(e, TurnEnded) for e in seen))
        await backend.close()
    assert any(isinstance(e, BackendError) and "chat model" in e.message for e in events)
    said = [e.text for e in events if isinstance(e, AgentTranscript)]
    assert said and said[0].startswith("Sorry")
    assert any(isinstance(e, AgentAudio) for e in events)


async def test_spanish_callers_get_the_spanish_intents_and_voice():
    brain = IntentEngine(DEMO_INTENTS_BY_LANGUAGE["es"])
    synth = synthesizer_for("es")
    backend = LocalBackend(brain=brain, transcriber=None, synthesizer=synth, input_rate=RATE)
    await backend.start(SessionSetup(instructions="", language="es", voice=None, tools=[]))
    backend.send_text("¿Cuál es el estado del pedido cuatro cinco siete dos?")
    events = []

    async def run():
        async for event in backend.events():
            events.append(event)
            if isinstance(event, ToolCall):
                assert json.loads(event.arguments) == {"order_id": "4572"}
                backend.send_tool_result(event.call_id, json.dumps(
                    {"found": True, "order_id": "4572", "status": "enviado", "detail": "Llega el jueves."}))
            if isinstance(event, TurnEnded):
                return

    await asyncio.wait_for(run(), 20)
    await backend.close()
    [said] = [e.text for e in events if isinstance(e, AgentTranscript)]
    assert said == "El pedido 4572: enviado. Llega el jueves."
    assert backend.output_rate == synth.sample_rate and any(isinstance(e, AgentAudio) for e in events)


async def test_a_local_session_limit_expires_like_a_cloud_one(models):
    brain, transcriber, synth = models
    backend = LocalBackend(brain=brain, transcriber=transcriber, synthesizer=synth, input_rate=RATE,
                           max_session_s=0.2)
    await backend.start(SessionSetup(instructions="", language="en", voice=None, tools=[]))
    events = [event async for event in backend.events()]  # ends by itself at the limit
    assert [type(e) for e in events] == [BackendError] and events[0].code == ErrorCode.SESSION_EXPIRED
