"""The demo line's IVR, driven by real callers: SIPp pressing RFC 4733 keys, and baresip listening."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from . import media_assets as ma
from .conftest import require_tool
from .ivr_scenarios import ivr_caller
from .test_baresip import baresip_config, write_silence
from .test_media import find_call, start_call, wait_status

pytestmark = pytest.mark.interop

OPERATOR = "sip:operator@127.0.0.1:5099"


@pytest.fixture
def demo_line(server_factory):
    return server_factory(ivr=True)  # no config: the built-in demo line


def run_caller(server, tmp_path, steps, **kwargs):
    scenario = ivr_caller(tmp_path / "caller.xml", steps, **kwargs)
    sipp = start_call(server, tmp_path / "sipp", str(scenario), timeout=60)
    result = sipp.wait()
    return sipp, result


def choices(call: dict) -> list[tuple[str, str, str]]:
    return [(e["node"], e["digit"], e["label"]) for e in call["ivr"] if e["type"] == "choice"]


def test_one_then_one_hands_off_order_status_in_english(demo_line, tmp_path):
    # "1" lands while the greeting plays (type-ahead), the second "1" during the main menu.
    sipp, result = run_caller(demo_line, tmp_path, ["1", 3000, "1"], tail_ms=3000)
    assert result.returncode == 0, result.output
    call = wait_status(demo_line, sipp, "hangup")
    assert call["route"] == "demo"
    assert [(d["digit"], d["source"]) for d in call["dtmf"]] == [("1", "rfc4733"), ("1", "rfc4733")]
    assert choices(call) == [("language_menu", "1", "English"), ("main_menu", "1", "Order status")]
    handoff = call["handoff"]
    assert handoff is not None, call["ivr"]
    assert (handoff["agent"], handoff["language"], handoff["reason"]) == ("assistant", "en", "order_status")
    assert handoff["caller_number"] == "+15551230000" and handoff["caller_name"] == "Test Caller"
    assert handoff["path"] == [{"menu": "language_menu", "digit": "1", "label": "English"},
                               {"menu": "main_menu", "digit": "1", "label": "Order status"}]
    prompts = [e for e in call["ivr"] if e["type"] == "prompt"]
    assert prompts[0]["text"].startswith("Welcome to callbridge"), prompts
    assert any(e["type"] == "barge_in" for e in call["ivr"]), "a key during a prompt must cut it short"
    assert call["end_reason"] == "caller_hangup"


def test_zero_sends_a_refer_to_the_operator(demo_line, tmp_path):
    sipp, result = run_caller(demo_line, tmp_path, ["1", 3000, "0"], end="refer", refer_to=OPERATOR)
    assert result.returncode == 0, result.output  # SIPp checked Refer-To and got our BYE
    call = wait_status(demo_line, sipp, "hangup")
    assert ("main_menu", "0", "Operator") in choices(call)
    transfer = [e for e in call["ivr"] if e["type"] == "transfer"]
    assert transfer and transfer[0]["target"] == OPERATOR and transfer[0]["method"] == "refer", call["ivr"]
    kinds = [e["type"] for e in call["events"]]
    assert "refer_accepted" in kinds and "refer_progress" in kinds
    assert call["end_reason"] == "transfer"
    assert call["handoff"] is None


def test_three_invalid_keys_transfer_to_the_operator(demo_line, tmp_path):
    sipp, result = run_caller(demo_line, tmp_path, ["1", 3000, "7", 2500, "8", 2500, "7"], end="refer",
                              refer_to=OPERATOR)
    assert result.returncode == 0, result.output
    call = wait_status(demo_line, sipp, "hangup")
    invalid = [(e["digit"], e["attempt"]) for e in call["ivr"] if e["type"] == "invalid"]
    assert invalid == [("7", 1), ("8", 2), ("7", 3)], call["ivr"]
    assert any(e["type"] == "prompt" and e["text"] == "Sorry, that is not an option." for e in call["ivr"])
    assert any(e["type"] == "menu_exhausted" for e in call["ivr"])
    assert call["end_reason"] == "transfer"


def test_x_headers_skip_the_menus_and_reach_the_agent_context(demo_line, tmp_path):
    # What a Twilio <Dial><Sip>sip:...?x-lang=es&x-reason=billing</Sip> sends.
    headers = {"X-Lang": "es", "X-Reason": "billing", "X-Twilio-CallSid": "CA0123456789abcdef0123456789abcdef"}
    sipp, result = run_caller(demo_line, tmp_path, [], headers=headers, tail_ms=3000)
    assert result.returncode == 0, result.output
    call = wait_status(demo_line, sipp, "hangup")
    assert choices(call) == [], "the menus must be skipped"
    handoff = call["handoff"]
    assert (handoff["language"], handoff["reason"]) == ("es", "billing")
    received = {name.lower(): value for name, value in handoff["sip_headers"].items()}
    assert received == {name.lower(): value for name, value in headers.items()}


def test_unknown_number_is_rejected_when_routing_says_so(server_factory, tmp_path):
    line = server_factory("routing:\n  unknown_number: reject\n  numbers:\n    '+15550100000': demo\n", ivr=True)
    scenario = ivr_caller(tmp_path / "caller.xml", [])
    sipp = start_call(line, tmp_path / "sipp", str(scenario), service="+15559999999", timeout=15)
    result = sipp.wait()
    assert result.returncode != 0 and "404" in result.output, result.output
    call = line.wait_for(lambda: find_call(line, sipp), what="the rejected call")
    assert call["end_reason"] == "rejected" and call["answered_at"] is None


def normalise(text: str) -> str:
    text = re.sub(r"[^a-z0-9 ]", " ", text.lower()).replace(" one", " 1")
    return " ".join(text.split())


def test_baresip_hears_the_greeting(demo_line, tmp_path):
    """baresip's decoded audio, transcribed with the real whisper model, holds the greeting."""
    from callbridge.speech.stt import Transcriber

    baresip = require_tool("baresip")
    source = tmp_path / "caller.wav"
    write_silence(source, 6.0)  # baresip hangs up when its source ends
    config_dir = baresip_config(tmp_path, source)
    completed = subprocess.run(
        [baresip, "-f", str(config_dir), "-e", f"/dial sip:demo@127.0.0.1:{demo_line.sip_port}", "-t", "12"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path)
    output = completed.stdout + completed.stderr
    assert "call established" in output.lower(), output[-3000:]
    dumps = sorted(tmp_path.glob("dump-*-dec.wav"))
    assert dumps, f"baresip wrote no decoded audio dump: {list(tmp_path.iterdir())}"
    heard, rate = ma.read_wav(dumps[0])
    text = Transcriber().transcribe(heard[0], rate, language="en")
    assert "press 1" in normalise(text), f"heard: {text!r}"
    assert "welcome" in normalise(text), f"heard: {text!r}"


EXAMPLE_SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "demo-line.test.yaml"


def run_test_call(script: Path, line) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "callbridge.app.cli", "test-call", str(script),
                           "--target", f"sip:demo@127.0.0.1:{line.sip_port}"],
                          capture_output=True, text=True, timeout=150)


