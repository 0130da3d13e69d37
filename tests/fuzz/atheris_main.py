"""Run one fuzz target under atheris (libFuzzer, coverage-guided).

    python -m tests.fuzz.atheris_main TARGET CRASH_DIR [libFuzzer flags and corpus dirs...]

``bench/fuzz.py`` starts this once per target. The modules under test are
imported inside ``atheris.instrument_imports`` so their branches feed
libFuzzer's coverage map. A crash (any exception the target's contract does not
allow, or an input slower than ``slow_seconds`` of CPU) is written to CRASH_DIR
once per distinct signature, as ``<signature>.bin`` (the input) and
``<signature>.txt`` (the traceback), and fuzzing goes on, so one run reports
every distinct crash it meets. Hangs and memory blow-ups are libFuzzer's to
catch (``-timeout``, ``-rss_limit_mb``): they stop the run with an artifact.
With ``CALLBRIDGE_FUZZ_STOP=1`` the first crash stops the run instead, and
libFuzzer writes its usual ``crash-*`` artifact too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
import traceback
from pathlib import Path

import atheris

from tests.fuzz.targets import TARGETS


def _signature(exc: BaseException) -> str:
    """Exception type + the innermost frame in callbridge (else the innermost at all)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "callbridge" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__}@{where}"


def main() -> None:
    name, crash_dir, *libfuzzer_args = sys.argv[1:]
    target = TARGETS[name]
    crashes = Path(crash_dir)
    crashes.mkdir(parents=True, exist_ok=True)
    logging.disable(logging.CRITICAL)  # dropped-input warnings would drown libFuzzer's output
    with atheris.instrument_imports(include=list(target.instrument)):
        check = target.build()
    seen: set[str] = {p.stem for p in crashes.glob("*.bin")}
    stop_on_crash = os.environ.get("CALLBRIDGE_FUZZ_STOP") == "1"

    def record(signature: str, data: bytes, report: str) -> None:
        slug = hashlib.sha1(signature.encode()).hexdigest()[:10]
        if slug in seen:
            return
        seen.add(slug)
        (crashes / f"{slug}.bin").write_bytes(data)
        (crashes / f"{slug}.txt").write_text(f"{signature}\ninput: {data[:200]!r}\n\n{report}")
        sys.stderr.write(f"\nCRASH {signature} -> {crashes / slug}.bin\n")

    def timed(data: bytes) -> float | None:
        """CPU seconds ``check`` took, or None when it crashed (recorded)."""
        started = time.process_time()
        try:
            check(data)
        except Exception as exc:  # noqa: BLE001 - the point: anything escaping the contract
            record(_signature(exc), data, "".join(traceback.format_exception(exc)))
            if stop_on_crash:
                raise
            return None
        return time.process_time() - started

    def one_input(data: bytes) -> None:
        spent = timed(data)
        if spent is not None and spent > target.slow_seconds:
            # Once more, so a first call's lazy imports and caches are not blamed on the input.
            spent = timed(data)
            if spent is not None and spent > target.slow_seconds:
                record(f"slow@{name}", data, f"{spent:.2f} s CPU for {len(data)} bytes "
                                             f"(limit {target.slow_seconds} s)\n")

    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input)
    # bench/fuzz.py measures execs/s from here (CLOCK_MONOTONIC is system-wide), not from process start.
    sys.stderr.write(f"FUZZ-START {time.monotonic():.6f}\n")
    sys.stderr.flush()
    atheris.Fuzz()


if __name__ == "__main__":
    main()
