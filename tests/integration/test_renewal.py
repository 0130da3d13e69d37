"""Seamless renewal, recovery and fallback, with the real provider clients against the stand-ins.

An AgentSession runs a scripted multi-turn call through the real Nova Sonic
adapter (the AWS SDK over TLS/HTTP/2 to the Bedrock stand-in) or the OpenAI
Realtime adapter (WebSocket to its stand-in), with the stand-ins' session
limit cut to a few seconds. The caller side runs at the provider's own input
rate (16 kHz for Nova, 8 kHz µ-law for OpenAI) so the audio the stand-ins
received can be compared with what the caller said, byte for byte.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callbridge.agent.demo_orders import ORDERS_DB_KEY, OrdersDb, lookup_order
from callbridge.agent.providers.nova_sonic import NovaSonicBackend, NovaSonicConfig
from callbridge.agent.providers.openai_realtime import OpenAIRealtimeBackend, OpenAIRealtimeConfig
from callbridge.agent.realtime import RealtimeBackend, SessionSetup
from callbridge.agent.session import AgentSession, SessionFailed, SessionPolicy
from callbridge.agent.tools import ToolContext, ToolRegistry
from callbridge.media.codecs.g711 import ulaw_encode
from callbridge.standins.bedrock import BedrockStandin
from callbridge.standins.bedrock_script import (DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, BedrockScript, CallTool, Fail,
                                                Say)
from callbridge.standins.certs import StandinCertificates
from callbridge.standins.openai_realtime import OpenAIRealtimeScript, OpenAIRealtimeStandin
from callbridge.standins.openai_script import FunctionCall, Reply, ScriptedError, Turn
from tests.support.agent_call import CallSide, PacedStream, talk, tone
from tests.support.standin_thread import StandinThread

KEY = "sk-test-renewal"
SESSION_LIMIT_S = 4.0
NAME_LINE = "My name is Ana Lopez."
POLICY = SessionPolicy(retry_delays_s=(0.0, 0.2, 0.4), open_timeout_s=5.0, filler_after_s=1.0)


@dataclass
class Step:
    """One caller turn of the script, in provider-neutral words."""

    user: str
    reply: str | None = None  # None with ``fail``: the model fails mid-turn
    tool: tuple[str, dict[str, Any]] | None = None  # the model calls this first, then says ``reply``
    fail: bool = False


@dataclass
class Provider:
    name: str
    rate: int  # the caller side's rate: the provider's own, so nothing is resampled
    open: Callable[[], RealtimeBackend]
    received_audio: Callable[[], bytes]  # every session's caller audio, in order, in the wire format
    received_per_session: Callable[[], list[bytes]]  # the same, one entry per provider session
    history_of: Callable[[int], str]  # the priming history session N received, as text
    tool_outputs: Callable[[], list[str]]
    wire: Callable[[np.ndarray], bytes]  # caller PCM as the provider's wire carries it
    sessions: Callable[[], int]


@asynccontextmanager
async def nova(certs: StandinCertificates, steps: list[Step], *, secret: str = DEFAULT_SECRET_KEY,
               down: bool = False, server_ends_after_s: float | None = None,
               server_exception: str = "modelTimeoutException") -> AsyncIterator[Provider]:
    turns: list[Any] = []
    for step in steps:
        if step.fail:
            turns.append(Fail("internalServerException", "the model failed", user_text=step.user,
                              speculative="Let me see"))
        elif step.tool:
            turns.append(CallTool(step.tool[0], step.tool[1], then=Say(step.reply or "", audio_ms=300),
                                  user_text=step.user))
        else:
            turns.append(Say(step.reply or "", audio_ms=300, user_text=step.user))
    script = BedrockScript(turns=turns, fallback=Say("Okay.", audio_ms=200, user_text="(caller speech)"),
                           end_of_turn_ms=300, session_limit_s=server_ends_after_s or SESSION_LIMIT_S,
                           session_limit_exception=server_exception, shared_turns=True)
    server = BedrockStandin(script, certs)
    # A server that ends sessions on its own clock runs on its own loop, as Bedrock does.
    runner = StandinThread(server.start, server.stop) if server_ends_after_s else server
    await runner.start()
    endpoint = server.endpoint_uri
    if down:
        await runner.stop()

    def open_backend() -> RealtimeBackend:
        return NovaSonicBackend(NovaSonicConfig(
            endpoint_uri=endpoint, region="us-east-1", aws_access_key_id=DEFAULT_ACCESS_KEY,
            aws_secret_access_key=secret, max_attempts=1,
            # server-ended sessions: we must not renew first
            max_session_s=None if server_ends_after_s else SESSION_LIMIT_S))

    try:
        yield Provider(
            "nova_sonic", 16000, open_backend,
            received_audio=lambda: b"".join(bytes(s.audio) for s in server.sessions),
            received_per_session=lambda: [bytes(s.audio) for s in server.sessions],
            history_of=lambda n: json.dumps(server.sessions[n].history),
            tool_outputs=lambda: [content for s in server.sessions for _id, content in s.tool_results],
            wire=lambda pcm: pcm.astype("<i2").tobytes(),
            sessions=lambda: len(server.sessions))
    finally:
        if not down:
            await runner.stop()


@asynccontextmanager
async def openai(certs: StandinCertificates, steps: list[Step], *, secret: str = KEY,
                 down: bool = False, server_ends_after_s: float | None = None,
                 server_exception: str = "") -> AsyncIterator[Provider]:
    script = OpenAIRealtimeScript(session_limit_s=server_ends_after_s or SESSION_LIMIT_S)
    for step in steps:
        if step.fail:
            script.add(Turn(step.user, ScriptedError("server_error", "the model failed", partial_audio_ms=100)))
        elif step.tool:
            script.add(Turn(step.user, FunctionCall(step.tool[0], json.dumps(step.tool[1]),
                                                    Reply(step.reply or "", 300))))
        else:
            script.reply(step.reply or "", audio_ms=300, transcript=step.user)
    server = OpenAIRealtimeStandin(script, key=KEY)
    runner = StandinThread(server.start, server.close) if server_ends_after_s else None
    await (runner.start() if runner else server.start())
    url = server.url
    if down:
        await server.close()

    def open_backend() -> RealtimeBackend:
        return OpenAIRealtimeBackend(OpenAIRealtimeConfig(
            api_key=secret, url=url, audio_format="g711_ulaw", silence_duration_ms=300, prefix_padding_ms=100,
            max_session_s=None if server_ends_after_s else SESSION_LIMIT_S))

    try:
        yield Provider(
            "openai_realtime", 8000, open_backend,
            received_audio=lambda: b"".join(bytes(s.input_audio) for s in server.sessions),
            received_per_session=lambda: [bytes(s.input_audio) for s in server.sessions],
            history_of=lambda n: json.dumps(server.sessions[n].history),
            tool_outputs=lambda: [o.get("output", "") for s in server.sessions for o in s.function_outputs],
            wire=lambda pcm: bytes(ulaw_encode(pcm)),
            sessions=lambda: len(server.sessions))
    finally:
        if not down:
            await (runner.stop() if runner else server.close())


PROVIDERS = {"nova_sonic": nova, "openai_realtime": openai}


@asynccontextmanager
async def agent_call(provider: Provider, tmp_path: Path) -> AsyncIterator[tuple[CallSide, AgentSession, asyncio.Task]]:
    stream = PacedStream(provider.rate)
    stream.start()
    side = CallSide(stream)
    context = ToolContext(call_id="c1", extras={ORDERS_DB_KEY: OrdersDb(tmp_path / "orders.sqlite")})
    session = AgentSession(side, provider.open, ToolRegistry([lookup_order]), context, policy=POLICY,
                           say=side.say_line)
    setup = SessionSetup(instructions="You are the order desk.", language="en-US", voice=None,
                         tools=session.tools.schemas(), greeting=None)
    task = asyncio.get_running_loop().create_task(session.run(setup))
    await asyncio.sleep(0)  # listening before the caller's first frame
    try:
        yield side, session, task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await stream.stop()


async def say_turns(side: CallSide, count: int, rate: int) -> np.ndarray:
    """The caller's side of the conversation: an utterance and a pause, ``count`` times; returns it all."""
    spoken = []
    for _ in range(count):
        for part in (tone(0.5, rate), np.zeros(int(1.1 * rate), np.int16)):
            await talk(side.stream, part)
            spoken.append(part)
    return np.concatenate(spoken)


