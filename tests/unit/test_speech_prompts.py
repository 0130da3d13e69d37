"""PromptCache over the real synthesizers, counting how often they are asked."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from callbridge.media.wavfile import read_wav
from callbridge.speech.prompts import PromptCache, PromptSpec
from callbridge.speech.tts import Synthesizer, synthesizer_for

GREETING = PromptSpec("Thank you for calling.")


class CountingSynthesizer:
    """The real synthesizer, with a count of synthesize() calls."""

    def __init__(self, inner: Synthesizer, counter: list[str]) -> None:
        self.name = inner.name
        self.sample_rate = inner.sample_rate
        self._inner = inner
        self._counter = counter

    def synthesize(self, text: str, *, rate: float = 1.0) -> np.ndarray:
        self._counter.append(text)
        return self._inner.synthesize(text, rate=rate)


class FailingSynthesizer(CountingSynthesizer):
    def synthesize(self, text: str, *, rate: float = 1.0) -> np.ndarray:
        raise RuntimeError("engine crashed")


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
def cache(tmp_path: Path, calls: list[str]) -> PromptCache:
    return PromptCache(tmp_path / "prompts",
                       synthesizer_factory=lambda lang, voice: CountingSynthesizer(synthesizer_for(lang, voice), calls))


def test_render_synthesises_once_and_reuses_the_file(cache: PromptCache, calls: list[str]):
    path = cache.render(GREETING)
    assert path == cache.path_for(GREETING)
    assert path.parent == cache.directory and path.suffix == ".wav"
    pcm, rate = read_wav(path)
    assert rate == 22050 and len(pcm) > rate // 2
    mtime = path.stat().st_mtime_ns
    assert cache.render(GREETING) == path
    assert calls == [GREETING.text]
    assert path.stat().st_mtime_ns == mtime


def test_a_new_cache_on_the_same_directory_reuses_files(cache: PromptCache, calls: list[str]):
    cache.render(GREETING)
    again = PromptCache(cache.directory, synthesizer_factory=lambda lang, voice: CountingSynthesizer(
        synthesizer_for(lang, voice), calls))
    again.render(GREETING)
    assert len(calls) == 1


def test_key_follows_text_voice_and_rate(cache: PromptCache):
    base = cache.path_for(GREETING)
    assert cache.path_for(PromptSpec("Thank you for calling.")) == base
    assert cache.path_for(PromptSpec("Thanks for calling.")) != base
    assert cache.path_for(PromptSpec(GREETING.text, rate=1.2)) != base
    # "en" picks joe by default, so naming it is the same prompt
    assert cache.path_for(PromptSpec(GREETING.text, voice="joe")) == base
    if shutil.which("espeak-ng"):
        assert cache.path_for(PromptSpec(GREETING.text, language="en", voice="en-gb")) != base
        assert cache.path_for(PromptSpec(GREETING.text, language="es")) != base
    assert len(base.stem) == 64  # sha256 hex


def test_failed_synthesis_leaves_no_file(tmp_path: Path):
    directory = tmp_path / "prompts"
    cache = PromptCache(directory,
                        synthesizer_factory=lambda lang, voice: FailingSynthesizer(synthesizer_for(lang, voice), []))
    with pytest.raises(RuntimeError, match="engine crashed"):
        cache.render(GREETING)
    assert not directory.exists() or list(directory.iterdir()) == []


def test_failed_write_leaves_no_partial_file(cache: PromptCache, monkeypatch: pytest.MonkeyPatch):
    import callbridge.speech.prompts as prompts

    def crash_mid_write(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(prompts.os, "replace", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        cache.render(GREETING)
    assert list(cache.directory.iterdir()) == []


def test_pcm_at_telephone_rate(cache: PromptCache, calls: list[str]):
    wide, wide_rate = read_wav(cache.render(GREETING))
    narrow = cache.pcm(GREETING, 8000)
    assert narrow.dtype == np.int16
    assert abs(len(narrow) - len(wide) * 8000 / wide_rate) <= 2
    assert not narrow.flags.writeable  # shared between calls
    assert cache.pcm(GREETING, 8000) is narrow  # memoised
    assert len(cache.pcm(GREETING, 16000)) == pytest.approx(2 * len(narrow), abs=2)
    assert len(calls) == 1


def test_memory_is_bounded(tmp_path: Path, calls: list[str]):
    cache = PromptCache(tmp_path, memory_entries=1, synthesizer_factory=lambda lang, voice: CountingSynthesizer(
        synthesizer_for(lang, voice), calls))
    first = cache.pcm(GREETING, 8000)
    cache.pcm(GREETING, 16000)  # evicts the 8 kHz copy
    assert cache.cached_pcm(GREETING, 8000) is None
    again = cache.pcm(GREETING, 8000)  # read back from disk, not re-synthesised
    assert again is not first and np.array_equal(again, first)
    assert len(calls) == 1


async def test_render_all_reports_progress_without_blocking_the_loop(cache: PromptCache, calls: list[str]):
    specs = [PromptSpec("Press one for sales."), PromptSpec("Press two for support."),
             PromptSpec("Press one for sales."), PromptSpec("Goodbye.", rate=1.1)]
    cache.render(specs[0])  # already on disk: still reported, not re-rendered
    reported: list[tuple[int, int, str]] = []
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    await cache.render_all(specs, progress=lambda done, total, spec: reported.append((done, total, spec.text)))
    ticking.cancel()
    assert reported == [(1, 3, "Press one for sales."), (2, 3, "Press two for support."), (3, 3, "Goodbye.")]
    assert all(cache.path_for(spec).exists() for spec in specs)
    assert sorted(calls) == sorted(["Press one for sales.", "Press two for support.", "Goodbye."])
    assert ticks >= 3  # the loop kept running while piper worked


async def test_pcm_async_matches_pcm(cache: PromptCache):
    spec = PromptSpec("One moment please.")
    pcm = await cache.pcm_async(spec, 8000)
    assert pcm is cache.pcm(spec, 8000)
    assert await cache.pcm_async(spec, 8000) is pcm


async def test_a_prompt_on_disk_loads_while_every_speech_thread_is_busy(tmp_path: Path, calls: list[str]):
    import threading

    from callbridge.offload import SPEECH_WORKERS, run_speech

    factory = lambda lang, voice: CountingSynthesizer(synthesizer_for(lang, voice), calls)  # noqa: E731
    PromptCache(tmp_path / "prompts", synthesizer_factory=factory).render(GREETING)
    restarted = PromptCache(tmp_path / "prompts", synthesizer_factory=factory)  # on disk, not in memory
    gate = threading.Event()
    busy = [asyncio.ensure_future(run_speech(gate.wait, 10)) for _ in range(SPEECH_WORKERS + 2)]
    try:
        # A transcription burst holds the speech pool; a rendered prompt is file work and still loads.
        pcm = await asyncio.wait_for(restarted.pcm_async(GREETING, 8000), 5)
    finally:
        gate.set()
        await asyncio.gather(*busy)
    assert pcm is restarted.pcm(GREETING, 8000) and calls == [GREETING.text]
