"""``callbridge test-call``: dial a phone line with our own UAC and run a script against it.

The simulator is a caller made of the project's own parts: a SipEndpoint,
UserAgent, MediaPacer and CallManager with no application, bound to
ephemeral ports. It keeps every frame of audio the far end sends, decides
"the prompt has ended" from that audio's energy, and transcribes it offline
to check what was said. REFERs are noted rather than followed, so a
transfer is something a script can expect.

Exit status: 0 every step passed, 1 an expectation failed, 2 the script or
environment is wrong, 3 the call could not be placed.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import socket
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..call.call import Call, CallStatus
from ..call.manager import CallManager, MediaPolicy
from ..call.trunks import TrunkTable
from ..media.dtmf.rfc4733 import DEFAULT_GAP_MS, plan_dial_string
from ..media.pacer import FRAME_MS, MediaPacer
from ..media.sources import pcm_source
from ..rtp.ports import PortAllocator
from ..sip import events as ev
from ..sip.endpoint import SipEndpoint
from ..sip.uri import SipUri, parse_uri
from ..sip.useragent import UserAgent, UserAgentConfig
from ..yamlsource import Position, SourceError
from .testcall_script import (ExpectHangup, ExpectHeard, ExpectTransfer, Hangup, Press, Say, Script, Step,
                              Wait, WaitForPrompt, heard_matches, load_script)

log = logging.getLogger("callbridge.testcall")

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_CONFIG_ERROR = 2
EXIT_CALL_FAILED = 3

FRAME_S = FRAME_MS / 1000
# Speech on a phone line sits around -20 dBFS and line noise well under -50:
# -40 dBFS splits them with margin on both sides.
SPEECH_DBFS = -40.0
SPEECH_RMS = 32768 * 10 ** (SPEECH_DBFS / 20)
SPEECH_START_FRAMES = 2  # 40 ms above the threshold: a click is not a prompt
TRIM_PAD_FRAMES = 10  # keep 200 ms around speech so the recogniser hears word edges
UTTERANCE_QUIET_S = 0.8  # expect_heard re-listens after a pause this long
POLL_S = FRAME_S
BYE_GRACE_S = 0.5  # lets our BYE (or CANCEL) be answered before the sockets close
# Our RTP ports stay out of callbridge serve's default range (10000-20000) on the same host.
RTP_PORT_MIN, RTP_PORT_MAX = 30000, 39999


# -- what the far end said -------------------------------------------------------------------

class HeardAudio:
    """Every frame received from the far end, with its level, indexed by 20 ms frame."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.frames: list[np.ndarray] = []
        self.speech: list[bool] = []

    def __call__(self, frame: np.ndarray) -> None:
        frame = np.array(frame, dtype=np.int16, copy=True)  # the receiver may reuse its buffer
        rms = float(np.sqrt(np.mean(frame.astype(np.float64) ** 2))) if len(frame) else 0.0
        self.frames.append(frame)
        self.speech.append(rms >= SPEECH_RMS)

    @property
    def count(self) -> int:
        return len(self.frames)

    def speaking_at(self, index: int) -> bool:
        """Whether the far end was speaking just before frame ``index``."""
        recent = self.speech[max(0, index - SPEECH_START_FRAMES):index]
        return len(recent) == SPEECH_START_FRAMES and all(recent)

    def speech_start(self, start: int, end: int) -> int | None:
        run = 0
        for index in range(start, end):
            run = run + 1 if self.speech[index] else 0
            if run == SPEECH_START_FRAMES:
                return index - SPEECH_START_FRAMES + 1
        return None

    def last_speech(self, start: int, end: int) -> int | None:
        for index in range(end - 1, start - 1, -1):
            if self.speech[index]:
                return index
        return None

    def speech_pcm(self, start: int, end: int) -> np.ndarray:
        """Frames ``start:end`` trimmed to their speech (empty when there is none)."""
        first = self.speech_start(start, end)
        if first is None:
            return np.zeros(0, dtype=np.int16)
        last = self.last_speech(start, end) or first
        lo, hi = max(start, first - TRIM_PAD_FRAMES), min(end, last + 1 + TRIM_PAD_FRAMES)
        return np.concatenate(self.frames[lo:hi])

    def utterances(self, start: int, end: int, quiet_frames: int) -> list[tuple[int, int]]:
        """``(first, end)`` frame spans of speech in ``start:end`` split by pauses of ``quiet_frames``."""
        spans: list[tuple[int, int]] = []
        index = start
        while (first := self.speech_start(index, end)) is not None:
            last = first
            cursor = first
            while cursor < end and cursor - last <= quiet_frames:
                if self.speech[cursor]:
                    last = cursor
                cursor += 1
            spans.append((first, last + 1))
            index = cursor
        return spans

    def save(self, path: Path) -> None:
        pcm = np.concatenate(self.frames) if self.frames else np.zeros(0, dtype=np.int16)
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(self.sample_rate)
            out.writeframes(pcm.astype("<i2").tobytes())


