"""Acceptance: a real Chromium calls the demo line from /phone, presses 1, 1 on the page's keypad and asks
about an order out loud (a fake microphone playing synthesised speech).

What is checked is what each side actually got: the page's transcript (from the call's event stream),
the call record (source, the keys as RFC 4733, the handoff and the agent's answer from the orders
database), the recording's two channels, and the audio level the page measured on what it received.
"""

from __future__ import annotations

import re
import wave

import numpy as np
import pytest

from callbridge.agent.demo_orders import SEED_ORDERS
from tests.interop import media_assets as ma
from tests.interop.conftest import start_server, stop_server
from tests.support.spoken import spoken_digits

from .conftest import ACTION_TIMEOUT_MS, console_url

pytestmark = pytest.mark.interop

ORDER_ID = "4572"
_, ORDER_STATUS, _, _ = next(row for row in SEED_ORDERS if row[0] == ORDER_ID)
MIC_RATE = 48_000
QUESTION_AT_S = 15  # after the microphone opens: the keys are in by ~6 s and the agent has greeted
ANSWER_TIMEOUT_MS = 40_000
KEYPAD = [*"123456789", "0", "*", "#"]


def microphone_wav(path) -> object:
    from callbridge.media.resample import resample
    from callbridge.speech import synthesizer_for

    synth = synthesizer_for("en")
    question = resample(synth.synthesize("What's the status of order four five seven two?"), synth.sample_rate,
                        MIC_RATE)
    said = np.concatenate([np.zeros(QUESTION_AT_S * MIC_RATE), question / 32768.0, np.zeros(12 * MIC_RATE)])
    return ma.write_wav(path, said, rate=MIC_RATE)  # 16-bit PCM mono 48 kHz: what the fake device plays


@pytest.fixture
def demo_line(tmp_path):
    server = start_server(tmp_path, None)  # no config: the demo line, IVR and agent
    yield server
    stop_server(server)


def wait_for_ivr_node(page, node: str) -> None:
    page.wait_for_function(
        "node => window.callbridgePhone.events().some(e => e.type === 'ivr' && e.data.kind === 'node'"
        " && e.data.node === node)", arg=node, timeout=ACTION_TIMEOUT_MS)


def channel_rms(stereo: np.ndarray, channel: int) -> float:
    return float(np.sqrt(np.mean(stereo[:, channel].astype(np.float64) ** 2)))


def test_browser_calls_the_demo_line_presses_1_1_and_hears_the_order_status(demo_line, browser_factory, artifacts,
                                                                             tmp_path):
    server = demo_line
    browser = browser_factory(microphone=microphone_wav(tmp_path / "caller.wav"))
    context = browser.new_context(extra_http_headers=server.auth)
    page = context.new_page()
    page.set_default_timeout(ACTION_TIMEOUT_MS)
    page.goto(console_url(server, "/phone?processing=off"))  # levels as spoken: no AGC or noise suppression
    page.wait_for_function("() => document.querySelector('#target option[value=\"demo\"]') !== null")
    page.select_option("#target", "demo")
    page.screenshot(path=str(artifacts / "1-ready.png"))
    # Every control by its accessible name; the whole call is driven from the keyboard.
    for key in KEYPAD:
        assert page.get_by_role("button", name=key, exact=True).count() == 1, key
    page.get_by_role("button", name="Call", exact=True).press("Enter")

    # The keys go when the IVR asks for them, as a caller would press them.
    wait_for_ivr_node(page, "language_menu")
    page.get_by_role("button", name="1", exact=True).press("Enter")
    wait_for_ivr_node(page, "main_menu")
    page.get_by_role("button", name="1", exact=True).press(" ")  # Space works as well as Enter
    page.screenshot(path=str(artifacts / "2-keys.png"))

    # The agent's answer, as the page shows it: the order's status from the database.
    transcript = page.locator("#transcript")
    answer = transcript.locator("li.agent", has_text=re.compile(ORDER_STATUS, re.I))
    try:
        answer.first.wait_for(timeout=ANSWER_TIMEOUT_MS)
    except Exception as exc:
        page.screenshot(path=str(artifacts / "3-no-answer.png"))
        call_id = page.evaluate("() => window.callbridgePhone.callId()")
        raise AssertionError(f"no answer on the page: {transcript.inner_text()!r}\nrecord: "
                             f"{server.get(f'/api/calls/{call_id}')}\n{server.log_tail(30)}") from exc
    page.screenshot(path=str(artifacts / "3-answer.png"))
    assert ORDER_ID in spoken_digits(answer.first.inner_text()), transcript.inner_text()
    peak = page.evaluate("() => window.callbridgePhone.peakReceivedRms()")
    call_id = page.evaluate("() => window.callbridgePhone.callId()")
    page.get_by_role("button", name="Hang up", exact=True).press("Enter")
    page.get_by_text("Call ended").wait_for()
    page.screenshot(path=str(artifacts / "4-ended.png"))

    assert peak > 0.01, f"the page received silence (peak RMS {peak})"
    record = server.wait_for(lambda: (r := server.get(f"/api/calls/{call_id}"))["status"] == "hangup" and r,
                             what="the call record to close")
    assert record["source"] == "webrtc" and record["caller"] == "browser"
    assert [(d["digit"], d["source"]) for d in record["dtmf"]] == [("1", "rfc4733"), ("1", "rfc4733")]
    assert record["handoff"]["reason"] == "order_status"
    user = next(turn for turn in record["transcript"] if turn["role"] == "user")
    assert spoken_digits(user["text"]) == ORDER_ID, record["transcript"]
    assert any(turn["role"] == "tool" and turn.get("ok") for turn in record["transcript"]), record["transcript"]
    said = [turn.get("text") or "" for turn in record["transcript"] if turn["role"] == "agent"]
    assert any(ORDER_STATUS in text.lower() and ORDER_ID in spoken_digits(text) for text in said), said
    assert record["media"]["codec"] == "opus"

    with wave.open(record["recording"]) as wav:
        assert wav.getnchannels() == 2
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)
    assert channel_rms(stereo, 0) > 100, "the caller's channel is silent"
    assert channel_rms(stereo, 1) > 100, "our channel is silent"

    # The console's detail page for this real agent call: the tool with its arguments, a latency bar per answer.
    page.goto(console_url(server, f"/#/calls/{call_id}"))
    transcript = page.locator("section[aria-labelledby=sec-transcript]")
    tool = transcript.locator("li.turn-tool").first
    tool.wait_for()
    assert "ok" in tool.inner_text() and ORDER_ID in tool.locator("pre").first.inner_text()
    # One bar for each turn the record stamped with its latency, naming its stages.
    stamped = [turn["latency_ms"] for turn in record["transcript"] if turn.get("latency_ms")]
    bars = transcript.locator(".latency-bar[role=img]")
    assert bars.count() == len(stamped), (bars.count(), stamped)
    stage_labels = {"vad": "VAD", "stt": "STT", "brain": "brain", "tts_first_audio": "TTS"}
    for bar, latency in zip(bars.all(), stamped, strict=True):
        expected = ", ".join(f"{label} {latency[key]} ms" for key, label in stage_labels.items() if key in latency)
        expected += f", total {latency['total']} ms" if "total" in latency else ""
        assert bar.get_attribute("aria-label") == expected
    page.screenshot(path=str(artifacts / "5-detail.png"), full_page=True)
    context.close()
