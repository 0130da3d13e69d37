"""A call's typed event stream: the fold into the record, immutability, consumers and waits."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from callbridge.call import events as ev
from callbridge.call.call import Call, CallStatus, EndReason, Leg
from callbridge.call.transcript import CallTranscript


def new_call() -> Call:
    return Call(direction="inbound", leg=Leg(SimpleNamespace(call_id="sip-1")))


def test_events_are_numbered_in_order_and_every_consumer_sees_each_once():
    call = new_call()
    seen_a, seen_b = [], []
    call.consumers += [lambda c, p: seen_a.append((p.seq, p.type)), lambda c, p: seen_b.append(p.seq)]
    call.publish(ev.StatusChanged(status=CallStatus.RINGING))
    call.publish(ev.DtmfReceived(digit="5", source="rfc4733", duration_ms=120.0))
    call.publish(ev.StatusChanged(status=CallStatus.ACTIVE))
    assert seen_a == [(1, "status"), (2, "dtmf"), (3, "status")]
    assert seen_b == [1, 2, 3]
    assert call.status is CallStatus.ACTIVE and call.answered_at == call.history[2].at
    assert call.dtmf == [{"at": call.history[1].at, "digit": "5", "source": "rfc4733", "duration_ms": 120.0}]


def test_a_failing_consumer_does_not_stop_the_others_or_the_call():
    call = new_call()
    seen = []

    def broken(c, p):
        raise RuntimeError("bug")

    call.consumers += [broken, lambda c, p: seen.append(p.type)]
    call.publish(ev.StatusChanged(status=CallStatus.ACTIVE))
    assert seen == ["status"] and call.status is CallStatus.ACTIVE


def test_what_was_published_cannot_change_afterwards():
    call = new_call()
    arguments = {"order": "1234", "nested": {"a": 1}}
    sink = CallTranscript(call)
    turn = sink.tool_called("lookup_order", arguments)
    arguments["order"] = "9999"
    arguments["nested"]["a"] = 2
    published = call.history[-1]
    assert published.data()["arguments"] == {"order": "1234", "nested": {"a": 1}}
    with pytest.raises(TypeError):
        published.event.arguments["order"] = "x"  # type: ignore[index]
    # The tool's result is an event of its own; the call event is untouched by it.
    sink.tool_finished(turn, "lookup_order", ok=True, duration_ms=12.34, result={"status": "shipped"})
    assert published.data() == {"turn": 0, "name": "lookup_order", "arguments": {"order": "1234", "nested": {"a": 1}}}
    assert call.history[-1].type == "tool_result"
    assert call.history[-1].data() == {"turn": 0, "name": "lookup_order", "ok": True, "duration_ms": 12.3,
                                       "result": {"status": "shipped"}}
    # ... and the record (the fold) shows the outcome.
    assert call.transcript[0]["ok"] is True and call.transcript[0]["result"] == {"status": "shipped"}


def test_the_transcript_fold_matches_the_updates():
    call = new_call()
    sink = CallTranscript(call)
    user = sink.add("user", "where is my order", turn_id="u1")
    agent = sink.add("agent", "It shipped", turn_id="a1")
    sink.update(agent, text="It shipped on Thursday.")
    sink.barge_in(agent, planned="It shipped on Thursday.", heard="It shipped", heard_s=0.84)
    sink.latency(agent, vad=200.4, stt=150, brain=90, tts_first_audio=120, total=610)
    renewal = sink.renewed(session=2, reason="scheduled", prepare_ms=80.04, handover_ms=0.4, replayed_ms=0)
    assert (user, agent, renewal) == (0, 1, 2)
    assert call.transcript[1] == {"at": call.transcript[1]["at"], "turn": 1, "role": "agent", "turn_id": "a1",
                                  "text": "It shipped", "planned": "It shipped on Thursday.", "interrupted": True,
                                  "heard_s": 0.84,
                                  "latency_ms": {"vad": 200, "stt": 150, "brain": 90, "tts_first_audio": 120,
                                                 "total": 610}}
    assert call.transcript[2]["role"] == "renewal" and call.transcript[2]["prepare_ms"] == 80.0
    assert [p.type for p in call.history] == ["transcript", "transcript", "turn_updated", "barge_in", "latency",
                                              "renewal"]
    # Entries handed out are copies: editing them changes nothing.
    sink.entries()[1]["text"] = "changed"
    assert call.transcript[1]["text"] == "It shipped"


def test_an_update_for_a_turn_that_never_was_changes_nothing():
    call = new_call()
    CallTranscript(call).update(7, text="x")
    assert call.transcript == [] and call.history[-1].type == "turn_updated"


def test_the_record_is_a_snapshot_not_live_state():
    call = new_call()
    call.publish(ev.DtmfReceived(digit="1", source="info"))
    record = call.to_record()
    call.publish(ev.DtmfReceived(digit="2", source="info"))
    CallTranscript(call).add("user", "hi")
    assert [d["digit"] for d in record["dtmf"]] == ["1"] and record["transcript"] == []
    assert [e["type"] for e in record["events"]] == ["dtmf"]
    json.dumps(call.to_record())  # enums and mappings serialise


def test_hangup_sets_the_end_reason_and_times_from_the_event():
    call = new_call()
    call.publish(ev.StatusChanged(status=CallStatus.ACTIVE))
    call.publish(ev.StatusChanged(status=CallStatus.HANGUP, end_reason=EndReason.BUSY))
    assert call.end_reason is EndReason.BUSY and call.ended_at == call.history[-1].at
    assert call.to_record()["end_reason"] == "busy"
    assert call.history[-1].data() == {"status": "hangup", "end_reason": "busy"}


@pytest.mark.asyncio
async def test_answered_and_ended_wake_on_the_event_without_polling():
    call = new_call()
    answered = asyncio.ensure_future(call.answered(5))
    ended = asyncio.ensure_future(call.ended(5))
    await asyncio.sleep(0)
    assert not answered.done()
    call.publish(ev.StatusChanged(status=CallStatus.ACTIVE))
    assert await answered is True
    assert not ended.done()
    call.publish(ev.StatusChanged(status=CallStatus.HANGUP, end_reason=EndReason.CALLER_HANGUP))
    assert await ended is True
    assert await call.answered(0) is True  # already answered: no wait


@pytest.mark.asyncio
async def test_answered_is_false_when_the_call_ends_unanswered_or_the_timeout_passes():
    call = new_call()
    waiting = asyncio.ensure_future(call.answered(5))
    await asyncio.sleep(0)
    call.publish(ev.StatusChanged(status=CallStatus.HANGUP, end_reason=EndReason.NO_ANSWER))
    assert await waiting is False
    assert await new_call().answered(0.01) is False
    assert await new_call().ended(0.01) is False


@pytest.mark.asyncio
async def test_wait_for_returns_the_matching_event_and_drops_timed_out_waiters():
    call = new_call()
    with pytest.raises(TimeoutError):
        await call.wait_for(lambda e: isinstance(e, ev.ReferAccepted), 0.01)
    waiting = asyncio.ensure_future(call.wait_for(lambda e: isinstance(e, ev.ReferProgress) and e.final, 5))
    await asyncio.sleep(0)
    call.publish(ev.ReferAccepted(status=202))
    call.publish(ev.ReferProgress(status=100, final=False))
    call.publish(ev.ReferProgress(status=200, final=True))
    event = await waiting
    assert isinstance(event, ev.ReferProgress) and event.status == 200
    assert call._waiters == []