def _first_match(step: ExpectHeard, transcript: str) -> str | None:
    """The first of the step's expected texts found in ``transcript``."""
    return next((text for text in step.texts if heard_matches(transcript, text)), None)


# -- the report ------------------------------------------------------------------------------------

@dataclass
class StepResult:
    index: int
    step: Step
    status: str = "skip"  # pass | fail | skip
    at: float | None = None  # seconds since the call was answered
    duration: float = 0.0
    detail: str = ""
    transcript: str | None = None

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "index": self.index, "kind": self.step.kind, "line": self.step.position.line,
            "description": self.step.describe(), "status": self.status,
            "at_s": None if self.at is None else round(self.at, 2), "duration_s": round(self.duration, 2),
            "detail": self.detail,
        }
        if self.transcript is not None:
            entry["transcript"] = self.transcript
        return entry


@dataclass
class Report:
    script: str
    target: str
    outcome: str = "passed"  # passed | failed | call_failed | error
    exit_status: int = EXIT_PASSED
    message: str = ""
    sip_call_id: str | None = None
    answered_after: float | None = None
    media: str | None = None
    duration: float = 0.0
    audio_file: str | None = None
    steps: list[StepResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "script": self.script, "target": self.target, "outcome": self.outcome,
            "exit_status": self.exit_status, "message": self.message, "sip_call_id": self.sip_call_id,
            "answered_after_s": None if self.answered_after is None else round(self.answered_after, 2),
            "media": self.media, "duration_s": round(self.duration, 2), "audio_file": self.audio_file,
            "passed": sum(r.status == "pass" for r in self.steps),
            "failed": sum(r.status == "fail" for r in self.steps),
            "skipped": sum(r.status == "skip" for r in self.steps),
            "steps": [result.to_dict() for result in self.steps],
        }

    def to_text(self) -> str:
        lines = [f"test-call {self.script} -> {self.target}"]
        if self.answered_after is not None:
            lines.append(f"  answered after {self.answered_after:.2f} s ({self.media}); Call-ID {self.sip_call_id}")
        width = min(max((len(r.step.describe()) for r in self.steps), default=10), 48)
        lines.append(f"  {'#':>2} {'':4}  {'step':<{width}}  {'line':>4} {'at':>7} {'took':>6}")
        for result in self.steps:
            at = "" if result.at is None else f"{result.at:6.2f}s"
            took = "" if result.status == "skip" else f"{result.duration:5.2f}s"
            label = result.step.describe()
            if len(label) > width:
                label = label[:width - 3] + "..."
            line = (f"  {result.index:>2} {result.status.upper():4}  {label:<{width}}  "
                    f"{result.step.position.line:>4} {at:>7} {took:>6}")
            if result.detail:
                line += f"  {result.detail}"
            lines.append(line.rstrip())
            if result.transcript is not None:
                lines.append(f"{'':10}heard: " + (f'"{result.transcript}"' if result.transcript else "(no speech)"))
        if self.audio_file:
            lines.append(f"  heard audio saved to {self.audio_file}")
        counts = self.to_dict()
        summary = f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
        verdict = {"passed": "PASS", "failed": "FAIL", "call_failed": "CALL FAILED", "error": "ERROR"}[self.outcome]
        lines.append(f"{verdict}: {self.message + '; ' if self.message else ''}{summary} in {self.duration:.1f} s")
        return "\n".join(lines)


