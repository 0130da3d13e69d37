"""A flow's view of a real call: :class:`FlowIO` over a Call, its AudioStream and the CallManager.

Keys: every press lands in a per-call FIFO (type-ahead), whatever its source
(RFC 4733, SIP INFO, in-band): the IO is a consumer of the call's event
stream and takes each ``DtmfReceived``. A press while a prompt plays stops
the prompt at once; the key stays queued for the gather or menu that reads it.

Waiting (for a REFER's outcome, a bridged leg's answer, either side's hang-up)
awaits the calls' events; nothing polls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..call import events as ev
from ..call.call import Call, CallStatus
from ..call.manager import CallManager
from ..call.trunks import normalise_number
from ..media.bridge import AudioBridge
from ..media.sources import PcmSource, Source, wav_source
from ..offload import run_files
from ..speech.prompts import PromptCache, PromptSpec
from .agentport import CallAgentPort
from .handoff import HandoffContext
from .io import CallInfo

log = logging.getLogger("callbridge.ivr")

# A REFER transaction gives up after 64*T1 = 32 s (RFC 3261 §17.1.2.2); we wait as long.
TRANSFER_TIMEOUT_S = 32.0
NOTIFY_GRACE_S = 10.0
BRIDGE_ANSWER_TIMEOUT_S = 45.0  # how long a bridged transfer rings before we give up

# (agent name, the call as the agent sees it): returns when the conversation is over
AgentStarter = Callable[[str, CallAgentPort], Awaitable[None]]
TranscriberFactory = Callable[[], Any]  # returns a speech.stt.Transcriber (loaded lazily: ~0.5 s)
Dialer = Callable[[str, str | None], Awaitable[Call]]  # (target, trunk) -> an outbound call


class CallHungUp(Exception):
    """The caller went away while the flow was waiting on them."""


class CallFlowIO:
    def __init__(self, call: Call, manager: CallManager, *, prompts: PromptCache,
                 start_agent: AgentStarter, transcriber: TranscriberFactory | None = None,
                 dial: Dialer | None = None) -> None:
        self.call = call
        self.manager = manager
        self.prompts = prompts
        self.start_agent = start_agent
        self.transcriber = transcriber
        self.dial = dial
        self.info = CallInfo(call_id=call.id, caller=call.caller, caller_name=call.caller_name, called=call.called,
                             trunk=call.trunk, sip_headers=dict(call.sip_headers))
        self._digits: asyncio.Queue[str] = asyncio.Queue()
        self._key_pressed = asyncio.Event()
        call.consumers.append(self._on_event)
        self.bridge: AudioBridge | None = None

    def close(self) -> None:
        if self._on_event in self.call.consumers:
            self.call.consumers.remove(self._on_event)
        if self.bridge is not None:
            self.bridge.close()

    def _on_event(self, call: Call, published: ev.Published) -> None:
        event = published.event
        if isinstance(event, ev.DtmfReceived):
            self._digits.put_nowait(event.digit)
            self._key_pressed.set()

    @property
    def stream(self):
        stream = self.call.leg.stream
        if stream is None or self.call.status is CallStatus.HANGUP:
            raise CallHungUp()
        return stream

    # -- prompts ------------------------------------------------------------------------------

    async def say(self, text: str, *, language: str, voice: str | None) -> None:
        if not self._digits.empty():
            self.record("prompt_skipped", reason="key pressed ahead")  # type-ahead: the caller already answered
            return
        stream = self.stream
        try:
            pcm = await self.prompts.pcm_async(PromptSpec(text, language, voice), stream.sample_rate)
        except Exception as exc:  # noqa: BLE001 - a broken voice must not end the call
            # The caller misses one prompt but the menu still takes their keys.
            log.error("prompt synthesis failed: %s", exc, extra={"call_id": self.call.sip_call_id})
            self.record("prompt_failed", error=str(exc))
            return
        await self._play(PcmSource(pcm, stream.sample_rate, label=text[:60]))

    async def play(self, path: Path) -> None:
        if not self._digits.empty():
            self.record("prompt_skipped", reason="key pressed ahead")
            return
        stream = self.stream
        try:
            source = await run_files(wav_source, path, stream.sample_rate)
        except (OSError, ValueError) as exc:  # deleted or corrupted since the flow loaded
            log.error("cannot play %s: %s", path, exc, extra={"call_id": self.call.sip_call_id})
            self.record("prompt_failed", file=str(path), error=str(exc))
            return
        await self._play(source)

    async def _play(self, source: Source) -> None:
        stream = self.stream
        self._key_pressed.clear()
        played = stream.play(source)
        pressed = asyncio.ensure_future(self._key_pressed.wait())
        try:
            await asyncio.wait({played, pressed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pressed.cancel()
        if not played.done():
            # Barge-in: silence at once; the key stays queued for whoever reads next.
            cut = stream.flush()
            heard = None if cut is None else round(cut.played_samples / stream.sample_rate, 2)
            self.record("barge_in", heard_s=heard)

    # -- keys and speech -----------------------------------------------------------------------

    async def read_digit(self, timeout: float) -> str | None:
        self.stream  # noqa: B018 - raises CallHungUp when the caller is gone
        if timeout <= 0:  # wait_for(..., 0) times out without looking at the queue
            digit = None if self._digits.empty() else self._digits.get_nowait()
            if self._digits.empty():
                self._key_pressed.clear()
            return digit
        try:
            digit = await asyncio.wait_for(self._digits.get(), timeout)
        except TimeoutError:
            return None
        if self._digits.empty():
            self._key_pressed.clear()
        return digit

    def clear_digits(self) -> None:
        while not self._digits.empty():
            self._digits.get_nowait()
        self._key_pressed.clear()

    async def listen(self, *, timeout: float, language: str, hints: list[str]) -> str | None:
        """One utterance: wait up to ``timeout`` for speech, then until the caller stops.

        Woken only by what decides it: the caller's audio (each tick's listener), the deadline
        (one timer) and the call's end (its event), never by polling."""
        if self.transcriber is None:
            log.warning("speech input asked for, but no transcriber is configured")
            return None
        from ..speech.utterance import UtteranceDetector

        stream = self.stream
        detector = UtteranceDetector(stream.sample_rate)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[np.ndarray | None] = loop.create_future()
        deadline = loop.time() + timeout

        def settle(utterance: np.ndarray | None) -> None:
            if not done.done():
                done.set_result(utterance)

        def hear(pcm: np.ndarray) -> None:
            if done.done():
                return
            utterance = detector.feed(pcm)
            if utterance is not None:
                settle(utterance)
            elif not detector.speaking and loop.time() >= deadline:
                settle(None)  # speech that was under way at the deadline stopped short of an utterance

        def time_up() -> None:
            if not detector.speaking:  # else the utterance under way decides, in hear()
                settle(None)

        stream.audio_listeners.append(hear)
        timer = loop.call_at(deadline, time_up)
        hung_up = asyncio.ensure_future(self.call.ended())
        try:
            waiting: set[asyncio.Future[Any]] = {done, hung_up}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not done.done():
                raise CallHungUp()
        finally:
            timer.cancel()
            hung_up.cancel()
            if hear in stream.audio_listeners:
                stream.audio_listeners.remove(hear)
        utterance = done.result()
        if utterance is None:
            return None
        try:
            transcriber = self.transcriber()
            text = await transcriber.transcribe_async(utterance, stream.sample_rate, language=language,
                                                      hints=hints or None)
        except Exception as exc:  # noqa: BLE001 - treat it as not understood: the flow re-asks or moves on
            log.error("transcription failed: %s", exc, extra={"call_id": self.call.sip_call_id})
            self.record("speech_failed", error=str(exc))
            return None
        self.record("speech", text=text)
        return text or None

    # -- leaving the IVR -------------------------------------------------------------------------

    async def transfer(self, target: str, *, method: str, trunk: str | None) -> bool:
        if method == "bridge":
            return await self._bridge(target, trunk)
        outcome = _ReferOutcome()
        settled = asyncio.ensure_future(self.call.wait_for(outcome.settles, TRANSFER_TIMEOUT_S))
        await asyncio.sleep(0)  # waiting before the REFER leaves: nothing it causes can be missed
        try:
            try:
                self.manager.transfer(self.call, self._refer_uri(target))
            except ValueError as exc:  # a browser (WebRTC) call has no dialog to REFER
                log.warning("transfer refused: %s", exc, extra={"call_id": self.call.sip_call_id})
                self.record("transfer_refused", reason=str(exc))
                return False
            if self.call.status is CallStatus.HANGUP:
                return True  # the transferee had already left: nothing is left to transfer
            accepted = asyncio.ensure_future(outcome.accepted.wait())
            try:
                await asyncio.wait({settled, accepted}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                accepted.cancel()
            if not settled.done():
                # 202: now wait for the NOTIFY saying how the new call went (RFC 3515 §2.4.5);
                # a peer that never sends one gets NOTIFY_GRACE_S, then we trust the 202.
                await asyncio.wait({settled}, timeout=NOTIFY_GRACE_S)
            if not settled.done() or settled.exception() is not None:  # TimeoutError: no final word came
                return outcome.accepted.is_set()
            return outcome.verdict(settled.result())
        finally:
            settled.cancel()

    def _refer_uri(self, target: str) -> str:
        """A phone number becomes a SIP URI at the peer that sent us the call: the
        trunk (Twilio, say) then routes the number, as it does for its own REFERs."""
        if ":" in target:
            return target
        # A browser call has no SIP peer: the number then goes to localhost, as with no source.
        source = getattr(getattr(self.call.leg, "session", None), "source", None)
        host = getattr(source, "host", None) or "localhost"
        port = getattr(source, "port", None)
        return f"sip:{normalise_number(target)}@{host}" + (f":{port}" if port else "")

    async def _bridge(self, target: str, trunk: str | None) -> bool:
        if self.dial is None:
            log.error("bridged transfer asked for, but no dialer is configured")
            return False
        try:
            other = await self.dial(target, trunk)
        except (OSError, ValueError) as exc:
            log.warning("bridged transfer to %s failed: %s", target, exc)
            return False
        answered = asyncio.ensure_future(other.answered(BRIDGE_ANSWER_TIMEOUT_S))
        caller_left = asyncio.ensure_future(self.call.ended())
        try:
            await asyncio.wait({answered, caller_left}, return_when=asyncio.FIRST_COMPLETED)
            if caller_left.done():
                raise CallHungUp()
        except (CallHungUp, asyncio.CancelledError):
            self.manager.hangup(other, "caller_hangup")  # CANCEL: the caller gave up while it rang
            raise
        finally:
            answered.cancel()
            caller_left.cancel()
        if not answered.result() or other.status is not CallStatus.ACTIVE or other.leg.stream is None:
            if other.status is not CallStatus.HANGUP:
                self.manager.hangup(other, "no_answer")
            return False
        self.bridge = AudioBridge(self.stream, other.leg.stream)
        self.call.publish(ev.Bridged(target=target, other_call=other.id))
        ends = [asyncio.ensure_future(leg.ended()) for leg in (self.call, other)]
        try:
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)  # stay until either side hangs up...
        finally:
            # ...then take the other one down too. Also when our task is cancelled
            # because the caller hung up: the far leg must not stay up alone.
            for waiting in ends:
                waiting.cancel()
            self.bridge.close()
            for leg in (self.call, other):
                if leg.status is not CallStatus.HANGUP:
                    self.manager.hangup(leg, "bridge_ended")
        return True

    async def handoff(self, agent: str, context: HandoffContext) -> None:
        self.call.publish(ev.HandedOff(agent=agent, context=context.to_dict()))
        await self.start_agent(agent, CallAgentPort(self, context))

    async def hangup(self, reason: str) -> None:
        if self.call.status is not CallStatus.HANGUP:
            # Let the last prompt finish leaving the wire before the BYE.
            await asyncio.sleep(0.2)
            self.manager.hangup(self.call, reason)

    def record(self, kind: str, **fields: Any) -> None:
        if "type" in fields:  # a node's own type must not hide what kind of entry this is
            fields["node_type"] = fields.pop("type")
        self.call.publish(ev.IvrStep(kind=kind, details={k: v for k, v in fields.items() if v is not None}))


class _ReferOutcome:
    """Reads a REFER's fate off the call's events as they are published (none can slip by)."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()  # 202 Accepted (RFC 3515 §2.4.2)

    def settles(self, event: ev.CallEvent) -> bool:
        if isinstance(event, ev.ReferAccepted):
            self.accepted.set()
            return False
        if isinstance(event, ev.StatusChanged):
            return event.status is CallStatus.HANGUP
        return isinstance(event, ev.ReferFailed) or (isinstance(event, ev.ReferProgress) and event.final)

    @staticmethod
    def verdict(event: ev.CallEvent) -> bool:
        if isinstance(event, ev.ReferProgress):
            return event.status < 300
        return not isinstance(event, ev.ReferFailed)  # the transferee left: the transfer took