def test_test_call_script_passes_against_the_demo_line(demo_line):
    completed = run_test_call(EXAMPLE_SCRIPT, demo_line)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "FAIL" not in completed.stdout and "PASS" in completed.stdout, completed.stdout
    call = demo_line.wait_for(lambda: (c := demo_line.calls()) and c[0]["status"] == "hangup" and c[0],
                              what="the simulated call to end")
    assert ("main_menu", "0", "Operator") in choices(call) and call["end_reason"] == "transfer"


def test_test_call_script_with_a_wrong_expectation_fails(demo_line, tmp_path):
    wrong = tmp_path / "wrong.test.yaml"
    wrong.write_text(EXAMPLE_SCRIPT.read_text().replace('expect_heard: "press 1"', 'expect_heard: "press 7 for pizza"'))
    assert wrong.read_text() != EXAMPLE_SCRIPT.read_text()
    completed = run_test_call(wrong, demo_line)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "FAIL" in completed.stdout and "press 7 for pizza" in completed.stdout, completed.stdout


def test_bridge_transfer_joins_the_caller_to_a_second_call(server_factory, tmp_path):
    """A flow transfers by bridging: callbridge dials the tone line itself and joins the two legs.
    baresip (saying 1000 Hz) must hear the far line's 440 Hz, and the far line must hear 1000 Hz."""
    far = server_factory()  # the 440 Hz tone line
    flow = tmp_path / "bridge.yaml"
    flow.write_text("flow: bridge\nstart: connect\nnodes:\n  connect:\n    type: transfer\n"
                    f"    target: sip:tone@127.0.0.1:{far.sip_port}\n    method: bridge\n")
    near = server_factory(f"flows:\n  bridge: {flow}\nrouting:\n  default_flow: bridge\n", ivr=True)
    baresip = require_tool("baresip")
    source = ma.write_wav(tmp_path / "caller.wav", ma.sine(1000.0, 6.0, -12.0))
    config_dir = baresip_config(tmp_path, source)
    completed = subprocess.run(
        [baresip, "-f", str(config_dir), "-e", f"/dial sip:bridge@127.0.0.1:{near.sip_port}", "-t", "12"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert "call established" in completed.stdout.lower() + completed.stderr.lower()
    inbound = near.wait_for(lambda: [c for c in near.calls()
                                     if c["direction"] == "inbound" and c["status"] == "hangup"],
                            what="the caller's leg to end")[0]
    assert any(e["type"] == "bridged" for e in inbound["events"]), inbound["events"]
    legs = near.calls()
    outbound = [c for c in legs if c["direction"] == "outbound"]
    assert len(outbound) == 1 and outbound[0]["ivr"] == [], "the dialed leg must not run a flow of its own"
    far_call = far.wait_for(lambda: (c := far.calls()) and c[0]["status"] == "hangup" and c[0], what="far leg ends")
    assert far_call["end_reason"] == "caller_hangup"  # the near side hung up when baresip did

    heard, rate = ma.read_wav(sorted(tmp_path.glob("dump-*-dec.wav"))[0])
    late = heard[0][len(heard[0]) // 2:]  # after the bridge is up
    assert abs(ma.dominant_frequency(late, rate) - 440.0) < 10, "the caller did not hear the far line"
    recorded, rate = ma.read_wav(Path(far_call["recording"]))
    caller_side = recorded[0][recorded.shape[1] // 3:]
    assert abs(ma.dominant_frequency(caller_side, rate) - 1000.0) < 10, "the far line did not hear the caller"
    assert ma.tone_dbfs(caller_side, rate, 1000.0) > -25


def test_spoken_answer_is_understood(server_factory, tmp_path):
    """A gather with speech input: baresip says a synthesised sentence, whisper hears it, the choice maps."""
    from callbridge.media.resample import resample
    from callbridge.speech import synthesizer_for

    flow = tmp_path / "speech.yaml"
    flow.write_text(
        "flow: speech\nstart: ask\nnodes:\n"
        "  ask:\n    type: gather\n    input: speech\n    prompt: How can I help?\n    into: topic\n"
        "    timeout: 8\n    hints: [invoice, order]\n"
        "    choices: {invoice: billing, bill: billing, order: orders}\n    next: confirm\n"
        "  confirm:\n    type: say\n    text: \"You chose {{ topic }}.\"\n    next: bye\n"
        "  bye:\n    type: hangup\n")
    line = server_factory(f"flows:\n  speech: {flow}\nrouting:\n  default_flow: speech\n", ivr=True)
    synth = synthesizer_for("en")
    sentence = resample(synth.synthesize("I have a question about my invoice."), synth.sample_rate, ma.RATE)
    said = np.concatenate([np.zeros(3 * ma.RATE), sentence / 32768.0, np.zeros(6 * ma.RATE)])
    source = ma.write_wav(tmp_path / "caller.wav", said)
    config_dir = baresip_config(tmp_path, source)
    completed = subprocess.run(
        [require_tool("baresip"), "-f", str(config_dir), "-e", f"/dial sip:speech@127.0.0.1:{line.sip_port}",
         "-t", "20"], capture_output=True, text=True, timeout=40, cwd=tmp_path)
    assert "call established" in completed.stdout.lower() + completed.stderr.lower()
    call = line.wait_for(lambda: (c := line.calls()) and c[0]["status"] == "hangup" and c[0], what="hangup")
    heard = [e["text"] for e in call["ivr"] if e["type"] == "speech" and "text" in e]
    assert heard and "invoice" in heard[0].lower(), call["ivr"]
    prompts = [e["text"] for e in call["ivr"] if e["type"] == "prompt"]
    assert "You chose billing." in prompts, call["ivr"]
