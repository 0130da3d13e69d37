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

import asyncio
import logging
import ipaddress
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..call.call import Call, CallStatus
from ..call.events import CallEvent, Published, ReferReceived, StatusChanged
from ..call.manager import CallManager, MediaPolicy
from ..call.trunks import TrunkTable
from ..media.dtmf.rfc4733 import DEFAULT_GAP_MS, plan_dial_string
from ..media.stream import AudioStream
from ..media.pacer import MediaPacer
from ..media.sources import pcm_source
from ..rtp.ports import PortAllocator
from ..sip import events as ev
from ..sip.endpoint import SipEndpoint
from ..sip.uri import SipUri, parse_uri
from ..sip.useragent import UserAgent, UserAgentConfig
from ..offload import run_speech
from ..yamlsource import SourceError
from .heard import FRAME_S, SPEECH_START_FRAMES, TRIM_PAD_FRAMES, HeardAudio, first_match
from .report import EXIT_CALL_FAILED, EXIT_FAILED, CallNotPlaced, Report, SetupError, StepFailed, StepResult
from .script import ExpectHangup, ExpectHeard, ExpectTransfer, Hangup, Press, Say, Script, Step, Wait, WaitForPrompt

log = logging.getLogger("callbridge.testcall")

UTTERANCE_QUIET_S = 0.8  # expect_heard re-listens after a pause this long
POLL_S = FRAME_S
BYE_GRACE_S = 0.5  # lets our BYE (or CANCEL) be answered before the sockets close
# Our RTP ports stay out of callbridge serve's default range (10000-20000) on the same host.
RTP_PORT_MIN, RTP_PORT_MAX = 30000, 39999


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
        self.manager.transfers.on_refer = self._on_refer
        self.manager.consumers.append(self._on_call_event)
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
        ours = self.call is not None and getattr(event, "session", None) is getattr(self.call.leg, "session", None)
        if ours and isinstance(event, ev.CallFailed):
            self.failure = (event.status, event.reason)
        elif ours and isinstance(event, ev.CallEnded) and event.reason == "remote_bye":
            self.far_end_hangup = self._call_time()
        self.manager.on_sip_event(event)

    def _on_call_event(self, call: Call, published: Published) -> None:
        # Attach on the status change itself so not one frame of the greeting is missed.
        if (isinstance(published.event, StatusChanged) and published.event.status is CallStatus.ACTIVE
                and self.heard is None):
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
                    pcm = await run_speech(voice.synthesize, step.text)
                    self.speech[step.text] = (pcm, voice.sample_rate)
        if self.script.has(ExpectHeard):
            from ..speech.stt import Transcriber

            self.transcriber = Transcriber()
            # Loading the model takes seconds: pay for it now, not inside a step.
            await run_speech(self.transcriber.load)

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
        answer_within = min(script.answer_timeout, script.timeout)
        if not await self.call.answered(max(0.0, dialed + answer_within - time.monotonic())) \
                and self.call.status in (CallStatus.DIALING, CallStatus.RINGING):
            ringing = self.call.status is CallStatus.RINGING
            self.manager.hangup(self.call, "no_answer")  # a CANCEL while it rings
            waited = f"{answer_within:g} s"
            raise CallNotPlaced(f"rang for {waited} without an answer" if ringing
                                else f"no response from the target within {waited}")
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
                assert self.call is not None  # connected: dialled and answered
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

    def _require_connected(self) -> AudioStream:
        """The answered call's media stream; the step fails when the call is not up."""
        if not self.connected:
            raise StepFailed(self._ended_description())
        assert self.call is not None  # connected: dialled and answered
        stream = self.call.leg.sip().stream  # the simulator dials SIP
        if stream is None:
            raise StepFailed("the call was answered without media")
        return stream

    def _require_heard(self) -> HeardAudio:
        if self.heard is None:
            raise StepFailed("no audio was heard")
        return self.heard

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
            if first is not None and last is not None and count - 1 - last >= quiet_frames:
                return first, last
            if not self.connected or time.monotonic() >= deadline:
                return None
            await asyncio.sleep(POLL_S)

    async def _wait_for_prompt(self, step: WaitForPrompt) -> str:
        self._require_connected()
        heard = self._require_heard()
        start = heard.count
        found = await self._utterance(start, step.quiet, self._deadline(step.timeout))
        if found is None:
            if not self.connected:
                raise StepFailed(f"{self._ended_description()} before a prompt ended")
            began = heard.speech_start(start, heard.count)
            what = "the far end did not speak" if began is None else \
                f"the prompt that began at {began * FRAME_S:.2f} s did not end (no {step.quiet:g} s pause)"
            raise self._timed_out(step.timeout, what)
        first, last = found
        return f"prompt {first * FRAME_S:.2f}-{(last + 1) * FRAME_S:.2f} s"

    async def _expect_heard(self, step: ExpectHeard, result: StepResult) -> str:
        heard = self._require_heard()
        deadline = self._deadline(step.timeout)
        start = self.checkpoint
        last_look = False
        while True:
            end = heard.count
            pcm = heard.speech_pcm(start, end)
            transcript = await self._transcribe(pcm, heard.sample_rate) if len(pcm) else ""
            result.transcript = transcript
            matched = first_match(step, transcript)
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
        heard = self._require_heard()
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
            matched = first_match(step, transcript)
            if matched is not None:
                return matched, transcript
        return None, ""

    async def _press(self, step: Press) -> str | None:
        stream = self._require_connected()
        self.checkpoint = self.heard.count if self.heard is not None else 0
        stream.send_dtmf(step.digits, step.duration_ms)
        plan = plan_dial_string(step.digits, step.duration_ms)
        # Wait the key presses out: a following step must not overlap them.
        # The far end may act on the key and hang up or transfer meanwhile: that is its answer, not a failure.
        await asyncio.sleep(plan[-1][0] + (step.duration_ms + DEFAULT_GAP_MS) / 1000 + FRAME_S)
        return "RFC 4733" if stream.telephone_event_pt is not None else "in-band tones"

    async def _say(self, step: Say) -> str:
        stream = self._require_connected()
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
        if len(self.refers) <= self.refers_checked:
            if not self.connected:
                raise StepFailed(f"{self._ended_description()} without a transfer")
            assert self.call is not None
            try:
                await self.call.wait_for(_refer_or_end, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise self._timed_out(step.timeout, "no transfer (REFER) arrived") from None
            if len(self.refers) <= self.refers_checked:
                raise StepFailed(f"{self._ended_description()} without a transfer")
        at, target = self.refers[self.refers_checked]
        self.refers_checked += 1
        if step.target and step.target.lower() not in target.lower():
            raise StepFailed(f"transferred to {target} at {at:.2f} s, expected {step.target}")
        return f"REFER to {target} at {at:.2f} s"

    async def _expect_hangup(self, step: ExpectHangup) -> str:
        deadline = self._deadline(step.timeout)
        if self.far_end_hangup is None:
            if self.we_hung_up:
                raise StepFailed("the script hung up first")
            if not self.connected:
                raise StepFailed(self._ended_description())
            assert self.call is not None
            if not await self.call.ended(max(0.0, deadline - time.monotonic())):
                raise self._timed_out(step.timeout, "the far end did not hang up")
            if self.far_end_hangup is None:
                raise StepFailed("the script hung up first" if self.we_hung_up else self._ended_description())
        return f"BYE at {self.far_end_hangup:.2f} s"


def _refer_or_end(event: CallEvent) -> bool:
    return isinstance(event, ReferReceived) or (isinstance(event, StatusChanged) and event.status is CallStatus.HANGUP)


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
