"""A short fuzz run of every target in the suite: the seeds, then libFuzzer's mutations of them.

``bench/fuzz.py`` runs each target for 10^6 inputs; here each gets a few
thousand, with a fixed seed so a failure reproduces. A crash is any exception
outside the module's documented error type, a broken round trip, or an input
slower than the target's limit (see tests/fuzz/targets.py). To reproduce one:
``.venv/bin/python bench/fuzz.py --target NAME --runs N --seed 1 --work DIR``
and read DIR/NAME/crashes/*.txt.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
SMOKE_RUNS = 2000


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seed_corpus_passes_the_contract(name: str) -> None:
    target = TARGETS[name]
    seeds = sorted(target.corpus.iterdir())
    assert 2 <= len(seeds) <= 20, "a handful of seeds per target (tests/fuzz/make_corpus.py)"
    check = target.build()
    for seed in seeds:
        data = seed.read_bytes()
        assert len(data) <= target.max_len, f"{seed.name} is longer than -max_len: libFuzzer would cut it"
        check(data)


def test_fuzz_smoke(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "bench/fuzz.py", "--runs", str(SMOKE_RUNS), "--seed", "1", "--json", "--work", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )
    results = {r["target"]: r for r in json.loads(proc.stdout)}
    assert set(results) == set(TARGETS), proc.stderr[-2000:]
    for name, result in results.items():
        details = "\n".join(p.read_text()[:1500] for p in (tmp_path / name / "crashes").glob("*.txt"))
        assert not result["crashes"], f"{name}: {result['crashes']}\n{details}"
        assert result["inputs"] >= SMOKE_RUNS, f"{name} ran {result['inputs']} inputs; log: {result['log']}"
    assert proc.returncode == 0, proc.stderr[-2000:]
