"""The per-workload thread pools: bounded, separate, and context-preserving."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from callbridge import offload
from callbridge.offload import FILES_WORKERS, SPEECH_WORKERS, STORE_WORKERS, run_files, run_speech, run_store

GATE_TIMEOUT_S = 10.0  # a blocked job gives up after this, so a failing test cannot hang the run
STORE_DEADLINE_S = 2.0


@pytest.fixture(autouse=True)
def fresh_pools():
    offload.shutdown()
    yield
    offload.shutdown()


def blocked(gate: threading.Event, running: list[str]) -> str:
    running.append(threading.current_thread().name)
    assert gate.wait(GATE_TIMEOUT_S)
    return "done"


async def test_queued_speech_work_cannot_starve_store_work():
    gate = threading.Event()
    running: list[str] = []
    # Every speech thread busy and as many jobs again queued behind them: a burst of transcriptions.
    speech = [asyncio.ensure_future(run_speech(blocked, gate, running)) for _ in range(2 * SPEECH_WORKERS)]
    try:
        while len(running) < SPEECH_WORKERS:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        assert await asyncio.wait_for(run_store(lambda: "row"), STORE_DEADLINE_S) == "row"
        assert await asyncio.wait_for(run_files(lambda: "file"), STORE_DEADLINE_S) == "file"
        assert time.monotonic() - started < STORE_DEADLINE_S
        # The speech pool is bounded: the extra jobs are still waiting, not on threads of their own.
        assert len(running) == SPEECH_WORKERS and not any(job.done() for job in speech)
    finally:
        gate.set()
    assert await asyncio.gather(*speech) == ["done"] * (2 * SPEECH_WORKERS)
    assert {name.rsplit("_", 1)[0] for name in running} == {"offload-speech"}


async def test_each_pool_has_its_own_named_bounded_threads():
    names: dict[str, set[str]] = {"speech": set(), "store": set(), "files": set()}

    def where(kind: str) -> None:
        time.sleep(0.02)
        names[kind].add(threading.current_thread().name)

    await asyncio.gather(*(run(where, kind) for _ in range(12)
                           for kind, run in (("speech", run_speech), ("store", run_store), ("files", run_files))))
    for kind, limit in (("speech", SPEECH_WORKERS), ("store", STORE_WORKERS), ("files", FILES_WORKERS)):
        assert names[kind] and all(n.startswith(f"offload-{kind}") for n in names[kind])
        assert len(names[kind]) <= limit


async def test_arguments_errors_and_context_variables_go_through():
    request_id = contextvars.ContextVar("request_id", default=None)
    request_id.set("r-1")
    assert await run_store(lambda a, *, b: (a, b, request_id.get()), 1, b=2) == (1, 2, "r-1")
    with pytest.raises(ZeroDivisionError):
        await run_files(lambda: 1 / 0)


async def test_shutdown_lets_queued_jobs_finish_and_later_jobs_get_fresh_pools():
    gate = threading.Event()
    running: list[str] = []
    job = asyncio.ensure_future(run_speech(blocked, gate, running))
    while not running:
        await asyncio.sleep(0.01)
    old = offload.executor("speech")
    offload.shutdown()  # what Server.stop does: returns at once
    gate.set()
    assert await job == "done"
    assert offload.executor("speech") is not old
    assert await run_speech(lambda: 7) == 7
