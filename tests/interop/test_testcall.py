"""``callbridge test-call`` as a real process against a line served from this test process.

The line is a CallManager with a test-only app: it plays a synthesised
"Welcome. For sales, press 1.", then on 1 transfers with REFER to sales and
on any other key hangs up. It keeps what it hears, so a ``say`` step can be
checked from the far end's side.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from callbridge.simulator.script import heard_matches
from callbridge.call.call import Call
from callbridge.call.manager import CallManager, MediaPolicy
from callbridge.call.trunks import TrunkTable
from callbridge.media.pacer import MediaPacer
from callbridge.media.sources import pcm_source
from callbridge.rtp.ports import PortAllocator
from callbridge.sip import events as ev
from callbridge.sip.endpoint import SipEndpoint
from callbridge.sip.useragent import UserAgent, UserAgentConfig

from .conftest import free_port

pytestmark = pytest.mark.interop

CALLBRIDGE = Path(sys.executable).with_name("callbridge")
SALES = "sip:sales@127.0.0.1:5099"
PROMPT = "Welcome. For sales, press 1."
RUN_TIMEOUT = 120.0

PASSING_SCRIPT = """\
timeout: 40
steps:
  - wait_for_prompt: {timeout: 10}
  - expect_heard: "press 1"
  - press: "1"
  - expect_transfer: {target: "sip:sales@127.0.0.1:5099", timeout: 10}
"""


@functools.cache
def prompt_audio() -> tuple[np.ndarray, int]:
    from callbridge.speech.tts import synthesizer_for

    voice = synthesizer_for("en")
    return voice.synthesize(PROMPT), voice.sample_rate


@dataclass
class SalesMenuApp:
    """Prompt, one key, then transfer (1) or hang up (anything else)."""

    heard: dict[str, list[np.ndarray]] = field(default_factory=dict)  # call id -> far-end (caller) frames
    outcomes: dict[str, str] = field(default_factory=dict)

    async def run(self, call: Call, manager: CallManager) -> None:
        stream = call.leg.stream
        frames = self.heard.setdefault(call.id, [])
        stream.audio_listeners.append(lambda frame: frames.append(np.array(frame, copy=True)))
        pcm, rate = prompt_audio()
        await stream.play(pcm_source(pcm, rate, stream.sample_rate, label="prompt"))
        while not call.dtmf:
            await asyncio.sleep(0.02)
        if call.dtmf[0]["digit"] == "1":
            self.outcomes[call.id] = "transfer"
            manager.transfer(call, SALES)
        else:
            self.outcomes[call.id] = "hangup"
            manager.hangup(call)
        await asyncio.Event().wait()  # the manager cancels us when the call ends


@dataclass
class Line:
    app: SalesMenuApp
    manager: CallManager
    port: int

    @property
    def uri(self) -> str:
        return f"sip:sales-menu@127.0.0.1:{self.port}"


@pytest.fixture
async def line():
    await asyncio.to_thread(prompt_audio)  # synthesise before any call, off the loop
    app = SalesMenuApp()
    ua = UserAgent(UserAgentConfig(host="127.0.0.1"))
    endpoint = SipEndpoint(ua, lambda event: manager.on_sip_event(event))
    pacer = MediaPacer()
    manager = CallManager(endpoint, media_host="127.0.0.1", ports=PortAllocator(21000, 21999), pacer=pacer,
                          trunks=TrunkTable([]), media=MediaPolicy(codecs=["PCMU", "PCMA"]), app=app)
    await endpoint.start("127.0.0.1", udp_port=0, tcp_port=0)
    yield Line(app, manager, endpoint.transports.local_address("udp").port)
    await manager.close()
    await pacer.close()
    await endpoint.close()


@dataclass
class Run:
    status: int
    stdout: str
    stderr: str


async def run_test_call(tmp_path: Path, script: str, *args: str) -> Run:
    path = tmp_path / "line.test.yaml"
    path.write_text(script)
    assert CALLBRIDGE.exists(), f"{CALLBRIDGE} missing: pip install -e . in the venv"
    process = await asyncio.create_subprocess_exec(
        str(CALLBRIDGE), "test-call", str(path), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return Run(process.returncode, stdout.decode(), stderr.decode())


def speech_frames(frames: list[np.ndarray]) -> int:
    levels = [np.sqrt(np.mean(f.astype(np.float64) ** 2)) for f in frames if len(f)]
    return sum(level > 500 for level in levels)


async def test_passing_script_exits_zero(line, tmp_path):
    run = await run_test_call(tmp_path, PASSING_SCRIPT, "--target", line.uri)
    assert run.status == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert run.stdout.count(" PASS ") == 4, run.stdout
    assert lines[-1].startswith("PASS: 4 passed, 0 failed, 0 skipped"), run.stdout
    heard = next(text for text in lines if text.strip().startswith("heard:"))
    assert heard_matches(heard, "for sales press 1"), run.stdout
    assert f"REFER to {SALES}" in run.stdout
    assert list(line.app.outcomes.values()) == ["transfer"]


async def test_wrong_words_fail_with_what_was_heard(line, tmp_path):
    script = PASSING_SCRIPT.replace('"press 1"', '{text: "press 7", timeout: 1}')
    run = await run_test_call(tmp_path, script, "--target", line.uri)
    assert run.status == 1, run.stdout + run.stderr
    failed = [text for text in run.stdout.splitlines() if " FAIL " in text]
    assert len(failed) == 1 and re.search(r'2 FAIL  expect_heard "press 7" +4 ', failed[0]), run.stdout
    assert "not found in what was heard" in failed[0]
    assert "heard: \"Welcome" in run.stdout and "sales" in run.stdout.lower(), run.stdout
    assert run.stdout.count(" SKIP ") == 2
    assert "FAIL: step 2 (expect_heard, line 4) failed" in run.stdout
    assert not line.app.outcomes  # we stopped before pressing anything


async def test_wrong_transfer_target_fails_in_json(line, tmp_path):
    script = PASSING_SCRIPT.replace("sip:sales@127.0.0.1:5099", "operator")
    run = await run_test_call(tmp_path, script, "--target", line.uri, "--json")
    assert run.status == 1, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["outcome"] == "failed" and report["exit_status"] == 1
    assert [step["status"] for step in report["steps"]] == ["pass", "pass", "pass", "fail"]
    failed = report["steps"][3]
    assert failed["kind"] == "expect_transfer" and failed["line"] == 6
    assert SALES in failed["detail"] and "expected operator" in failed["detail"]
    assert heard_matches(report["steps"][1]["transcript"], "press 1")


async def test_say_reaches_the_far_end(line, tmp_path):
    script = """\