def first_difference(got: bytes, want: bytes, renewals: list) -> str:
    at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
    return f"received {len(got)} bytes, sent {len(want)}, first difference at byte {at}; {renewals}"


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_three_renewals_lose_no_caller_frame_and_keep_the_callers_name(kind, certs, tmp_path):
    steps = [Step(NAME_LINE, "Nice to meet you, Ana."), *[Step(f"Question {n}.", f"Answer {n}.") for n in range(8)]]
    async with PROVIDERS[kind](certs, steps) as provider:
        async with agent_call(provider, tmp_path) as (side, session, task):
            spoken = await say_turns(side, 9, provider.rate)
            await asyncio.sleep(0.3)
        # the call is over and every session closed (a closing session sends its last partial chunk)
        renewals = [e for e in side.entries() if e["role"] == "renewal"]
        assert len(renewals) >= 3, side.entries()
        # every frame the caller sent reached exactly one provider session, in order
        got, want = provider.received_audio(), provider.wire(spoken)
        assert got == want, first_difference(got, want, renewals)
        assert "Ana" in provider.history_of(2), provider.history_of(2)  # session 3 knows session 1's fact
        agent_lines = [e["text"] for e in side.entries() if e["role"] == "agent"]
        assert "Nice to meet you, Ana." in agent_lines and len(agent_lines) >= 6
        assert all(r["handover_ms"] < 100 for r in renewals if r["reason"] == "scheduled"), renewals


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_a_failure_mid_turn_is_recovered_and_the_conversation_goes_on(kind, certs, tmp_path):
    steps = [Step("Hello.", "Hi there."), Step("What are your hours?", fail=True),
             Step("(asked again)", "We are open nine to five."), Step("Thanks.", "You're welcome.")]
    async with PROVIDERS[kind](certs, steps) as provider, agent_call(provider, tmp_path) as (side, session, task):
        spoken = await say_turns(side, 3, provider.rate)
        await asyncio.sleep(0.3)
        reasons = [e["reason"] for e in side.entries() if e["role"] == "renewal"]
        assert "recovered" in reasons, side.entries()
        agent_lines = [e["text"] for e in side.entries() if e["role"] == "agent"]
        assert "We are open nine to five." in agent_lines  # the failed question got its answer
        assert "You're welcome." in agent_lines, json.dumps(side.entries(), indent=0)  # and the conversation went on
        assert not task.done()
        assert len(provider.received_audio()) >= len(provider.wire(spoken)) * 0.9


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_tool_use_runs_the_tool_and_speaks_the_answer(kind, certs, tmp_path):
    steps = [Step("Where is order 4572?", "Order 4572 has shipped and arrives Thursday.",
                  tool=("lookup_order", {"order_id": "4572"}))]
    async with PROVIDERS[kind](certs, steps) as provider, agent_call(provider, tmp_path) as (side, session, task):
        await say_turns(side, 1, provider.rate)
        await wait_for(lambda: any(e["role"] == "agent" for e in side.entries()))
        [tool] = [e for e in side.entries() if e["role"] == "tool"]
        assert tool["name"] == "lookup_order" and tool["ok"] and tool["result"]["status"] == "shipped"
        [output] = provider.tool_outputs()
        assert json.loads(output)["status"] == "shipped"  # the real database's row went back to the model
        assert [e["text"] for e in side.entries() if e["role"] == "agent"] == [
            "Order 4572 has shipped and arrives Thursday."]
        assert side.stream.agent_audio_s() > 0.2  # and it was spoken on the call


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_a_provider_down_for_good_gets_the_apology_and_the_fallback(kind, certs, tmp_path):
    async with PROVIDERS[kind](certs, [], down=True) as provider, \
            agent_call(provider, tmp_path) as (side, session, task):
        with pytest.raises(SessionFailed):
            await asyncio.wait_for(asyncio.shield(task), 15)
        assert side.said[-1] == POLICY.apology_text
        assert any(e["role"] == "fallback" for e in side.entries())