class StepFailed(Exception):
    """An expectation was not met; the message says what happened instead."""


class CallNotPlaced(Exception):
    pass


class SetupError(Exception):
    """This machine cannot run the script: no speech engine or model, or no socket to bind."""


# -- the runner ----------------------------------------------------------------------------------------

class TestCall:
    """One scripted call: set up the stack, dial, run the steps, always hang up."""

    def __init__(self, script: Script, *, bind: str | None = None) -> None:
        self.script = script
        self.bind = bind or local_address_for(script.target)
        self.ua = UserAgent(UserAgentConfig(host=self.bind))
        self.endpoint = SipEndpoint(self.ua, self._on_sip_event)
        self.pacer = MediaPacer()
        self.manager = CallManager(self.endpoint, media_host=self.bind,
                                   ports=PortAllocator(RTP_PORT_MIN, RTP_PORT_MAX),
                                   pacer=self.pacer, trunks=TrunkTable([]),
                                   media=MediaPolicy(codecs=["PCMU", "PCMA"]), app=None)
        self.manager.on_refer = self._on_refer
        self.manager.listeners.append(self._on_call_change)
        self.call: Call | None = None
        self.heard: HeardAudio | None = None
        self.refers: list[tuple[float, str]] = []  # (seconds since answer, target)
        self.refers_checked = 0
        self.failure: tuple[int, str] | None = None  # SIP final status of a failed INVITE
        self.far_end_hangup: float | None = None
        self.we_hung_up = False
        self.checkpoint = 0  # expect_heard listens from this frame on
        self.answered_at: float | None = None  # monotonic
        self.call_deadline = 0.0
        self.speech: dict[str, tuple[np.ndarray, int]] = {}  # say text -> (pcm, rate)
        self.transcriber: Any = None
        self._utterance_texts: dict[tuple[int, int], str] = {}  # (first, end) frames -> transcript

    # -- SIP and call events --------------------------------------------------------------------

    def _on_sip_event(self, event) -> None:
        if isinstance(event, ev.IncomingCall):
            # A simulator places calls; nobody should be calling it.
            self.ua.reject(event.session, 603, self.endpoint.now(), reason="Decline")
            self.endpoint.flush()
            return
        ours = self.call is not None and getattr(event, "session", None) is self.call.leg.session
        if ours and isinstance(event, ev.CallFailed):
            self.failure = (event.status, event.reason)
        elif ours and isinstance(event, ev.CallEnded) and event.reason == "remote_bye":
            self.far_end_hangup = self._call_time()
        self.manager.on_sip_event(event)

    def _on_call_change(self, call: Call, what: str) -> None:
        # Attach on the status change itself so not one frame of the greeting is missed.
        if what == "status" and call is self.call and call.status is CallStatus.ACTIVE and self.heard is None:
            stream = call.leg.stream
            if stream is not None:
                self.heard = HeardAudio(stream.sample_rate)
                stream.audio_listeners.append(self.heard)
            self.answered_at = time.monotonic()

    def _on_refer(self, call: Call, target: str) -> int:
        self.refers.append((self._call_time(), target))
        return 200  # "transferred": the far end ends its leg as it would with a real target

    def _call_time(self) -> float:
        return 0.0 if self.answered_at is None else time.monotonic() - self.answered_at

    @property
    def connected(self) -> bool:
        return self.call is not None and self.call.status is CallStatus.ACTIVE

    # -- the whole run -----------------------------------------------------------------------------

    async def run(self, save_audio: Path | None = None) -> Report:
        report = Report(script=self.script.file, target=self.script.target,
                        steps=[StepResult(index + 1, step) for index, step in enumerate(self.script.steps)])
        started = time.monotonic()
        try:
            try:
                await self._prepare_speech()
                await self.endpoint.start(self.bind, udp_port=0, tcp_port=0)
            except (ImportError, OSError, RuntimeError) as exc:
                raise SetupError(str(exc)) from exc
            try:
                await self._place_call(report)
                await self._run_steps(report)
            finally:
                await self._finish()
        except CallNotPlaced as exc:
            report.outcome, report.exit_status, report.message = "call_failed", EXIT_CALL_FAILED, str(exc)
        if save_audio is not None and self.heard is not None:
            self.heard.save(save_audio)
            report.audio_file = str(save_audio)
        report.duration = time.monotonic() - started
        return report

    async def _prepare_speech(self) -> None:
        """Synthesise every ``say`` and load the recogniser before dialing, so neither delays the call."""
        says = [step for step in self.script.steps if isinstance(step, Say)]
        if says:
            from ..speech.tts import UnsupportedLanguage, UnsupportedVoice, synthesizer_for

            try:
                voice = synthesizer_for(self.script.language)
            except (UnsupportedLanguage, UnsupportedVoice) as exc:
                raise SourceError(says[0].position, f"cannot speak language {self.script.language!r}: {exc}") from None
            for step in says:
                if step.text not in self.speech:
                    pcm = await asyncio.to_thread(voice.synthesize, step.text)
                    self.speech[step.text] = (pcm, voice.sample_rate)
        if self.script.has(ExpectHeard):
            from ..speech.stt import Transcriber

            self.transcriber = Transcriber()
            # Loading the model takes seconds: pay for it now, not inside a step.
            await asyncio.to_thread(self.transcriber.load)

    async def _transcribe(self, pcm: np.ndarray, sample_rate: int) -> str:
        text = await self.transcriber.transcribe_async(pcm, sample_rate, language=self.script.language)
        return text.strip()

    async def _place_call(self, report: Report) -> None:
        script = self.script
        dialed = time.monotonic()
        self.call_deadline = dialed + script.timeout
        try:
            self.call = await self.manager.dial(script.target, from_user=script.caller, headers=list(script.headers))
        except (ValueError, OSError) as exc:
            raise CallNotPlaced(f"cannot dial {script.target}: {exc}") from None
        report.sip_call_id = self.call.sip_call_id
        answer_by = dialed + min(script.answer_timeout, script.timeout)
        while self.call.status in (CallStatus.DIALING, CallStatus.RINGING):
            if time.monotonic() >= answer_by:
                ringing = self.call.status is CallStatus.RINGING
                self.manager.hangup(self.call, "no_answer")  # a CANCEL while it rings
                waited = f"{answer_by - dialed:g} s"
                raise CallNotPlaced(f"rang for {waited} without an answer" if ringing
                                    else f"no response from the target within {waited}")
            await asyncio.sleep(POLL_S)
        if self.call.status is not CallStatus.ACTIVE:
            if self.failure is not None:
                status, reason = self.failure
                raise CallNotPlaced(f"the line answered {status} {reason}".rstrip())
            raise CallNotPlaced(f"the call ended while being set up ({self.call.end_reason})")
        report.answered_after = time.monotonic() - dialed
        stream = self.call.leg.stream
        if stream is not None:
            dtmf = f"telephone-event/{stream.telephone_event_pt}" if stream.telephone_event_pt is not None \
                else "in-band DTMF"
            report.media = f"{stream.codec_name}, {dtmf}"

    async def _run_steps(self, report: Report) -> None:
        for result in report.steps:
            result.at = self._call_time()
            began = time.monotonic()
            try:
                result.detail = await self._run_step(result.step, result) or ""
                result.status = "pass"
            except StepFailed as exc:
                result.status, result.detail = "fail", str(exc)
            result.duration = time.monotonic() - began
            if result.status == "fail":
                report.outcome, report.exit_status = "failed", EXIT_FAILED
                report.message = f"step {result.index} ({result.step.kind}, line {result.step.position.line}) failed"
                return  # later steps depend on this one; they are reported as skipped

    async def _finish(self) -> None:
        if self.call is not None and self.call.status is not CallStatus.HANGUP:
            self.manager.hangup(self.call, "test_finished")
            await asyncio.sleep(BYE_GRACE_S)
        await self.manager.close()
        await self.pacer.close()
        await self.endpoint.close()

    # -- steps --------------------------------------------------------------------------------------

    async def _run_step(self, step: Step, result: StepResult) -> str | None:
        if isinstance(step, WaitForPrompt):
            return await self._wait_for_prompt(step)
        if isinstance(step, ExpectHeard):
            return await self._expect_heard(step, result)
        if isinstance(step, Press):
            return await self._press(step)
        if isinstance(step, Say):
            return await self._say(step)
        if isinstance(step, Wait):
            await asyncio.sleep(max(0.0, min(step.seconds, self.call_deadline - time.monotonic())))
            self._check_call_deadline()
            return None
        if isinstance(step, ExpectTransfer):
            return await self._expect_transfer(step)
        if isinstance(step, ExpectHangup):
            return await self._expect_hangup(step)
        if isinstance(step, Hangup):
            if self.connected:
                self.we_hung_up = True
                self.manager.hangup(self.call, "test_hangup")
                return None
            raise StepFailed(self._ended_description())
        raise AssertionError(f"no runner for {step.kind}")

    def _deadline(self, timeout: float) -> float:
        return min(time.monotonic() + timeout, self.call_deadline)

    def _check_call_deadline(self) -> None:
        if time.monotonic() >= self.call_deadline:
            raise StepFailed(f"the script's call time limit ({self.script.timeout:g} s) was reached")

    def _timed_out(self, timeout: float, what: str) -> StepFailed:
        if time.monotonic() >= self.call_deadline:
            return StepFailed(f"{what} before the script's call time limit ({self.script.timeout:g} s)")
        return StepFailed(f"{what} within {timeout:g} s")

    def _ended_description(self) -> str:
        if self.far_end_hangup is not None:
            return f"the far end hung up at {self.far_end_hangup:.2f} s"
        if self.we_hung_up:
            return "the call was already hung up by the script"
        reason = self.call.end_reason if self.call is not None else None
        return f"the call has ended ({reason})"

    def _require_connected(self) -> None:
        if not self.connected:
            raise StepFailed(self._ended_description())

    async def _utterance(self, start: int, quiet: float, deadline: float) -> tuple[int, int] | None:
        """Wait for speech from frame ``start`` on (or already under way) to be followed by ``quiet`` s of silence.

        Returns the utterance's (first, last) speech frames, or None when the
        deadline passes or the call ends first.
        """
        heard = self.heard
        assert heard is not None
        quiet_frames = max(1, round(quiet / FRAME_S))
        first = last = None
        if heard.speaking_at(start):
            first, last = start - SPEECH_START_FRAMES, start - 1
        run, scanned = 0, start
        while True:
            count = heard.count
            for index in range(scanned, count):  # only the new frames: long waits stay cheap
                if heard.speech[index]:
                    run += 1
                    last = index
                    if first is None and run == SPEECH_START_FRAMES:
                        first = index - run + 1
                else:
                    run = 0
            scanned = count
            if first is not None and count - 1 - last >= quiet_frames:
                return first, last
            if not self.connected or time.monotonic() >= deadline:
                return None
            await asyncio.sleep(POLL_S)

    async def _wait_for_prompt(self, step: WaitForPrompt) -> str:
        self._require_connected()
        start = self.heard.count
        found = await self._utterance(start, step.quiet, self._deadline(step.timeout))
        if found is None:
            if not self.connected:
                raise StepFailed(f"{self._ended_description()} before a prompt ended")
            began = self.heard.speech_start(start, self.heard.count)
            what = "the far end did not speak" if began is None else \
                f"the prompt that began at {began * FRAME_S:.2f} s did not end (no {step.quiet:g} s pause)"
            raise self._timed_out(step.timeout, what)
        first, last = found
        return f"prompt {first * FRAME_S:.2f}-{(last + 1) * FRAME_S:.2f} s"

    async def _expect_heard(self, step: ExpectHeard, result: StepResult) -> str:
        if self.heard is None:
            raise StepFailed("no audio was heard")
        heard = self.heard
        deadline = self._deadline(step.timeout)
        start = self.checkpoint
        last_look = False
        while True:
            end = heard.count
            pcm = heard.speech_pcm(start, end)
            transcript = await self._transcribe(pcm, heard.sample_rate) if len(pcm) else ""
            result.transcript = transcript
            matched = _first_match(step, transcript)
            if matched is None and transcript:
                # The far end's tail from before the checkpoint (a prompt cut short by
                # the caller) can derail the recogniser on what follows: hear each
                # utterance on its own as well.
                matched, heard_alone = await self._match_utterances(step, start, end)
                if matched is not None:
                    result.transcript = heard_alone
            if matched is not None:
                self.checkpoint = end
                return f'matched "{matched}"' if len(step.texts) > 1 else ""
            if last_look or not self.connected or time.monotonic() >= deadline:
                break
            # The phrase may still be coming: listen on and transcribe again after the next pause.
            if await self._utterance(end, UTTERANCE_QUIET_S, deadline) is None:
                if heard.last_speech(end, heard.count) is None:
                    break
                last_look = True  # cut off mid-sentence by the deadline or a hang-up: check what came
        wanted = " or ".join(f'"{text}"' for text in step.texts)
        heard_from = f"{start * FRAME_S:.2f} s"
        if not transcript:
            raise StepFailed(f"expected {wanted} but heard no speech since {heard_from}")
        raise StepFailed(f"expected {wanted}, not found in what was heard since {heard_from}")

    async def _match_utterances(self, step: ExpectHeard, start: int, end: int) -> tuple[str | None, str]:
        heard = self.heard
        spans = heard.utterances(start, end, round(UTTERANCE_QUIET_S / FRAME_S))
        if len(spans) < 2:
            return None, ""
        for first, last in spans:
            window = (max(start, first - TRIM_PAD_FRAMES), min(end, last + TRIM_PAD_FRAMES))
            # Each pass of expect_heard looks again after the next pause: finished
            # utterances keep their window, so their transcript is reused.
            transcript = self._utterance_texts.get(window)
            if transcript is None:
                transcript = await self._transcribe(heard.speech_pcm(*window), heard.sample_rate)
                self._utterance_texts[window] = transcript
            matched = _first_match(step, transcript)
            if matched is not None:
                return matched, transcript
        return None, ""

    async def _press(self, step: Press) -> str | None:
        self._require_connected()
        stream = self.call.leg.stream
        self.checkpoint = self.heard.count if self.heard is not None else 0
        stream.send_dtmf(step.digits, step.duration_ms)
        plan = plan_dial_string(step.digits, step.duration_ms)
        # Wait the key presses out: a following step must not overlap them.
        # The far end may act on the key and hang up or transfer meanwhile: that is its answer, not a failure.
        await asyncio.sleep(plan[-1][0] + (step.duration_ms + DEFAULT_GAP_MS) / 1000 + FRAME_S)
        return "RFC 4733" if stream.telephone_event_pt is not None else "in-band tones"

    async def _say(self, step: Say) -> str:
        self._require_connected()
        stream = self.call.leg.stream
        self.checkpoint = self.heard.count if self.heard is not None else 0
        pcm, rate = self.speech[step.text]
        source = pcm_source(pcm, rate, stream.sample_rate, label="say")
        seconds = source.total_samples / stream.sample_rate
        played = stream.play(source)
        try:
            async with asyncio.timeout(max(0.0, self._deadline(seconds + 5.0) - time.monotonic())):
                finished = await played
        except TimeoutError:
            stream.flush()
            raise self._timed_out(seconds + 5.0, "the sentence was not played out") from None
        if not finished:
            raise StepFailed(f"{self._ended_description()} while speaking")
        return f"{seconds:.1f} s of speech"

    async def _expect_transfer(self, step: ExpectTransfer) -> str:
        deadline = self._deadline(step.timeout)
        while len(self.refers) <= self.refers_checked:
            if not self.connected:
                raise StepFailed(f"{self._ended_description()} without a transfer")
            if time.monotonic() >= deadline:
                raise self._timed_out(step.timeout, "no transfer (REFER) arrived")
            await asyncio.sleep(POLL_S)
        at, target = self.refers[self.refers_checked]
        self.refers_checked += 1
        if step.target and step.target.lower() not in target.lower():
            raise StepFailed(f"transferred to {target} at {at:.2f} s, expected {step.target}")
        return f"REFER to {target} at {at:.2f} s"

    async def _expect_hangup(self, step: ExpectHangup) -> str:
        deadline = self._deadline(step.timeout)
        while self.far_end_hangup is None:
            if self.we_hung_up:
                raise StepFailed("the script hung up first")
            if not self.connected:
                raise StepFailed(self._ended_description())
            if time.monotonic() >= deadline:
                raise self._timed_out(step.timeout, "the far end did not hang up")
            await asyncio.sleep(POLL_S)
        return f"BYE at {self.far_end_hangup:.2f} s"


