"""A call's one event stream, as a live client of ``GET /api/events`` receives it.

A real caller (the simulator: SIP, RTP, synthesised speech) talks to the demo
line's offline agent while an SSE client listens. Updates are events of their
own: the tool's outcome, the barge-in cut and each turn's latency reach the
client as they happen, in the order the store keeps them.
"""

from __future__ import annotations

import pytest

from .conftest import http_get
from .test_agent import ORDER_DAY, ORDER_STATUS, finished_call, run_script
from .test_outbound import EventStream

pytestmark = pytest.mark.interop


def test_tool_results_barge_ins_and_latencies_reach_sse_as_events(server_factory, tmp_path):
    line = server_factory(ivr=True)
    stream = EventStream(line.http_port, token=line.api_token)
    completed = run_script(tmp_path, line, """\
  - say: "What is the status of order four five seven two?"
  - expect_heard: {text: "%s", timeout: 25}
  - say: "I have a question about my bill."
  - wait: 4
  - say: "What is the status of order four five seven two?"
  - expect_heard: {text: "%s", timeout: 25}
  - hangup
""" % (ORDER_DAY, ORDER_DAY))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    call = finished_call(line)
    stream.wait_for(lambda: any(e["type"] == "ended" and e["call_id"] == call["id"] for e in stream.events),
                    timeout=10, what="the call's last event on the stream")
    events = [e for e in stream.events if e["call_id"] == call["id"]]

    # One stream, in order: the live client saw exactly what the store kept, numbered without gaps.
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    stored = line.get(f"/api/calls/{call['id']}")["events"]
    assert [e["type"] for e in events] == [e["type"] for e in stored]

    turns = {e["data"]["turn"]: e["data"] for e in events if e["type"] == "transcript"}

    # The tool: announced before it runs, then its outcome as a second event naming the same turn.
    called = next(e for e in events if e["type"] == "tool_call")
    assert called["data"]["name"] == "lookup_order" and "ok" not in called["data"], called
    result = next(e for e in events if e["type"] == "tool_result")
    assert result["seq"] > called["seq"] and result["data"]["turn"] == called["data"]["turn"], result
    assert result["data"]["ok"] is True and result["data"]["result"]["status"] == ORDER_STATUS, result
    assert result["data"]["duration_ms"] > 0, result

    # Each agent answer to a caller gets its latency, naming the agent turn it belongs to.
    answer_turn = next(t for t, d in turns.items() if d["role"] == "agent" and ORDER_STATUS in (d["text"] or ""))
    latency = next(e["data"] for e in events if e["type"] == "latency" and e["data"]["turn"] == answer_turn)
    assert set(latency) == {"turn", "vad", "stt", "brain", "tts_first_audio", "total"}, latency
    assert latency["total"] >= latency["vad"] >= 450, latency  # the caller's pause is part of it

    # The billing answer was cut when the caller talked over it: the cut is its own event.
    cut = next(e["data"] for e in events if e["type"] == "barge_in")
    assert turns[cut["turn"]]["role"] == "agent" and cut["planned"].startswith("Invoices are emailed"), cut
    heard, planned = cut["heard"].split(), cut["planned"].split()
    assert heard == planned[:len(heard)] and len(heard) < len(planned) / 2, cut
    assert 0.5 < cut["heard_s"] < 6, cut
    # What the first transcript event said was not changed by the cut; the record folds both.
    assert turns[cut["turn"]]["text"] == cut["planned"] or cut["planned"].startswith(turns[cut["turn"]]["text"])
    folded = call["transcript"][cut["turn"]]
    assert folded["interrupted"] and folded["text"] == cut["heard"], folded

    # Metrics consume the same stream.
    status, _, body = http_get(line, "/metrics")
    assert status == 200
    metrics = body.decode()
    count = next(float(row.split()[-1]) for row in metrics.splitlines()
                 if row.startswith("callbridge_agent_turn_latency_seconds_count"))
    assert count == sum(1 for e in events if e["type"] == "latency")
