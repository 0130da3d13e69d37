"""Cloud speech-to-speech calls: what a session handover costs, and CPU per call.

    .venv/bin/python bench/cloud_agent.py                      # both providers
    .venv/bin/python bench/cloud_agent.py --provider nova_sonic --pattern chatty --calls 4

The provider is the local stand-in (Bedrock over TLS/HTTP/2 through the real
AWS SDK, or OpenAI Realtime over a WebSocket), run in a **separate process**
so its CPU is not counted. The caller side is an in-process 20 ms call clock
(the real playback queue), at the call's 8 kHz, so the session resamples as
on a G.711 call.

1. **Handover delay.** One call with the stand-in's session limit cut to a few
   seconds, so the agent session renews every few turns. For every caller
   turn: end of the caller's speech → first agent audio played. The extra
   delay of a handover is the latency of the first turn after each renewal
   minus the median of the other turns.
2. **CPU per call.** N concurrent calls talking for ``--cpu-seconds`` without
   renewal, ``--repeat`` times (medians); this process's CPU time (the session, resampling, the adapter and
   the SDK, all threads) per call, as a percentage of one core, after a
   warm-up call (imports). The same calls against a back end that says nothing
   give the cost of the in-process call clock and caller; the difference is
   what the cloud provider path costs (the RTP side is measured by
   rtp_echo.py). Two talking patterns: ``chatty`` (0.5 s of caller speech
   every 1.7 s, 0.6 s answers: the worst case) and ``conversation`` (1.5 s
   questions, 3 s answers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callbridge.agent.realtime import HistoryLimits, SessionSetup  # noqa: E402
from callbridge.agent.session import AgentSession  # noqa: E402
from callbridge.agent.tools import ToolContext, ToolRegistry  # noqa: E402
from tests.support.agent_call import CallSide, PacedStream, talk, tone  # noqa: E402

CALL_RATE = 8000

@dataclass(frozen=True)
class Pattern:
    """How a test call talks: the caller speaks, then is quiet while the agent answers."""

    speak_s: float
    pause_s: float
    reply_ms: int


PATTERNS = {
    # The worst case for CPU: the caller talks a third of the time and the agent barely answers,
    # so small events go out most of the call. Also the handover measurement's pattern.
    "chatty": Pattern(speak_s=0.5, pause_s=1.2, reply_ms=600),
    # A question and a spoken answer, the shape of a real support call.
    "conversation": Pattern(speak_s=1.5, pause_s=4.5, reply_ms=3000),
}
KEY = "bench-key"

STANDIN = r'''
import asyncio, sys
from pathlib import Path
kind, limit, certs, reply_ms = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
limit = limit or None
async def main():
    if kind == "nova_sonic":
        from callbridge.standins.bedrock import BedrockStandin
        from callbridge.standins.bedrock_script import BedrockScript, Say
        from callbridge.standins.certs import make_certificates
        script = BedrockScript(fallback=Say("Sure, here is the answer.", audio_ms=reply_ms, user_text="a question"),
                               end_of_turn_ms=300, session_limit_s=limit)
        server = BedrockStandin(script, make_certificates(certs))
        await server.start()
        print(server.endpoint_uri, flush=True)
    else:
        from callbridge.standins.openai_realtime import OpenAIRealtimeScript, OpenAIRealtimeStandin
        script = OpenAIRealtimeScript(session_limit_s=limit)
        for _ in range(100000):
            script.reply("Sure, here is the answer.", audio_ms=reply_ms, transcript="a question")
        server = OpenAIRealtimeStandin(script, key="bench-key")
        await server.__aenter__()
        print(server.url, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
'''


class TimedStream(PacedStream):
    """Notes when each non-silent agent frame went out."""

    def __init__(self, rate: int) -> None:
        super().__init__(rate)
        self.loud_at: list[float] = []

    async def _tick(self) -> None:  # same clock as PacedStream, with timestamps
        samples = int(self.sample_rate * 0.02)
        while True:
            pcm = self.playback.read(samples)
            if pcm is not None and np.abs(pcm).max(initial=0) > 200:
                self.loud_at.append(time.monotonic())
            await asyncio.sleep(0.02)


def start_standin(kind: str, limit: float, certs: Path, reply_ms: int) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-c", STANDIN, kind, str(limit), str(certs), str(reply_ms)],
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def opener(kind: str, endpoint: str, limit: float):
    if kind == "nova_sonic":
        from callbridge.agent.providers.nova_sonic import NovaSonicBackend, NovaSonicConfig
        from callbridge.standins.bedrock_script import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY
        config = NovaSonicConfig(endpoint_uri=endpoint, region="us-east-1", aws_access_key_id=DEFAULT_ACCESS_KEY,
                                 aws_secret_access_key=DEFAULT_SECRET_KEY, max_attempts=1,
                                 max_session_s=limit or 480.0)
        return lambda: NovaSonicBackend(config)
    from callbridge.agent.providers.openai_realtime import OpenAIRealtimeBackend, OpenAIRealtimeConfig
    config = OpenAIRealtimeConfig(api_key=KEY, url=endpoint, silence_duration_ms=300, prefix_padding_ms=100,
                                  max_session_s=limit or 3600.0)
    return lambda: OpenAIRealtimeBackend(config)


async def one_call(open_backend, turns: int, pattern: Pattern = PATTERNS["chatty"],
                   ) -> tuple[list[float], list[float], list[dict]]:
    """Returns each turn's end-of-speech time, each turn's response latency, and the renewals."""
    stream = TimedStream(CALL_RATE)
    stream.start()
    side = CallSide(stream)
    session = AgentSession(side, open_backend, ToolRegistry(), ToolContext(call_id="bench"))
    setup = SessionSetup(instructions="Answer briefly.", language="en-US", voice=None, tools=[])
    task = asyncio.get_running_loop().create_task(session.run(setup))
    await asyncio.sleep(1.0)  # the first session opens
    ends, latencies = [], []
    for _ in range(turns):
        await talk(stream, tone(pattern.speak_s, CALL_RATE))
        ended = time.monotonic()
        ends.append(ended)
        await talk(stream, np.zeros(int(pattern.pause_s * CALL_RATE), np.int16))
        first = next((t for t in stream.loud_at if t > ended), None)
        latencies.append((first - ended) * 1000 if first is not None else float("nan"))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await stream.stop()
    renewals = [e for e in side.entries() if e.get("role") == "renewal"]
    return ends, latencies, renewals


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def handover(kind: str, endpoint: str, limit: float, turns: int) -> dict:
    ends, latencies, renewals = await one_call(opener(kind, endpoint, limit), turns)
    wall_now, mono_now = time.time(), time.monotonic()
    renewed_at = [r["at"] - wall_now + mono_now for r in renewals]
    after = set()
    for at in renewed_at:  # the first turn that ended after each renewal
        index = next((i for i, end in enumerate(ends) if end > at), None)
        if index is not None:
            after.add(index)
    others = [v for i, v in enumerate(latencies) if i not in after and v == v]
    baseline = statistics.median(others)
    extra = [latencies[i] - baseline for i in sorted(after) if latencies[i] == latencies[i]]
    return {"turns": turns, "renewals": len(renewals), "baseline_p50": baseline,
            "extra_p50": statistics.median(extra) if extra else float("nan"),
            "extra_p95": percentile(extra, 0.95) if extra else float("nan"),
            "missed": sum(1 for v in latencies if v != v),
            "handover_ms_max": max((r["handover_ms"] for r in renewals), default=0.0)}


class SilentBackend:
    """Takes the caller's audio and says nothing: what the call clock itself costs."""

    input_rate = output_rate = CALL_RATE
    max_session_s = None
    history_limits = HistoryLimits()

    async def start(self, setup: SessionSetup) -> None:
        self._done = asyncio.Event()

    def send_audio(self, pcm: np.ndarray) -> None:
        pass

    def send_dtmf(self, digit: str) -> None:
        pass

    def send_text(self, text: str) -> None:
        pass

    def send_tool_result(self, call_id: str, result: str) -> None:
        pass

    def interrupted(self, turn_id: str, heard_text: str, heard_ms: int) -> None:
        pass

    async def events(self):
        await self._done.wait()
        return
        yield

    async def close(self) -> None:
        self._done.set()