@pytest.mark.parametrize("kind", PROVIDERS)
async def test_a_wrong_secret_is_refused_and_falls_back_without_retrying(kind, certs, tmp_path):
    async with PROVIDERS[kind](certs, [], secret="wrong-secret-0123456789") as provider, \
            agent_call(provider, tmp_path) as (side, session, task):
        with pytest.raises(SessionFailed):
            await asyncio.wait_for(asyncio.shield(task), 15)
        assert side.said == [POLICY.apology_text]
        [error] = [e for e in side.entries() if e["role"] == "error"]
        assert error["code"] == "auth"
        assert provider.sessions() <= 1  # refused once; the same credentials are not tried again


def boundary_gaps(sessions: list[bytes], sent: bytes) -> tuple[list[int], int]:
    """Where each session's received audio sits in what the caller sent.

    Returns, per boundary between sessions, the bytes of caller audio no session received
    (negative: received twice), and the bytes of the call's tail no session received.
    Each session's audio must be one exact, contiguous piece of the caller's."""
    cursor, gaps = 0, []
    for index, got in enumerate(s for s in sessions if s):
        probe = got[:800]  # the caller's dither makes any 800 bytes unique in the call
        at = sent.find(probe, max(0, cursor - 16000))
        assert at >= 0, f"session {index}'s audio is not a piece of what the caller sent"
        assert got == sent[at:at + len(got)], f"session {index}'s audio differs from the caller's"
        if index == 0:
            assert at == 0, f"the first session missed the call's first {at} bytes"
        else:
            gaps.append(at - cursor)
        cursor = at + len(got)
    return gaps, len(sent) - cursor