steps:
  - wait_for_prompt
  - say: "I want to check my order"
  - press: "2"
  - expect_hangup: 5
"""
    audio = tmp_path / "heard.wav"
    run = await run_test_call(tmp_path, script, "--target", line.uri, "--save-audio", str(audio))
    assert run.status == 0, run.stdout + run.stderr
    assert list(line.app.outcomes.values()) == ["hangup"]
    frames = next(iter(line.app.heard.values()))
    assert speech_frames(frames) >= 25, "the far end heard less than half a second of speech"
    from callbridge.speech.stt import Transcriber

    heard = await Transcriber().transcribe_async(np.concatenate(frames), 8000, language="en")
    assert "order" in heard.lower(), heard
    assert audio.stat().st_size > 44 + 2 * 8000  # more than a second of the prompt was kept


async def test_unreachable_line_exits_three(tmp_path):
    script = "answer_timeout: 1\nsteps:\n  - wait_for_prompt\n"
    run = await run_test_call(tmp_path, script, "--target", f"sip:nobody@127.0.0.1:{free_port()}")
    assert run.status == 3, run.stdout + run.stderr
    assert "CALL FAILED: no response from the target within 1 s" in run.stdout


async def test_rejected_call_exits_three_with_the_status(tmp_path):
    def reject(event) -> None:
        if isinstance(event, ev.IncomingCall):
            ua.reject(event.session, 404, endpoint.now())
            endpoint.flush()

    ua = UserAgent(UserAgentConfig(host="127.0.0.1"))
    endpoint = SipEndpoint(ua, reject)
    await endpoint.start("127.0.0.1", udp_port=0)
    try:
        port = endpoint.transports.local_address("udp").port
        run = await run_test_call(tmp_path, "steps:\n  - wait_for_prompt\n", "--target", f"sip:nobody@127.0.0.1:{port}")
    finally:
        await endpoint.close()
    assert run.status == 3, run.stdout + run.stderr
    assert "CALL FAILED: the line answered 404 Not Found" in run.stdout


async def test_bad_script_exits_two(tmp_path):
    run = await run_test_call(tmp_path, "target: sip:x@127.0.0.1\nsteps:\n  - pres: \"1\"\n")
    assert run.status == 2
    assert "line.test.yaml:3:5: unknown step 'pres'; did you mean 'press'?" in run.stderr, run.stderr
