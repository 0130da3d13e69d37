"""A flow's view of a real call: :class:`FlowIO` over a Call, its AudioStream and the CallManager.

Keys: every press lands in a per-call FIFO (type-ahead), whatever its source
(RFC 4733, SIP INFO, in-band). A press while a prompt plays stops the prompt
at once; the key stays queued for the gather or menu that reads it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..call.call import Call, CallStatus
from ..call.manager import CallManager
from ..call.trunks import normalise_number
from ..media.bridge import AudioBridge
from ..media.dtmf import DtmfEvent
from ..media.sources import PcmSource, Source, wav_source
from ..speech.prompts import PromptCache, PromptSpec
from .handoff import HandoffContext
from .io import CallInfo

log = logging.getLogger("callbridge.ivr")

# A REFER transaction gives up after 64*T1 = 32 s (RFC 3261 §17.1.2.2); we wait as long.
TRANSFER_TIMEOUT_S = 32.0
NOTIFY_GRACE_S = 10.0
BRIDGE_ANSWER_TIMEOUT_S = 45.0  # how long a bridged transfer rings before we give up
POLL_S = 0.05

AgentStarter = Callable[[str, "CallFlowIO", HandoffContext], Awaitable[None]]
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
        manager.dtmf_listeners.append(self._on_dtmf)
        self.bridge: AudioBridge | None = None

    def close(self) -> None:
        if self._on_dtmf in self.manager.dtmf_listeners:
            self.manager.dtmf_listeners.remove(self._on_dtmf)
        if self.bridge is not None:
            self.bridge.close()

    def _on_dtmf(self, call: Call, event: DtmfEvent) -> None:
        if call is self.call:
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
            source = await asyncio.to_thread(wav_source, path, stream.sample_rate)
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
        """One utterance: wait up to ``timeout`` for speech, then until the caller stops."""
        if self.transcriber is None:
            log.warning("speech input asked for, but no transcriber is configured")
            return None
        from ..speech.utterance import UtteranceDetector

        stream = self.stream
        detector = UtteranceDetector(stream.sample_rate)
        done: asyncio.Future[np.ndarray | None] = asyncio.get_running_loop().create_future()

        def hear(pcm: np.ndarray) -> None:
            if not done.done():
                utterance = detector.feed(pcm)
                if utterance is not None:
                    done.set_result(utterance)

        stream.audio_listeners.append(hear)
        try:
            deadline = time.monotonic() + timeout
            while not done.done():
                if self.call.status is CallStatus.HANGUP:
                    raise CallHungUp()
                if time.monotonic() > deadline and not detector.speaking:
                    return None
                await asyncio.sleep(POLL_S)
        finally:
            if hear in stream.audio_listeners:
                stream.audio_listeners.remove(hear)
        utterance = done.result()
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
        seen = len(self.call.events)
        self.manager.transfer(self.call, self._refer_uri(target))
        deadline = time.monotonic() + TRANSFER_TIMEOUT_S
        while time.monotonic() < deadline:
            for event in self.call.events[seen:]:
                if event["type"] == "refer_failed":
                    return False
                if event["type"] == "refer_accepted":
                    # 202: now wait for the NOTIFY saying how the new call went (RFC 3515 §2.4.5);
                    # a peer that never sends one gets NOTIFY_GRACE_S, then we trust the 202.
                    deadline = min(deadline, time.monotonic() + NOTIFY_GRACE_S)
                if event["type"] == "refer_progress" and event.get("final"):
                    return event["status"] < 300
            seen = len(self.call.events)
            if self.call.status is CallStatus.HANGUP:
                return True  # the transferee left: the transfer took
            await asyncio.sleep(POLL_S)
        return any(e["type"] == "refer_accepted" for e in self.call.events)

    def _refer_uri(self, target: str) -> str:
        """A phone number becomes a SIP URI at the peer that sent us the call: the
        trunk (Twilio, say) then routes the number, as it does for its own REFERs."""
        if ":" in target:
            return target
        source = getattr(self.call.leg.session, "source", None)
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
        deadline = time.monotonic() + BRIDGE_ANSWER_TIMEOUT_S
        try:
            while other.status in (CallStatus.DIALING, CallStatus.RINGING) and time.monotonic() < deadline:
                if self.call.status is CallStatus.HANGUP:
                    raise CallHungUp()
                await asyncio.sleep(POLL_S)
        except (CallHungUp, asyncio.CancelledError):
            self.manager.hangup(other, "caller_hangup")  # CANCEL: the caller gave up while it rang
            raise
        if other.status is not CallStatus.ACTIVE or other.leg.stream is None:
            if other.status is not CallStatus.HANGUP:
                self.manager.hangup(other, "no_answer")
            return False
        self.bridge = AudioBridge(self.stream, other.leg.stream)
        self.call.log_event("bridged", target=target, other_call=other.id)
        try:
            # Stay until either side hangs up...
            while self.call.status is not CallStatus.HANGUP and other.status is not CallStatus.HANGUP:
                await asyncio.sleep(POLL_S * 4)
        finally:
            # ...then take the other one down too. Also when our task is cancelled
            # because the caller hung up: the far leg must not stay up alone.
            self.bridge.close()
            for leg in (self.call, other):
                if leg.status is not CallStatus.HANGUP:
                    self.manager.hangup(leg, "bridge_ended")
        return True

    async def handoff(self, agent: str, context: HandoffContext) -> None:
        self.call.handoff = {"agent": agent, **context.to_dict()}
        self.call.log_event("handoff", agent=agent)
        for listener in self.manager.listeners:
            listener(self.call, "handoff")
        await self.start_agent(agent, self, context)

    async def hangup(self, reason: str) -> None:
        if self.call.status is not CallStatus.HANGUP:
            # Let the last prompt finish leaving the wire before the BYE.
            await asyncio.sleep(0.2)
            self.manager.hangup(self.call, reason)

    def record(self, kind: str, **fields: Any) -> None:
        if "type" in fields:  # a node's own type must not hide what kind of entry this is
            fields["node_type"] = fields.pop("type")
        entry = {"at": round(time.time(), 3), "type": kind, **{k: v for k, v in fields.items() if v is not None}}
        self.call.ivr.append(entry)
