"""Blocking work off the event loop, in one bounded thread pool per kind of work.

``asyncio.to_thread`` puts everything in the loop's one default executor, so a
burst of transcriptions and syntheses (hundreds of milliseconds each) queues a
database read or a prompt load behind them. Each workload gets its own small
pool instead: a queue of speech jobs can make other speech jobs wait, never a
store read or a file load.

A leaf utility beside the layers (like ``yamlsource``): any layer may use it.
Pools are made on first use and made again after :func:`shutdown`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, ParamSpec, TypeVar

Workload = Literal["speech", "store", "files"]

# STT, TTS, the agent's brain and their model loads: the threads speech had in the
# shared default executor (min(32, cpus + 4)). Fewer would queue synthesis behind
# transcriptions that wait on the transcriber's lock (one whisper decode at a time).
SPEECH_WORKERS = min(32, (os.cpu_count() or 1) + 4)
# Database reads (writes have AsyncCallStore's own writer thread). 4 readers and
# the writer fit SQLAlchemy's default pool of 5 connections, so none waits for one.
STORE_WORKERS = 4
# Recording clean-up, WAV reads, prompt loads: disk-bound, one disk.
FILES_WORKERS = 2

WORKERS: dict[Workload, int] = {"speech": SPEECH_WORKERS, "store": STORE_WORKERS, "files": FILES_WORKERS}

P = ParamSpec("P")
T = TypeVar("T")

_pools: dict[Workload, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def executor(kind: Workload) -> ThreadPoolExecutor:
    """The pool for ``kind``, made on first use."""
    with _pools_lock:
        pool = _pools.get(kind)
        if pool is None:
            pool = _pools[kind] = ThreadPoolExecutor(WORKERS[kind], thread_name_prefix=f"offload-{kind}")
        return pool


async def offload(kind: Workload, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in ``kind``'s pool; like asyncio.to_thread, context variables go along."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(executor(kind), call)


async def run_speech(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """STT, TTS, intent matching, loading their models."""
    return await offload("speech", fn, *args, **kwargs)


async def run_store(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Database work: reads, opening and migrating the store."""
    return await offload("store", fn, *args, **kwargs)


async def run_files(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """File work: WAV and prompt reads, recordings clean-up and closing."""
    return await offload("files", fn, *args, **kwargs)


def shutdown(*, wait: bool = False) -> None:
    """Retire every pool: jobs already queued still run, new ones go to fresh pools.

    ``wait=False`` (for the server's stop, on the loop) returns at once; the
    interpreter still waits for the retired pools' threads at exit.
    """
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.shutdown(wait=wait)
