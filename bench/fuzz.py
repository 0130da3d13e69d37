"""Coverage-guided fuzzing of the parsers and decoders (atheris + libFuzzer).

    nice -n 19 .venv/bin/python bench/fuzz.py                      # every target, 10^6 inputs each
    .venv/bin/python bench/fuzz.py --target sdp --runs 100000      # one target
    .venv/bin/python bench/fuzz.py --max-time 300 --work /tmp/fz   # cap each target at 5 min, keep the work dir

Each target (tests/fuzz/targets.py) runs in its own process under libFuzzer,
seeded from tests/fuzz/corpus/<target>/; new inputs libFuzzer keeps go to the
work directory, never into the committed corpus. Prints one row per target:
inputs run, execs/s, coverage edges and features (libFuzzer's cov/ft), corpus
size, and crashes (distinct signatures, plus any libFuzzer hang/OOM artifact).
A crash's input and traceback are under <work>/<target>/crashes/. Exits 1 if
anything crashed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz.targets import TARGETS  # noqa: E402  (needs ROOT on sys.path)

DEFAULT_RUNS = 1_000_000
HANG_SECONDS = 10  # libFuzzer -timeout: one input running this long is a hang
RSS_LIMIT_MB = 2048
ARTIFACT_PREFIXES = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")

_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_UNITS = re.compile(r"stat::number_of_executed_units: (\d+)")
_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/", re.M)
_START = re.compile(r"^FUZZ-START ([0-9.]+)$", re.M)


@dataclass
class Result:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    edges: int | None = None
    features: int | None = None
    corpus: int | None = None
    crashes: list[str] = field(default_factory=list)  # signatures / artifact names
    exit_code: int = 0
    log: str = ""

    @property
    def execs_per_second(self) -> float:
        return self.inputs / self.seconds if self.seconds > 0 else 0.0


def run_target(name: str, runs: int, work: Path, *, seed: int | None = None,
               max_time: float | None = None) -> Result:
    target = TARGETS[name]
    base = work / name
    corpus, crash_dir = base / "corpus", base / "crashes"
    corpus.mkdir(parents=True, exist_ok=True)
    crash_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "tests.fuzz.atheris_main", name, str(crash_dir),
            f"-runs={runs}", f"-max_len={target.max_len}", f"-timeout={HANG_SECONDS}",
            f"-rss_limit_mb={RSS_LIMIT_MB}", "-print_final_stats=1", f"-artifact_prefix={base}/"]
    if target.dictionary_path is not None:
        args.append(f"-dict={target.dictionary_path}")
    if seed is not None:
        args.append(f"-seed={seed}")
    if max_time is not None:
        args.append(f"-max_total_time={int(max_time)}")
    # New units go to the first directory only: the committed seeds stay as they are.
    args += [str(corpus), str(target.corpus)]
    log_path = base / "fuzz.log"
    with log_path.open("w") as log:
        proc = subprocess.run(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    ended = time.monotonic()
    text = log_path.read_text(errors="replace")
    result = Result(name, exit_code=proc.returncode, log=str(log_path))
    statuses = _STATUS.findall(text)
    if statuses:
        last = statuses[-1]
        result.inputs, result.edges, result.features, result.corpus = (int(v) for v in last)
    if (units := _UNITS.search(text)) is not None:
        result.inputs = int(units.group(1))
    if (start := _START.search(text)) is not None:
        result.seconds = ended - float(start.group(1))
    elif (done := _DONE.search(text)) is not None:
        result.seconds = float(done.group(2))
    result.crashes = [p.read_text().splitlines()[0] for p in sorted(crash_dir.glob("*.txt"))]
    result.crashes += [p.name for p in sorted(base.iterdir()) if p.name.startswith(ARTIFACT_PREFIXES)]
    if proc.returncode != 0 and not result.crashes:
        result.crashes.append(f"fuzzer exited {proc.returncode} (see {log_path})")
    return result


def table(results: list[Result]) -> str:
    head = "| target | inputs | execs/s | edges | features | corpus | crashes |"
    rows = [head, "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        crashes = str(len(r.crashes)) + (f" ({'; '.join(r.crashes)})" if r.crashes else "")
        rows.append(f"| {r.target} | {r.inputs:,} | {r.execs_per_second:,.0f} "
                    f"| {r.edges if r.edges is not None else '-'}"
                    f" | {r.features if r.features is not None else '-'} | {r.corpus if r.corpus is not None else '-'}"
                    f" | {crashes} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", choices=sorted(TARGETS),
                        help="fuzz only this target (repeatable); default: all")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="inputs per target (libFuzzer -runs)")
    parser.add_argument("--max-time", type=float, help="stop a target after this many seconds")
    parser.add_argument("--seed", type=int, help="libFuzzer -seed, for a reproducible run")
    parser.add_argument("--work", type=Path, help="keep corpora, crashes and logs here (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="callbridge-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.target or list(TARGETS):
        result = run_target(name, args.runs, work, seed=args.seed, max_time=args.max_time)
        results.append(result)
        if not args.json:
            print(f"{name}: {result.inputs:,} inputs, {result.execs_per_second:,.0f}/s, "
                  f"{len(result.crashes)} crashes", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps([asdict(r) | {"execs_per_second": r.execs_per_second} for r in results], indent=1))
    else:
        print(table(results))
        print(f"\nwork dir: {work}  (python {sys.version.split()[0]}, pid {os.getpid()})")
    return 1 if any(r.crashes for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
