"""CallFlowIO's own rules: type-ahead, barge-in, a failing voice or recogniser never ending the call,
and every wait (a REFER's outcome, a bridged leg) settled by the calls' events, not by polling.

The stream here is a stand-in that records what the IO asks of it; the real
stream and SIP peers are exercised in tests/interop/test_ivr.py.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np

import pytest

from callbridge.call import events as ev
from callbridge.call.call import Call, CallStatus, Leg
from callbridge.ivr.callio import CallFlowIO, CallHungUp
from callbridge.ivr.handoff import HandoffContext
from callbridge.media.playback import Interrupted


class StandInStream:
    sample_rate = 8000
    telephone_event_pt = 101

    def __init__(self) -> None:
        self.played: list = []
        self.flushed = 0
        self.audio_listeners: list = []
        self.dtmf_sent: list[str] = []
        self._pending: asyncio.Future | None = None

    def send_dtmf(self, digits: str) -> None:
        self.dtmf_sent.append(digits)

    def play(self, source) -> asyncio.Future:
        self.played.append(source)
        self._pending = asyncio.get_running_loop().create_future()  # a long prompt: never finishes by itself
        return self._pending

    def flush(self) -> Interrupted | None:
        self.flushed += 1
        if self._pending is None or self._pending.done():
            return None
        self._pending.set_result(False)
        return Interrupted(self.played[-1], played_samples=4000)


class Prompts:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    async def pcm_async(self, spec, rate):
        if self.fail:
            raise RuntimeError("voice model missing")
        return np.zeros(rate * 5, np.int16)


class StandInManager:
    """Records what the IO asks of the call manager; the test plays the far end's answers as events."""

    def __init__(self) -> None:
        self.referred: list[tuple[Call, str]] = []
        self.hung_up: list[tuple[Call, str]] = []

    def transfer(self, call: Call, target: str) -> None:
        self.referred.append((call, target))
        call.publish(ev.TransferRequested(target=target, method="refer"))

    def hangup(self, call: Call, reason: str) -> None:
        self.hung_up.append((call, reason))
        end(call)


def make_call(status: CallStatus = CallStatus.ACTIVE, call_id: str = "c1") -> Call:
    call = Call(direction="inbound", leg=Leg(session=SimpleNamespace(call_id=call_id)), status=status)
    call.leg.stream = StandInStream()
    return call


def make_io(prompts=None, transcriber=None, start_agent=None, dial=None):
    call = make_call()
    manager = StandInManager()
    io = CallFlowIO(call, manager, prompts=prompts or Prompts(), start_agent=start_agent, transcriber=transcriber,
                    dial=dial)
    return io, call, manager


def press(manager, call, digit: str) -> None:
    call.publish(ev.DtmfReceived(digit=digit, source="rfc4733"))


def end(call: Call) -> None:
    if call.status is not CallStatus.HANGUP:
        call.publish(ev.StatusChanged(status=CallStatus.HANGUP, end_reason=ev.EndReason.CALLER_HANGUP))


def later(delay: float, fn, *args) -> None:
    asyncio.get_running_loop().call_later(delay, fn, *args)


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
    assert call.consumers == []  # no longer told about the call's events
    press(manager, call, "5")
    assert await io.read_digit(0) is None


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


def context() -> HandoffContext:
    return HandoffContext(agent="assistant", caller_number="+15555550100", caller_name=None, called_number="100",
                          language="es", reason="billing")


async def test_a_refer_that_the_far_end_completes_is_a_transfer():
    io, call, manager = make_io()
    # the 202 and the final NOTIFY arrive together, before the IO runs again: neither may be missed
    later(0.01, lambda: (call.publish(ev.ReferAccepted(status=202)),
                         call.publish(ev.ReferProgress(status=200, final=True))))
    assert await asyncio.wait_for(io.transfer("sip:op@127.0.0.1", method="refer", trunk=None), 1) is True
    assert manager.referred == [(call, "sip:op@127.0.0.1")]


async def test_a_refer_whose_new_call_fails_is_not_a_transfer():
    io, call, _ = make_io()
    later(0.01, call.publish, ev.ReferAccepted(status=202))
    later(0.02, call.publish, ev.ReferProgress(status=100, final=False))
    later(0.03, call.publish, ev.ReferProgress(status=486, final=True))
    assert await asyncio.wait_for(io.transfer("sip:op@127.0.0.1", method="refer", trunk=None), 1) is False


async def test_a_refused_refer_is_not_a_transfer():
    io, call, _ = make_io()
    later(0.01, call.publish, ev.ReferFailed(status=403))
    assert await asyncio.wait_for(io.transfer("sip:op@127.0.0.1", method="refer", trunk=None), 1) is False


async def test_a_202_without_a_notify_is_trusted_after_the_grace(monkeypatch):
    monkeypatch.setattr("callbridge.ivr.callio.NOTIFY_GRACE_S", 0.05)
    io, call, _ = make_io()
    later(0.01, call.publish, ev.ReferAccepted(status=202))
    assert await asyncio.wait_for(io.transfer("sip:op@127.0.0.1", method="refer", trunk=None), 1) is True


async def test_no_answer_to_a_refer_at_all_is_not_a_transfer(monkeypatch):
    monkeypatch.setattr("callbridge.ivr.callio.TRANSFER_TIMEOUT_S", 0.05)
    io, call, _ = make_io()
    assert await asyncio.wait_for(io.transfer("sip:op@127.0.0.1", method="refer", trunk=None), 1) is False
    assert not call._waiters or all(f.done() for _, f in call._waiters)  # no waiter left behind


