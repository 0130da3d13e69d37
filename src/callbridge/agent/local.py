"""The offline speech-to-speech back end: silero endpointing → whisper → intents brain → piper.

It speaks the :mod:`.realtime` interface like any cloud model, so the agent
session cannot tell the difference. Everything runs on packaged weights.

A turn: the endpointer closes an utterance after a short pause
(``early_ms``) and whisper starts on it at once, in a worker thread. The turn
is only *confirmed* once the caller has stayed quiet for the full
``silence_ms``; if they speak again before that, the speculative turn is
dropped and its audio is joined to what follows. So recognition overlaps the
end-of-turn wait instead of following it; the intents brain picks an intent and its
slots (an intent still missing a slot asks for it, and the next utterance is
read as the answer); an intent with a tool asks the session to run it and
renders the reply with the result; piper speaks the reply sentence by
sentence, so the first sentence plays while the next is synthesised.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from ..offload import run_speech
from ..speech.tts import Synthesizer, synthesize_stream
from .llm import ChatBrain, ChatError, SentenceReady, run_turn
from ..speech.utterance import UtteranceDetector
from .brain.intents import IntentEngine, Match
from .realtime import (
    AgentAudio,
    AgentEvent,
    AgentTranscript,
    ErrorCode,
    BackendError,
    HistoryLimits,
    SessionSetup,
    SpeechStarted,
    ToolCall,
    TurnEnded,
    TurnTiming,
    UserTranscript,
)

log = logging.getLogger("callbridge.agent")

DEFAULT_SILENCE_MS = 500  # quiet that ends the caller's turn: shorter cuts people off mid-thought
EARLY_MS = 250  # a pause this long starts recognition speculatively
KEY_PAUSE_S = 2.0  # keys without '#' count as entered after this pause
ACTION_TOOLS = {"transfer": "transfer_to_human", "end_call": "end_call"}
NOT_FOUND = "Sorry, I could not find that. Could you check the number and say it again?"
CHAT_APOLOGY = "Sorry, I had trouble with that. Could you say it again?"
TOOL_RESULT_TIMEOUT_S = 15.0  # the session enforces each tool's own timeout; this only guards a lost reply


class LocalBackend:
    def __init__(self, *, brain: IntentEngine | None, transcriber: Any, synthesizer: Synthesizer, input_rate: int,
                 silence_ms: int = DEFAULT_SILENCE_MS, chat: ChatBrain | None = None,
                 max_session_s: float | None = None) -> None:
        if brain is None and chat is None:
            raise ValueError("the local engine needs a brain: an intents file or a chat model")
        self.brain = brain
        self.chat = chat  # an OpenAI-compatible model replaces the intents brain when given
        self.transcriber = transcriber
        self.synthesizer = synthesizer
        self.input_rate = input_rate
        self.output_rate = synthesizer.sample_rate
        # No real limit offline; set one to watch renewal work on a local demo.
        self.max_session_s = max_session_s
        self.history_limits = HistoryLimits()
        self.silence_ms = silence_ms
        self.language = "en"
        self.early_ms = min(EARLY_MS, silence_ms)
        self._detector = UtteranceDetector(input_rate, silence_ms=self.early_ms)
        self._unconfirmed: np.ndarray | None = None  # audio of a turn still inside its confirmation wait
        self._quiet_samples = 0  # caller audio since the last utterance closed
        self._confirm_samples = (silence_ms - self.early_ms) * input_rate // 1000
        self._turn_over = asyncio.Event()
        self._resumed = False  # the caller spoke again inside the confirmation wait
        self._keys = ""
        self._key_timer: asyncio.TimerHandle | None = None
        self._events: asyncio.Queue[AgentEvent | None] = asyncio.Queue()
        self._turn_ids = itertools.count(1)
        self._turn: asyncio.Task | None = None
        self._pending: Match | None = None  # an intent waiting for the caller to give a slot
        self._tool_results: dict[str, asyncio.Future[str]] = {}
        self._was_speaking = False
        self._closed = False
        self._unsent: list[np.ndarray] = []  # caller audio given after the session expired
        self._expired = False
        self._withdrawn = False
        self._messages: list[dict[str, Any]] = []  # the chat model's conversation
        self._tool_schemas: list[dict[str, Any]] = []
        self._expiry: asyncio.TimerHandle | None = None

    # -- RealtimeBackend ----------------------------------------------------------------------

    async def start(self, setup: SessionSetup) -> None:
        self.language = setup.language
        self._tool_schemas = setup.tools
        self._messages = [{"role": "system", "content": setup.instructions},
                          *({"role": turn["role"], "content": turn["text"]} for turn in setup.history)]
        if self.max_session_s:
            self._expiry = asyncio.get_running_loop().call_later(self.max_session_s, self._expire)
        if setup.greeting:
            self._messages.append({"role": "assistant", "content": setup.greeting})
            self._start_turn(self._speak(self._new_turn_id(), setup.greeting))

    def send_audio(self, pcm: np.ndarray) -> None:
        if self._closed:
            if self._expired and not self._withdrawn:  # the next session gets it: withdraw_unsent_audio
                self._unsent.append(pcm)
            return
        utterance = self._detector.feed(pcm)
        self._quiet_samples += len(pcm)
        if (self._unconfirmed is not None and self._quiet_samples >= self._confirm_samples
                and not self._detector.hearing):
            # silence_ms of the caller's audio and nothing heard since: the turn is over.
            # Counted in audio, not wall time: a loop that falls behind must not cut anyone off.
            self._turn_over.set()
        speaking = self._detector.speaking
        if speaking and not self._was_speaking:
            if self._unconfirmed is not None:  # the last turn is not confirmed over yet
                # Only a pause: the caller goes on. Drop the speculative turn; its
                # audio leads the next utterance. The agent had not spoken yet.
                self._resumed = True
                if self._turn is not None:
                    self._turn.cancel()
            else:
                self._unconfirmed = None
                self._emit(SpeechStarted())
        self._was_speaking = speaking
        if utterance is not None:
            self._was_speaking = False
            now = time.monotonic()
            if self._resumed and self._unconfirmed is not None:
                utterance = np.concatenate((self._unconfirmed, utterance))
            self._resumed = False
            self._unconfirmed = utterance
            self._quiet_samples = 0
            self._turn_over = asyncio.Event()  # a fresh one: a cancelled turn's wait is gone
            self._start_turn(self._answer(utterance, now - self.early_ms / 1000))

    def send_dtmf(self, digit: str) -> None:
        # Keyed answers ("enter your order number, then pound"): collected until
        # '#' or a pause, then handled like the same digits spoken.
        if self._key_timer is not None:
            self._key_timer.cancel()
            self._key_timer = None
        if digit == "#":
            self._flush_keys()
            return
        self._keys += digit
        self._key_timer = asyncio.get_running_loop().call_later(KEY_PAUSE_S, self._flush_keys)

    def _flush_keys(self) -> None:
        keys, self._keys, self._key_timer = self._keys, "", None
        if keys:
            self._start_turn(self._answer_text(keys))

    def send_text(self, text: str) -> None:
        self._start_turn(self._answer_text(text))

    def send_tool_result(self, call_id: str, result: str) -> None:
        future = self._tool_results.pop(call_id, None)
        if future is not None and not future.done():
            future.set_result(result)

    def interrupted(self, turn_id: str, heard_text: str, heard_ms: int = 0) -> None:
        # The caller talked over us: drop the rest of what we were saying.
        if self._turn is not None and not self._turn.done():
            self._turn.cancel()

    async def events(self) -> AsyncIterator[AgentEvent]:
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event

    def _expire(self) -> None:
        # Behaves like a cloud session reaching its limit, so renewal can be shown offline.
        self._emit(BackendError("local session limit reached", code=ErrorCode.SESSION_EXPIRED))
        self._closed = self._expired = True
        self._events.put_nowait(None)

    def withdraw_unsent_audio(self) -> np.ndarray:
        # A live local session hears every frame the moment it is given; only audio that
        # arrived after it expired was never heard.
        self._withdrawn = True
        self._closed = True
        unsent, self._unsent = self._unsent, []
        return np.concatenate(unsent) if unsent else np.zeros(0, np.int16)

    async def close(self) -> None:
        self._closed = True
        if self._expiry is not None:
            self._expiry.cancel()
        if self.chat is not None:
            await self.chat.aclose()
        if self._turn is not None:
            self._turn.cancel()
        self._events.put_nowait(None)

    # -- turns -------------------------------------------------------------------------------------

    def _new_turn_id(self) -> str:
        return f"t{next(self._turn_ids)}"

    def _emit(self, event: AgentEvent) -> None:
        self._events.put_nowait(event)

    def _start_turn(self, coro) -> None:
        # A new utterance supersedes anything still being prepared or said.
        if self._turn is not None and not self._turn.done():
            self._turn.cancel()
        self._turn = asyncio.get_running_loop().create_task(self._guard(coro))

    async def _guard(self, coro) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad turn must not end the conversation
            log.exception("agent turn failed")
            self._emit(BackendError(str(exc)))

    async def _answer(self, utterance: np.ndarray, speech_ended_at: float) -> None:
        turn_id = self._new_turn_id()
        started = time.monotonic()
        text = await self.transcriber.transcribe_async(utterance, self.input_rate, language=self.language)
        transcribed = time.monotonic()
        # Until then it may still be a pause: if the caller goes on, send_audio cancels
        # this turn; a noise too short to be speech only delays the answer.
        await self._turn_over.wait()
        self._unconfirmed = None
        if not text.strip():
            return  # a cough or a door: nothing to answer
        self._emit(UserTranscript(text, True, turn_id))
        await self._reply(turn_id, text, speech_ended_at, started, transcribed)

    async def _answer_text(self, text: str) -> None:
        turn_id = self._new_turn_id()
        now = time.monotonic()
        self._emit(UserTranscript(text, True, turn_id))
        await self._reply(turn_id, text, now, now, now)

    async def _reply(self, turn_id: str, text: str, speech_ended_at: float, started: float,
                     transcribed: float) -> None:
        if self.chat is not None:
            await self._reply_with_chat(turn_id, text, speech_ended_at, started, transcribed)
            return
        thinking = time.monotonic()
        reply, action = await self._think(turn_id, text)
        thought = time.monotonic()
        # vad: speech end until the turn was confirmed over; stt ran inside that wait
        # when it was quick enough, so the parts overlap rather than add up.
        timing = {"turn_id": turn_id, "vad_ms": (thinking - speech_ended_at) * 1000,
                  "stt_ms": (transcribed - started) * 1000, "brain_ms": (thought - thinking) * 1000,
                  "speech_ended_at": speech_ended_at}
        await self._speak(turn_id, reply, timing=timing, started=thought)
        if action is not None:
            self._emit(ToolCall(f"{turn_id}-action", ACTION_TOOLS[action], "{}"))

    async def _reply_with_chat(self, turn_id: str, text: str, speech_ended_at: float, started: float,
                               transcribed: float) -> None:
        """The chat model's reply, spoken sentence by sentence while the rest still streams in."""
        thinking = time.monotonic()
        self._messages.append({"role": "user", "content": text})
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        timing = {"turn_id": turn_id, "vad_ms": (thinking - speech_ended_at) * 1000,
                  "stt_ms": (transcribed - started) * 1000, "speech_ended_at": speech_ended_at}
        speaker = asyncio.get_running_loop().create_task(self._speak_sentences(turn_id, sentences, timing, thinking))
        tools = _ToolsThroughSession(self, turn_id)
        try:
            async for event in run_turn(self.chat, self._messages, tools):  # type: ignore[arg-type]
                if isinstance(event, SentenceReady):
                    sentences.put_nowait(event.text)
                elif isinstance(event, ChatError):
                    log.warning("chat model failed (%s): %s", event.kind, event.message)
                    self._emit(BackendError(f"chat model: {event.message}"))
                    sentences.put_nowait(CHAT_APOLOGY)
            sentences.put_nowait(None)
            await speaker
        finally:
            speaker.cancel()

    async def _speak_sentences(self, turn_id: str, sentences: asyncio.Queue[str | None], timing: dict,
                               thinking: float) -> None:
        first = True
        while (sentence := await sentences.get()) is not None:
            self._emit(AgentTranscript(sentence, turn_id))
            brain_done = time.monotonic()
            for pcm in await run_speech(_synthesize_all, self.synthesizer, sentence):
                if first:
                    self._emit(TurnTiming(brain_ms=(brain_done - thinking) * 1000,
                                          tts_first_ms=(time.monotonic() - brain_done) * 1000, **timing))
                    first = False
                self._emit(AgentAudio(pcm, turn_id))
        self._emit(TurnEnded(turn_id))

    async def _think(self, turn_id: str, text: str) -> tuple[str, str | None]:
        assert self.brain is not None
        pending, self._pending = self._pending, None
        match = None
        if pending is not None:
            slots, missing = self.brain.extract_slots(pending.intent, text)
            if slots:
                match = Match(pending.intent, pending.score, {**pending.slots, **slots}, missing)
        if match is None:
            match = await run_speech(self.brain.match, text)
        if match.is_fallback:
            return self.brain.reply(match), None
        if match.missing:
            self._pending = match
            return self.brain.reply(match), None
        intent = self.brain.intent(match.intent)
        if intent.tool is None:
            return self.brain.reply(match), intent.action
        result = await self._run_tool(f"{turn_id}-{intent.tool}", intent.tool, match.slots)
        if "error" in result:
            return self.brain.reply(match, failed=True), None
        if result.get("found") is False:
            self._pending = Match(match.intent, match.score, {}, [s.name for s in intent.slots if s.required])
            return NOT_FOUND, None
        return self.brain.reply(match, result), intent.action

    async def _run_tool(self, call_id: str, name: str, arguments: dict[str, str]) -> dict[str, Any]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._tool_results[call_id] = future
        self._emit(ToolCall(call_id, name, json.dumps(arguments)))
        try:
            text = await asyncio.wait_for(future, TOOL_RESULT_TIMEOUT_S)
            value = json.loads(text)
        except (TimeoutError, ValueError) as exc:
            return {"error": f"no usable result: {exc}"}
        return value if isinstance(value, dict) else {"value": value}

    async def _speak(self, turn_id: str, text: str, *, timing: dict | None = None,
                     started: float | None = None) -> None:
        self._emit(AgentTranscript(text, turn_id))  # the whole plan; the session cuts it to what was heard
        chunks = synthesize_stream(self.synthesizer, text)
        first = True
        while True:
            # Each sentence is synthesised in a worker thread while the last one plays.
            pcm = await run_speech(next, chunks, None)
            if pcm is None:
                break
            if first and timing is not None and started is not None:
                self._emit(TurnTiming(tts_first_ms=(time.monotonic() - started) * 1000, **timing))
            first = False
            self._emit(AgentAudio(pcm, turn_id))
        self._emit(TurnEnded(turn_id))


