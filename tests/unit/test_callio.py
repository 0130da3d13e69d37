"""CallFlowIO's own rules: type-ahead, barge-in, and a failing voice or recogniser never ending the call.

The stream here is a stand-in that records what the IO asks of it; the real
stream and SIP peers are exercised in tests/interop/test_ivr.py.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np

from callbridge.call.call import Call, CallStatus, Leg
from callbridge.ivr.callio import CallFlowIO
from callbridge.media.dtmf import DtmfEvent
from callbridge.media.playback import Interrupted


class StandInStream:
    sample_rate = 8000

    def __init__(self) -> None:
        self.played: list = []
        self.flushed = 0
        self.audio_listeners: list = []
        self._pending: asyncio.Future | None = None

    def play(self, source) -> asyncio.Future:
        self.played.append(source)
        self._pending = asyncio.get_running_loop().create_future()  # a long prompt: never finishes by itself
        return self._pending

    def flush(self) -> Interrupted:
        self.flushed += 1
        self._pending.set_result(False)
        return Interrupted(self.played[-1], played_samples=4000)


class Prompts:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    async def pcm_async(self, spec, rate):
        if self.fail:
            raise RuntimeError("voice model missing")
        return np.zeros(rate * 5, np.int16)


def make_io(prompts=None, transcriber=None):
    call = Call(direction="inbound", leg=Leg(session=SimpleNamespace(call_id="c1")), status=CallStatus.ACTIVE)
    call.leg.stream = StandInStream()
    manager = SimpleNamespace(dtmf_listeners=[], listeners=[])
    io = CallFlowIO(call, manager, prompts=prompts or Prompts(), start_agent=None, transcriber=transcriber)
    return io, call, manager


def press(manager, call, digit: str) -> None:
    for listener in manager.dtmf_listeners:
        listener(call, DtmfEvent(digit, "rfc4733", 0.0))


async def test_a_key_during_a_prompt_stops_it_and_stays_queued():
    io, call, manager = make_io()
    asyncio.get_running_loop().call_later(0.05, press, manager, call, "4")
    await asyncio.wait_for(io.say("a long prompt", language="en", voice=None), 2)
    assert call.leg.stream.flushed == 1
    assert [e["heard_s"] for e in call.ivr if e["type"] == "barge_in"] == [0.5]
    assert await io.read_digit(0) == "4"
    assert await io.read_digit(0) is None


async def test_keys_pressed_ahead_skip_the_prompt():
    io, call, manager = make_io()
    press(manager, call, "1")
    press(manager, call, "2")
    await io.say("menu", language="en", voice=None)
    assert call.leg.stream.played == [] and call.ivr[-1]["type"] == "prompt_skipped"
    assert [await io.read_digit(0), await io.read_digit(0)] == ["1", "2"]


async def test_other_calls_keys_are_not_ours():
    io, call, manager = make_io()
    other = Call(direction="inbound", leg=Leg(session=SimpleNamespace(call_id="c2")))
    press(manager, other, "9")
    assert await io.read_digit(0.01) is None
    io.close()
    assert manager.dtmf_listeners == []


async def test_a_failing_voice_skips_the_prompt_but_keeps_the_call():
    io, call, manager = make_io(Prompts(fail=True))
    await io.say("hello", language="en", voice=None)
    assert call.status is CallStatus.ACTIVE
    assert call.ivr[-1]["type"] == "prompt_failed" and "voice model missing" in call.ivr[-1]["error"]
    press(manager, call, "3")
    assert await io.read_digit(0.1) == "3"  # the menu still works


async def test_a_failing_recogniser_counts_as_not_understood():
    class Broken:
        async def transcribe_async(self, *args, **kwargs):
            raise RuntimeError("model file truncated")

    io, call, _ = make_io(transcriber=lambda: Broken())
    stream = call.leg.stream

    async def talk():
        await asyncio.sleep(0.05)
        # The utterance detector needs real speech; feed it a clip of the real synthesiser.
        from callbridge.media.resample import resample
        from callbridge.speech import synthesizer_for

        synth = synthesizer_for("en")
        said = resample(synth.synthesize("I would like to pay my bill please."), synth.sample_rate, 8000)
        for i in range(0, len(said) - 159, 160):
            for listener in list(stream.audio_listeners):
                listener(said[i:i + 160])
        for _ in range(60):  # then a second of silence ends the utterance
            for listener in list(stream.audio_listeners):
                listener(np.zeros(160, np.int16))

    asyncio.get_running_loop().create_task(talk())
    assert await asyncio.wait_for(io.listen(timeout=3, language="en", hints=[]), 10) is None
    assert call.ivr[-1]["type"] == "speech_failed" and call.status is CallStatus.ACTIVE


def test_a_number_is_referred_to_the_peer_that_sent_the_call():
    io, call, _ = make_io()
    call.leg.session.source = SimpleNamespace(host="54.172.60.1", port=5060)
    assert io._refer_uri("+1 (555) 010-0000") == "sip:+15550100000@54.172.60.1:5060"
    assert io._refer_uri("sip:operator@pbx.example.com") == "sip:operator@pbx.example.com"
