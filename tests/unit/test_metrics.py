"""The Prometheus text exposition of /metrics, and the event bus behind /api/events."""

from __future__ import annotations

import asyncio

import pytest

from types import SimpleNamespace

from callbridge.app.events import EventBus, sse_frame
from callbridge.call import events as ev
from callbridge.call.call import Call, CallStatus, EndReason, Leg
from callbridge.app.metrics import CallMetrics, Counter, Histogram, escape_label


def test_call_metrics_render_counters_gauges_and_histograms():
    active = [2]
    metrics = CallMetrics(lambda: active[0], lambda: 4)
    call = Call(direction="outbound", leg=Leg(SimpleNamespace(call_id="sip-1")))
    call.consumers.append(metrics)
    call.publish(ev.StatusChanged(status=CallStatus.DIALING))
    call.publish(ev.StatusChanged(status=CallStatus.DIALING))
    call.publish(ev.SessionRenewed(turn=0, session=2, reason="scheduled", prepare_ms=1, handover_ms=1, replayed_ms=0))
    call.publish(ev.TurnAdded(turn=1, role="agent", text="hello"))
    for total in (800, 4000):
        call.publish(ev.TurnLatency(turn=1, vad=0, stt=0, brain=0, tts_first_audio=0, total=total))
    call.publish(ev.MediaStats(stats={"packets_received": 100, "packets_lost": 3, "jitter_ms": 4.0}))
    call.publish(ev.StatusChanged(status=CallStatus.HANGUP, end_reason=EndReason.NO_ANSWER))
    call.publish(ev.CallEnded(reason=EndReason.NO_ANSWER))
    text = metrics.render()
    lines = text.splitlines()
    assert "callbridge_active_calls 2" in lines and "callbridge_rtp_ports_in_use 4" in lines
    assert 'callbridge_calls_total{direction="outbound",status="dialing"} 2' in lines
    assert 'callbridge_calls_ended_total{direction="outbound",end_reason="no_answer"} 1' in lines
    assert "callbridge_agent_session_renewals_total 1" in lines
    assert 'callbridge_agent_turn_latency_seconds_bucket{le="0.75"} 0' in lines
    assert 'callbridge_agent_turn_latency_seconds_bucket{le="1"} 1' in lines
    assert 'callbridge_agent_turn_latency_seconds_bucket{le="5"} 2' in lines
    assert 'callbridge_agent_turn_latency_seconds_bucket{le="+Inf"} 2' in lines
    assert "callbridge_agent_turn_latency_seconds_sum 4.8" in lines
    assert "callbridge_rtp_packets_lost_total 3" in lines
    assert 'callbridge_rtp_jitter_seconds_bucket{le="0.005"} 1' in lines
    assert "# TYPE callbridge_agent_turn_latency_seconds histogram" in lines
    assert text.endswith("\n")
    # Every sample line is "name{labels} value" or "name value".
    for line in lines:
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1].replace("+Inf", "inf"))


def test_label_values_are_escaped_and_counters_refuse_bad_use():
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    counter = Counter("x_total", "x", ("reason",))
    counter.inc(reason='say "hi"')
    assert 'x_total{reason="say \\"hi\\""} 1' in list(counter.render())
    with pytest.raises(ValueError):
        counter.inc(-1, reason="r")
    with pytest.raises(ValueError):
        counter.inc(other="r")
    with pytest.raises(ValueError):
        Histogram("h", "h", (2.0, 1.0))


async def test_bus_filters_by_call_and_drops_a_slow_subscriber():
    bus = EventBus()
    everything = bus.subscribe()
    one_call = bus.subscribe("c1")
    bus.publish("c1", "status", {"status": "ringing"}, seq=1)
    bus.publish("c2", "status", {"status": "active"}, seq=1)
    assert (await one_call.next()).call_id == "c1"
    assert one_call.queue.empty()
    assert [(await everything.next()).call_id for _ in range(2)] == ["c1", "c2"]
    from callbridge.app import events

    for index in range(events.SUBSCRIBER_QUEUE_SIZE + 1):  # nobody reads one_call any more
        bus.publish("c1", "dtmf", {"digit": str(index % 10)})
    assert one_call.dropped and await asyncio.wait_for(one_call.next(), 1) is None
    assert everything.dropped and bus.dropped_subscribers == 2 and bus.subscriber_count == 0
    late = bus.subscribe()
    bus.close()  # shutting down ends every stream
    assert await asyncio.wait_for(late.next(), 1) is None and bus.subscriber_count == 0


def test_sse_frame_format():
    bus = EventBus()
    frame = sse_frame(bus.publish("c1", "status", {"status": "active"}, at=1.5, seq=3)).decode()
    assert frame.startswith("id: c1:3\nevent: status\ndata: {")
    assert frame.endswith("}\n\n") and frame.count("\n") == 4