class _ToolResultText:
    """A tool's result as the session reported it, in the shape ``run_turn`` reads."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        self.ok = not (isinstance(value, dict) and "error" in value)

    def to_model_text(self) -> str:
        return self.text


class _ToolsThroughSession:
    """Lets the chat model's tool calls run in the agent session, like any provider's."""

    def __init__(self, backend: LocalBackend, turn_id: str) -> None:
        self.backend = backend
        self.turn_id = turn_id
        self._calls = itertools.count(1)

    def schemas(self) -> list[dict[str, Any]]:
        return self.backend._tool_schemas

    async def invoke(self, name: str, arguments: Any, context: Any) -> _ToolResultText:
        call_id = f"{self.turn_id}-call{next(self._calls)}"
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.backend._tool_results[call_id] = future
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        self.backend._emit(ToolCall(call_id, name, text))
        try:
            return _ToolResultText(await asyncio.wait_for(future, TOOL_RESULT_TIMEOUT_S))
        except TimeoutError:
            return _ToolResultText(json.dumps({"error": "the tool did not answer in time"}))


def _synthesize_all(synthesizer: Synthesizer, text: str) -> list[np.ndarray]:
    """Every chunk of ``text``'s audio (run in the speech pool: it is the slow part)."""
    return list(synthesize_stream(synthesizer, text))