async def cpu_of(open_backend, calls: int, turns: int, pattern: Pattern) -> tuple[float, int]:
    """% of one core per call over ``calls`` concurrent calls, and turns that got no answer."""
    await one_call(open_backend, 2, pattern)  # warm up: imports, first TLS context
    cpu0, wall0 = time.process_time(), time.monotonic()
    results = await asyncio.gather(*(one_call(open_backend, turns, pattern) for _ in range(calls)))
    used, wall = time.process_time() - cpu0, time.monotonic() - wall0
    missed = sum(1 for _ends, latencies, _r in results for v in latencies if v != v)
    return 100 * used / wall / calls, missed


async def cpu(kind: str, endpoint: str, calls: int, seconds: float, pattern_name: str, repeat: int) -> dict:
    """Provider and silent runs alternate, ``repeat`` times each; medians of each.

    This VM's speed drifts by tens of percent within minutes, so a single pair
    of runs can put the difference anywhere; alternating spreads the drift
    over both sides.
    """
    pattern = PATTERNS[pattern_name]
    turns = max(3, round(seconds / (pattern.speak_s + pattern.pause_s)))
    gross, clock, missed = [], [], 0
    for _ in range(repeat):
        used, lost = await cpu_of(opener(kind, endpoint, 0), calls, turns, pattern)
        gross.append(used)
        missed += lost
        clock.append((await cpu_of(SilentBackend, calls, turns, pattern))[0])
    provider = [g - c for g, c in zip(gross, clock, strict=True)]
    return {"provider": kind, "pattern": pattern_name, "calls": calls, "turns": turns, "repeat": repeat,
            "cpu_pct_per_call": statistics.median(gross), "clock_pct_per_call": statistics.median(clock),
            "provider_pct_per_call": statistics.median(provider), "provider_runs": provider, "missed": missed}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--provider", choices=["nova_sonic", "openai_realtime"], action="append")
    parser.add_argument("--turns", type=int, default=40, help="turns of the handover call")
    parser.add_argument("--limit", type=float, default=6.0, help="the stand-in's session limit, seconds")
    parser.add_argument("--calls", type=int, default=4, help="concurrent calls for the CPU figure")
    parser.add_argument("--cpu-seconds", type=float, default=40.0, help="how long each CPU call talks")
    parser.add_argument("--repeat", type=int, default=3, help="CPU runs per provider and pattern (median)")
    parser.add_argument("--pattern", choices=list(PATTERNS), action="append",
                        help="how the CPU calls talk (default: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("AWS_CONFIG_FILE", "/dev/null")
    os.environ.setdefault("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    handovers, cpus = [], []
    chatty = PATTERNS["chatty"]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.provider or ["nova_sonic", "openai_realtime"]:
            certs = Path(tmp) / kind
            renewing, endpoint = start_standin(kind, args.limit, certs, chatty.reply_ms)
            os.environ["SSL_CERT_FILE"] = str(certs / "ca.pem")
            try:
                handovers.append({"provider": kind, **await handover(kind, endpoint, args.limit, args.turns)})
            finally:
                renewing.terminate()
                renewing.wait(10)
            for name in args.pattern or list(PATTERNS):
                steady, steady_endpoint = start_standin(kind, 0, certs, PATTERNS[name].reply_ms)
                try:
                    cpus.append(await cpu(kind, steady_endpoint, args.calls, args.cpu_seconds, name, args.repeat))
                finally:
                    steady.terminate()
                    steady.wait(10)
    if args.json:
        print(json.dumps({"handover": handovers, "cpu": cpus}, indent=2))
        return
    print("| provider | turns | renewals | turn latency p50 ms | handover extra p50 ms | extra p95 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in handovers:
        print(f"| {r['provider']} | {r['turns']} | {r['renewals']} | {r['baseline_p50']:.0f} | "
              f"{r['extra_p50']:.0f} | {r['extra_p95']:.0f} |")
    print()
    print("| provider | pattern | concurrent calls | turns each | CPU % per call: all | call clock | provider path "
          "| provider path, each run |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in cpus:
        runs = ", ".join(f"{v:.2f}" for v in r["provider_runs"])
        print(f"| {r['provider']} | {r['pattern']} | {r['calls']} | {r['turns']} | {r['cpu_pct_per_call']:.2f} | "
              f"{r['clock_pct_per_call']:.2f} | {r['provider_pct_per_call']:.2f} | {runs} |")


if __name__ == "__main__":
    asyncio.run(main())
