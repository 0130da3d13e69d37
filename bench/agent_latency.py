"""Voice-to-voice latency of the offline agent, measured on real calls.

    .venv/bin/python bench/agent_latency.py                   # 1, 2 and 4 concurrent callers
    .venv/bin/python bench/agent_latency.py --concurrency 1 --calls 6

A ``callbridge serve`` runs the demo line. Simulated callers (``callbridge
test-call``, our own SIP client) arrive with ``X-Lang: en`` and ``X-Reason:
order_status``, so the IVR hands them straight to the agent. Each caller asks
three questions, one after the other ("What is the status of order four five
seven two?" and two more) and waits for the spoken answer.

For every agent turn the server records, from its own clocks:
end of the caller's speech → first agent RTP packet sent ("total"), split
into the endpointer's silence wait (VAD), whisper (STT), the intents brain
plus tools (brain) and piper's first sentence (TTS). The table gives p50/p95
of each over all turns, and the server's CPU per concurrent call.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import api_token, cpu_seconds, get_json, start_server, stop_process

QUESTIONS = [
    ("What is the status of order four five seven two?", "shipped"),
    ("And what about order one two three four?", "processing"),
    ("I have a question about my bill.", "invoices"),
]


def script(sip_port: int) -> str:
    steps = ["  - wait_for_prompt: {timeout: 30}"]
    for question, _ in QUESTIONS:
        steps += [f'  - say: "{question}"', "  - wait_for_prompt: {timeout: 40}"]
    steps.append("  - hangup")
    return (f"target: sip:demo@127.0.0.1:{sip_port}\nfrom: \"+15551230000\"\ntimeout: 150\n"
            "headers: {X-Lang: en, X-Reason: order_status}\nsteps:\n" + "\n".join(steps) + "\n")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_level(workdir: Path, sip_port: int, http_port: int, pid: int, concurrency: int, rounds: int) -> dict:
    path = workdir / "agent.test.yaml"
    path.write_text(script(sip_port))
    calls_url, token = f"http://127.0.0.1:{http_port}/api/calls", api_token(workdir)
    before = {c["id"] for c in get_json(calls_url, token=token)["calls"]}
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    failures = 0
    for _ in range(rounds):
        callers = [subprocess.Popen([sys.executable, "-m", "callbridge.app.cli", "test-call", str(path)],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                   for _ in range(concurrency)]
        for caller in callers:
            caller.communicate(timeout=300)
            failures += caller.returncode != 0
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0) * 100
    time.sleep(1)
    calls = [c for c in get_json(calls_url, token=token)["calls"] if c["id"] not in before]
    turns = [e["latency_ms"] for c in calls for e in c["transcript"] if e["role"] == "agent" and "latency_ms" in e]
    return {"concurrency": concurrency, "calls": len(calls), "failed": failures, "turns": len(turns),
            "cpu_per_call": cpu / concurrency, "turn_data": turns}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--calls", type=int, default=4, help="calls per concurrency level (rounded up to a multiple)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server, sip_port, http_port = start_server(workdir, host="127.0.0.1", timeout=120.0)
        try:
            print(f"{'callers':>7} {'calls':>5} {'turns':>5} {'failed':>6} {'p50 ms':>7} {'p95 ms':>7} "
                  f"{'vad':>5} {'stt':>5} {'brain':>5} {'tts':>5} {'CPU%/call':>9}", flush=True)
            for level in args.concurrency:
                rounds = max(1, -(-args.calls // level))
                row = run_level(workdir, sip_port, http_port, server.pid, level, rounds)
                turns = row["turn_data"]
                if not turns:
                    print(f"{level:>7} {row['calls']:>5} {0:>5} {row['failed']:>6}   (no agent turns measured)")
                    continue
                total = [t["total"] for t in turns]
                parts = {k: statistics.median(t[k] for t in turns) for k in ("vad", "stt", "brain", "tts_first_audio")}
                print(f"{level:>7} {row['calls']:>5} {len(turns):>5} {row['failed']:>6} "
                      f"{percentile(total, 0.5):>7.0f} {percentile(total, 0.95):>7.0f} {parts['vad']:>5.0f} "
                      f"{parts['stt']:>5.0f} {parts['brain']:>5.0f} {parts['tts_first_audio']:>5.0f} "
                      f"{row['cpu_per_call']:>9.1f}", flush=True)
            print("p50/p95: end of caller speech -> first agent RTP packet; the parts are medians (ms).")
        finally:
            stop_process(server)


if __name__ == "__main__":
    main()