def local_address_for(target: str) -> str:
    """The address to bind: loopback for a local line, else the one the OS routes towards the target."""
    uri = parse_uri(target)
    host = uri.host_port()[0] if isinstance(uri, SipUri) else "127.0.0.1"
    try:
        if ipaddress.ip_address(host).is_loopback:
            return "127.0.0.1" if ":" not in host else "::1"
    except ValueError:
        pass  # a host name: ask the routing table
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(host, 5060, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(sockaddr)  # UDP connect sends nothing; it only picks the route
            return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"


# -- the command --------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("script", type=Path, help="the YAML test script (see docs/TESTCALL.md)")
    parser.add_argument("--target", help="SIP URI to call, instead of the script's target:")
    parser.add_argument("--bind", help="local address for SIP and RTP (default: 127.0.0.1 for a local "
                                       "target, else the address routed towards it)")
    parser.add_argument("--save-audio", type=Path, metavar="FILE.wav", help="write everything heard to a WAV file")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])


def main(args: argparse.Namespace) -> int:
    try:
        script = load_script(args.script, target=args.target)
        if args.bind is not None:
            ipaddress.ip_address(args.bind)
    except SourceError as exc:
        return _config_error(args, str(exc))
    except ValueError:
        return _config_error(args, f"{Position('<command line>', 1, 1)}: --bind: {args.bind!r} is not an IP address")
    from .logs import setup_logging

    setup_logging(args.log_level)
    try:
        report = asyncio.run(TestCall(script, bind=args.bind).run(save_audio=args.save_audio))
    except SourceError as exc:
        return _config_error(args, str(exc))
    except SetupError as exc:
        return _config_error(args, f"cannot run the test call: {exc}")
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text(), flush=True)
    return report.exit_status


def _config_error(args: argparse.Namespace, message: str) -> int:
    if args.json:
        print(json.dumps({"script": str(args.script), "outcome": "error", "exit_status": EXIT_CONFIG_ERROR,
                          "message": message, "steps": []}, indent=2))
    print(f"callbridge test-call: {message}", file=sys.stderr)
    return EXIT_CONFIG_ERROR
