"""The offline back end on its own, with the real models: events in the order a session needs them."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from callbridge.agent.brain.intents import IntentEngine
from callbridge.agent.desk import DEMO_INTENTS
from callbridge.agent.local import LocalBackend
from callbridge.agent.realtime import (AgentAudio, AgentTranscript, SessionSetup, SpeechStarted, ToolCall, TurnEnded,
                                       TurnTiming, UserTranscript)
from callbridge.media.resample import resample
from callbridge.speech import Transcriber, synthesizer_for

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
    assert said.text == "Order 4572 is shipped. It is arriving on Thursday."
    audio = np.concatenate([e.pcm for e in events if isinstance(e, AgentAudio)])
    assert len(audio) / backend.output_rate > 2.0 and np.abs(audio).max() > 3000
    [timing] = [e for e in events if isinstance(e, TurnTiming)]
    assert timing.vad_ms >= 550, timing  # the caller's pause is honoured before we answer
    await backend.close()


async def test_a_short_pause_mid_sentence_is_not_the_end_of_the_turn(models):
    brain, transcriber, synth = models
    backend = LocalBackend(brain=brain, transcriber=transcriber, synthesizer=synth, input_rate=RATE)
    await backend.start(SessionSetup(instructions="", language="en", voice=None, tools=[]))
    # A hesitation of about 400 ms (piper pads the clips with ~0.19 s and ~0.05 s of quiet): longer
    # than the 250 ms that starts recognition, shorter than the 600 ms that ends a turn.
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
