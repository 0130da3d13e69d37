"""Call setup rate of one callbridge process, measured from outside by SIPp.

For each rate SIPp's built-in ``uac`` places calls (INVITE/200/ACK, then BYE
after --hold ms) for --seconds. We report failed calls and the INVITE→200
time percentiles from SIPp's own response-time trace, and stop at the
first rate that fails a call.

    .venv/bin/python bench/sip_cps.py            # default rates
    .venv/bin/python bench/sip_cps.py --rates 50 100 200 --seconds 10
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import cpu_seconds, free_port, start_server, stop_process


def run_rate(sip_port: int, rate: int, seconds: int, hold_ms: int, workdir: Path, pid: int) -> dict:
    total = rate * seconds
    for old in workdir.glob("*.csv"):
        old.unlink()
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    completed = subprocess.run(
        ["sipp", "-sn", "uac", f"127.0.0.1:{sip_port}", "-i", "127.0.0.1", "-p", str(free_port()), "-r", str(rate),
         "-m", str(total), "-l", str(rate * 4), "-d", str(hold_ms), "-nostdin", "-trace_rtt", "-rtt_freq", "1",
         "-trace_stat", "-fd", "1", "-timeout", str(seconds * 4 + 30), "-timeout_error"],
        cwd=workdir, capture_output=True, text=True, timeout=seconds * 4 + 60)
    cpu = cpu_seconds(pid) - cpu_before
    wall = time.monotonic() - wall_before
    rtts: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        with path.open() as handle:
            for row in csv.reader(handle, delimiter=";"):
                if len(row) >= 3 and row[-2].replace(".", "", 1).isdigit():
                    rtts.append(float(row[-2]))
    failed = total
    for path in workdir.glob("*_.csv"):
        rows = list(csv.reader(path.open(), delimiter=";"))
        header, last = rows[0], rows[-1]
        failed = int(last[header.index("FailedCall(C)")])
    values = np.array(rtts) if rtts else np.array([float("nan")])
    return {"rate": rate, "calls": total, "failed": failed if completed.returncode in (0, 1) else max(failed, 1),
            "p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "cpu_pct": 100 * cpu / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=int, nargs="+", default=[25, 50, 100, 150, 200, 300])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--hold", type=int, default=1000, help="ms each call stays up before BYE")
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        sys.exit("sipp is not installed (apt-get install sip-tester)")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "pcap").symlink_to("/usr/share/sip-tester")
        config = workdir / "callbridge.yaml"
        # The test-tone line (call setup cost only); every call comes from SIPp's one address, so no
        # per-source limit on new calls (server.new_requests_per_source, sip/ratelimit.py).
        config.write_text("routing:\n  default_flow: tone\nserver:\n  new_requests_per_source: 0\n")
        process, sip_port, _ = start_server(workdir, config=config, timeout=90.0)
        try:
            print(f"{'cps':>5} {'calls':>6} {'failed':>6} {'p50 ms':>7} {'p99 ms':>7} {'server CPU %':>12}")
            best = None
            for rate in args.rates:
                row = run_rate(sip_port, rate, args.seconds, args.hold, workdir, process.pid)
                print(f"{row['rate']:>5} {row['calls']:>6} {row['failed']:>6} {row['p50_ms']:>7.1f} "
                      f"{row['p99_ms']:>7.1f} {row['cpu_pct']:>12.1f}", flush=True)
                if row["failed"]:
                    break
                best = row
            if best:
                print(f"\nhighest rate with 0 failed calls: {best['rate']} cps, p99 INVITE→200 {best['p99_ms']:.1f} ms")
        finally:
            stop_process(process)


if __name__ == "__main__":
    main()