async def test_the_transferee_hanging_up_means_the_transfer_took():
    io, call, _ = make_io()
    later(0.01, end, call)
    assert await asyncio.wait_for(io.transfer("sip:op@127.0.0.1", method="refer", trunk=None), 1) is True


async def test_a_bridge_waits_for_the_answer_then_for_either_side_to_hang_up():
    other = make_call(CallStatus.DIALING, "far")

    async def dial(target, trunk):
        later(0.02, other.publish, ev.StatusChanged(status=CallStatus.RINGING))
        later(0.04, other.publish, ev.StatusChanged(status=CallStatus.ACTIVE))
        later(0.08, end, other)  # the far end hangs up: the caller's leg goes too
        return other

    io, call, manager = make_io(dial=dial)
    assert await asyncio.wait_for(io.transfer("+15550100", method="bridge", trunk="carrier"), 1) is True
    [bridged] = call.events_of(ev.Bridged)
    assert (bridged.target, bridged.other_call) == ("+15550100", other.id)
    assert manager.hung_up == [(call, "bridge_ended")]


async def test_a_bridge_nobody_answers_is_given_up():
    other = make_call(CallStatus.DIALING, "far")

    async def dial(target, trunk):
        later(0.02, manager.hangup, other, "no_answer")  # 480 from the far end
        return other

    io, call, manager = make_io(dial=dial)
    assert await asyncio.wait_for(io.transfer("+15550100", method="bridge", trunk="carrier"), 1) is False
    assert call.status is CallStatus.ACTIVE and call.events_of(ev.Bridged) == []


async def test_a_caller_who_hangs_up_while_the_bridge_rings_cancels_it():
    other = make_call(CallStatus.DIALING, "far")

    async def dial(target, trunk):
        return other

    io, call, manager = make_io(dial=dial)
    later(0.02, end, call)
    with pytest.raises(CallHungUp):
        await asyncio.wait_for(io.transfer("+15550100", method="bridge", trunk="carrier"), 1)
    assert (other, "caller_hangup") in manager.hung_up


async def test_a_handoff_publishes_the_context_and_gives_the_agent_a_port():
    seen = {}

    async def agent(name, port):
        seen["name"], seen["port"] = name, port
        turn = port.transcript.add("agent", "Hola.", turn_id="t1")
        port.transcript.update(turn, text="Hola, ¿en qué le ayudo?")
        port.send_dtmf("12#")
        port.note("agent_notice", text="Un momento, por favor.")
        assert await port.read_digit(0) == "4"
        assert await port.ended(0.01) is False

    io, call, manager = make_io(start_agent=agent)
    press(manager, call, "4")
    await io.handoff("assistant", context())
    port = seen["port"]
    assert seen["name"] == "assistant" and port.context.language == "es" and port.call_id == call.id
    assert port.sample_rate == 8000 and not hasattr(port, "stream") and not hasattr(port, "call")
    [handed] = call.events_of(ev.HandedOff)
    assert handed.agent == "assistant" and handed.context["reason"] == "billing"
    assert call.handoff["agent"] == "assistant" and call.handoff["language"] == "es"
    assert [(e["role"], e["text"]) for e in call.transcript] == [("agent", "Hola, ¿en qué le ayudo?")]
    assert [type(p.event) for p in call.history if isinstance(p.event, (ev.TurnAdded, ev.TurnUpdated))] == [
        ev.TurnAdded, ev.TurnUpdated]  # an update is an event of its own
    assert call.leg.stream.dtmf_sent == ["12#"] and call.events_of(ev.DtmfSent)[0].method == "rfc4733"
    assert call.ivr[-1]["type"] == "agent_notice" and call.events_of(ev.IvrStep)[-1].kind == "agent_notice"


async def test_a_handoff_after_the_caller_left_reaches_no_agent():
    async def agent(name, port):
        raise AssertionError("the agent must not start")

    io, call, _ = make_io(start_agent=agent)
    end(call)
    with pytest.raises(CallHungUp):
        await io.handoff("assistant", context())


def test_ivr_path_entries_are_events():
    io, call, _ = make_io()
    io.record("node", node="main_menu", type="menu", skipped=None)
    [step] = call.events_of(ev.IvrStep)
    assert step.kind == "node" and dict(step.details) == {"node": "main_menu", "node_type": "menu"}
    assert call.ivr[0]["type"] == "node" and call.ivr[0]["node_type"] == "menu" and "skipped" not in call.ivr[0]


def no_polling(monkeypatch) -> None:
    """Make any timed sleep fail: listen() must be woken by audio, its deadline or the call's end."""
    real_sleep = asyncio.sleep

    async def sleep(delay, result=None):
        assert delay == 0, f"listen() polled with asyncio.sleep({delay})"
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", sleep)


async def test_listen_gives_up_at_its_deadline_without_polling(monkeypatch):
    io, call, _ = make_io(transcriber=lambda: pytest.fail("nothing was said: nothing to transcribe"))
    stream = call.leg.stream
    no_polling(monkeypatch)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(io.listen(timeout=0.2, language="en", hints=[]), 5) is None
    assert loop.time() - started >= 0.2
    assert stream.audio_listeners == []  # the detector no longer hears the call


async def test_listen_ends_when_the_caller_hangs_up_without_polling(monkeypatch):
    io, call, _ = make_io(transcriber=lambda: pytest.fail("nothing was said: nothing to transcribe"))
    no_polling(monkeypatch)
    later(0.05, end, call)
    with pytest.raises(CallHungUp):
        await asyncio.wait_for(io.listen(timeout=30, language="en", hints=[]), 5)
    assert call.leg.stream.audio_listeners == []