@pytest.mark.parametrize(("kind", "exception"), [("nova_sonic", "modelTimeoutException"),
                                                 ("nova_sonic", "internalServerException"),
                                                 ("openai_realtime", "")])
async def test_sessions_the_server_ends_lose_no_caller_audio(kind, exception, certs, tmp_path):
    """The provider ends each session on its own clock (Bedrock's 8-minute limit, cut to
    1.5 s; or an error): every caller sample reaches exactly one session, checked on the
    bytes each stand-in session received, within one 20 ms frame per boundary."""
    steps = [Step(f"Question {n}.", f"Answer {n}.") for n in range(8)]
    async with PROVIDERS[kind](certs, steps, server_ends_after_s=1.5, server_exception=exception) as provider:
        rate = provider.rate
        rng = np.random.default_rng(7)
        async with agent_call(provider, tmp_path) as (side, session, task):
            spoken = []
            for _ in range(4):  # speech and pauses, with a quiet dither so every stretch is unique
                for part in (tone(0.5, rate), np.zeros(int(1.1 * rate), np.int16)):
                    part = (part + rng.integers(-40, 41, len(part))).astype(np.int16)
                    await talk(side.stream, part)
                    spoken.append(part)
            await asyncio.sleep(0.3)
        sent = provider.wire(np.concatenate(spoken))
        sessions = provider.received_per_session()
        gaps, tail = boundary_gaps(sessions, sent)
        frame = len(provider.wire(np.zeros(rate // 50, np.int16)))  # one 20 ms frame on the wire
        ended = [e for e in side.entries() if e["role"] == "renewal"]
        assert len(gaps) >= 3 and len(ended) >= 3, (gaps, side.entries())
        assert all(r["reason"] in ("expired", "recovered") for r in ended), ended
        lost_ms = [round(gap * 20 / frame) for gap in gaps]
        assert all(abs(gap) <= frame for gap in gaps), \
            f"caller audio lost (+) or doubled (-) per boundary: {lost_ms} ms"
        assert tail == 0, f"the last session missed the call's last {tail * 20 / frame:.0f} ms"
