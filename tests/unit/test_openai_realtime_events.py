"""The sans-IO half of the OpenAI Realtime adapter (GA events) and the stand-in's energy VAD."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from callbridge.agent.providers.openai_events import (
    AUDIO_FORMATS,
    ServerEventInterpreter,
    TurnDetection,
    history_item,
    map_error,
    realtime_tool,
    session_update,
)
from callbridge.agent.realtime import (
    ErrorCode,
    AgentAudio,
    AgentTranscript,
    BackendError,
    SessionSetup,
    SpeechStarted,
    ToolCall,
    TurnEnded,
    Usage,
    UserTranscript,
)
from callbridge.media.codecs.g711 import ulaw_encode
from callbridge.standins.openai_vad import EnergyVad, VadBoundary

TOOL = {"type": "function", "function": {"name": "end_call", "description": "Hang up.",
                                         "parameters": {"type": "object", "properties": {}}}}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def started(interpreter: ServerEventInterpreter, response_id: str = "resp_1", item_id: str = "item_1",
            kind: str = "message", **item: str) -> None:
    interpreter.receive({"type": "response.created", "response": {"id": response_id, "status": "in_progress"}})
    interpreter.receive({"type": "response.output_item.added", "response_id": response_id, "output_index": 0,
                         "item": {"id": item_id, "type": kind, **item}})


def audio_delta(item_id: str, data: bytes, response_id: str = "resp_1") -> dict:
    return {"type": "response.output_audio.delta", "response_id": response_id, "item_id": item_id,
            "output_index": 0, "content_index": 0, "delta": b64(data)}


def test_session_update_is_the_ga_shape() -> None:
    setup = SessionSetup(instructions="Be brief.", language="de-DE", voice=None, tools=[TOOL])
    event = session_update(setup, audio=AUDIO_FORMATS["g711_ulaw"], voice="cedar", transcription_model="whisper-1",
                           turn_detection=TurnDetection(threshold=0.6, silence_duration_ms=700))
    session = event["session"]
    assert event["type"] == "session.update" and session["type"] == "realtime"
    assert session["instructions"] == "Be brief." and session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["format"] == session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["input"]["turn_detection"] == {
        "type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 300, "silence_duration_ms": 700,
        "create_response": True, "interrupt_response": False}
    assert session["audio"]["input"]["transcription"] == {"model": "whisper-1", "language": "de"}
    assert session["audio"]["output"]["voice"] == "cedar"
    assert session["tools"] == [realtime_tool(TOOL)] == [
        {"type": "function", "name": "end_call", "description": "Hang up.",
         "parameters": {"type": "object", "properties": {}}}]
    assert "temperature" not in session  # not a GA session field
    pcm = session_update(setup, audio=AUDIO_FORMATS["pcm16"], voice="cedar", transcription_model="whisper-1",
                         turn_detection=TurnDetection())
    assert pcm["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}


def test_history_items_use_ga_content_types() -> None:
    assert history_item({"role": "user", "text": "hi"})["item"]["content"] == [{"type": "input_text", "text": "hi"}]
    assistant = history_item({"role": "assistant", "text": "hello"}, "cb_1")
    assert assistant["event_id"] == "cb_1" and assistant["type"] == "conversation.item.create"
    assert assistant["item"] == {"type": "message", "role": "assistant",
                                 "content": [{"type": "output_text", "text": "hello"}]}


def test_pcm16_audio_deltas_decode_across_an_odd_split() -> None:
    interpreter = ServerEventInterpreter(AUDIO_FORMATS["pcm16"])
    started(interpreter)
    samples = np.array([1, -2, 300, -32768, 32767], dtype="<i2").tobytes()
    first = interpreter.receive(audio_delta("item_1", samples[:3]))
    second = interpreter.receive(audio_delta("item_1", samples[3:]))
    pcm = np.concatenate([e.pcm for e in first + second])
    assert np.array_equal(pcm, [1, -2, 300, -32768, 32767])
    assert all(isinstance(e, AgentAudio) and e.turn_id == "item_1" for e in first + second)


def test_ulaw_audio_deltas_decode_at_8khz() -> None:
    interpreter = ServerEventInterpreter(AUDIO_FORMATS["g711_ulaw"])
    started(interpreter)
    pcm = (np.sin(np.arange(160) / 5) * 8000).astype(np.int16)
    [event] = interpreter.receive(audio_delta("item_1", ulaw_encode(pcm)))
    assert len(event.pcm) == 160 and np.abs(event.pcm.astype(int) - pcm).max() < 300


def test_turn_events_map_to_agent_events() -> None:
    interpreter = ServerEventInterpreter(AUDIO_FORMATS["pcm16"])
    assert interpreter.receive({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0,
                                "item_id": "item_u"}) == [SpeechStarted()]
    assert interpreter.receive({"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_u",
                                "content_index": 0, "transcript": " Two pizzas. "}) == [
        UserTranscript("Two pizzas.", True, "item_u")]
    started(interpreter)
    interpreter.receive(audio_delta("item_1", bytes(4800)))
    assert interpreter.receive({"type": "response.output_audio_transcript.done", "item_id": "item_1",
                                "response_id": "resp_1", "transcript": "Sure."}) == [
        AgentTranscript("Sure.", "item_1", True)]
    done = interpreter.receive({"type": "response.done", "response": {
        "id": "resp_1", "status": "completed",
        "usage": {"input_tokens": 20, "output_tokens": 7, "total_tokens": 27}}})
    assert done[0] == TurnEnded("item_1", "completed")
    assert isinstance(done[1], Usage) and (done[1].input_tokens, done[1].output_tokens) == (20, 7)
    assert done[1].audio_seconds_out == pytest.approx(0.1) and done[1].extra["total_tokens"] == 27
    assert interpreter.active_response is None


def test_function_call_takes_its_name_from_the_output_item() -> None:
    interpreter = ServerEventInterpreter(AUDIO_FORMATS["pcm16"])
    started(interpreter, item_id="item_f", kind="function_call", name="end_call", call_id="call_9")
    # GA function_call_arguments.done carries no name: it comes from output_item.added
    events = interpreter.receive({"type": "response.function_call_arguments.done", "response_id": "resp_1",
                                  "item_id": "item_f", "output_index": 0, "call_id": "call_9", "arguments": "{}"})
    assert events == [ToolCall("call_9", "end_call", "{}")]
    [ended] = interpreter.receive({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    assert ended == TurnEnded("resp_1", "tool_call")


def test_interrupt_cancels_a_generating_response_and_clamps_the_truncation() -> None:
    interpreter = ServerEventInterpreter(AUDIO_FORMATS["pcm16"])
    started(interpreter)
    interpreter.receive(audio_delta("item_1", bytes(2 * 24 * 250)))  # 250 ms arrived
    assert interpreter.interrupt("item_1", 900) == [
        {"type": "response.cancel", "response_id": "resp_1"},
        {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0, "audio_end_ms": 250}]
    # late audio and text for the cut item must not reach the session
    assert interpreter.receive(audio_delta("item_1", bytes(480))) == []
    assert interpreter.receive({"type": "response.output_audio_transcript.done", "item_id": "item_1",
                                "transcript": "Sure, we have"}) == []
    assert interpreter.receive({"type": "response.done", "response": {"id": "resp_1", "status": "cancelled"}}) == [
        TurnEnded("item_1", "interrupted")]


def test_speech_during_a_response_cancels_it_and_drops_its_late_output() -> None:
    interpreter = ServerEventInterpreter(AUDIO_FORMATS["pcm16"])
    started(interpreter)
    assert len(interpreter.receive(audio_delta("item_1", bytes(4800)))) == 1
    assert interpreter.receive({"type": "input_audio_buffer.speech_started", "audio_start_ms": 900,
                                "item_id": "item_u"}) == [SpeechStarted()]
    assert interpreter.take_outgoing() == [{"type": "response.cancel", "response_id": "resp_1"}]
    assert interpreter.take_outgoing() == []
    assert interpreter.receive(audio_delta("item_1", bytes(4800))) == []  # would restart playback
    # the session then reports what was played: only the truncation is left to send
    assert interpreter.interrupt("item_1", 60) == [
        {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0, "audio_end_ms": 60}]


def test_speech_with_no_response_generating_sends_nothing() -> None:
    interpreter = ServerEventInterpreter(AUDIO_FORMATS["pcm16"])
    assert interpreter.receive({"type": "input_audio_buffer.speech_started", "item_id": "item_u"}) == [
        SpeechStarted()]
    assert interpreter.take_outgoing() == []


def test_interrupt_after_the_response_finished_only_truncates() -> None:
    interpreter = ServerEventInterpreter(AUDIO_FORMATS["pcm16"])
    started(interpreter)
    interpreter.receive(audio_delta("item_1", bytes(2 * 24 * 1000)))
    interpreter.receive({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    assert interpreter.interrupt("item_1", 400) == [
        {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0, "audio_end_ms": 400}]
    assert interpreter.interrupt("item_unknown", 400) == []


@pytest.mark.parametrize(("error", "code", "recoverable"), [
    ({"type": "invalid_request_error", "code": "session_expired",
      "message": "Your session hit the maximum duration of 60 minutes."}, ErrorCode.SESSION_EXPIRED, True),
    ({"type": "invalid_request_error", "code": "rate_limit_exceeded"}, ErrorCode.THROTTLED, True),
    ({"type": "server_error", "code": None}, ErrorCode.INTERNAL, True),
    ({"type": "invalid_request_error", "code": "invalid_value"}, ErrorCode.INVALID, True),
    ({"type": "invalid_request_error", "code": "invalid_api_key"}, ErrorCode.AUTH, False),
    ({}, ErrorCode.INTERNAL, True),
])
def test_errors_map_to_contract_codes(error: dict, code: str, recoverable: bool) -> None:
    assert map_error(error) == (code, recoverable)


def test_an_error_event_fails_the_session_but_a_cancel_race_does_not() -> None:
    interpreter = ServerEventInterpreter(AUDIO_FORMATS["pcm16"])
    assert interpreter.receive({"type": "error", "error": {"type": "invalid_request_error",
                                                           "code": "response_cancel_not_active"}}) == []
    assert not interpreter.failed
    [event] = interpreter.receive({"type": "error", "error": {"type": "server_error", "message": "boom"}})
    assert isinstance(event, BackendError) and event.code == ErrorCode.INTERNAL and "boom" in event.message
    assert interpreter.failed


def test_unknown_and_informational_events_are_ignored() -> None:
    interpreter = ServerEventInterpreter(AUDIO_FORMATS["pcm16"])
    for kind in ("rate_limits.updated", "conversation.item.added", "response.output_audio_transcript.delta",
                 "something.new"):
        assert interpreter.receive({"type": kind}) == []


def test_energy_vad_reports_padded_start_and_silence_confirmed_end() -> None:
    vad = EnergyVad(8000, threshold=0.5, prefix_padding_ms=100, silence_duration_ms=200)
    quiet, loud = np.zeros(8 * 500, np.int16), np.full(8 * 300, 8000, np.int16)
    assert vad.feed(quiet) == []
    assert vad.feed(loud[:37]) == []  # less than a frame: nothing judged yet
    assert vad.feed(loud[37:]) == [VadBoundary("started", 400)]
    assert vad.feed(quiet[: 8 * 190]) == []
    assert vad.feed(quiet[8 * 190:]) == [VadBoundary("stopped", 1000)]
    assert not vad.in_speech
