"""Speech-to-text round trips with the real whisper-base weights, through G.711."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from callbridge.media.codecs import PcmuCodec
from callbridge.media.resample import resample
from callbridge.speech import whisper_model
from callbridge.speech.stt import Transcriber
from callbridge.speech.tts import synthesizer_for
from callbridge.speech.whisper_model import MODEL_DIR_ENV, ensure_whisper_base
from tests.support.spoken import spoken_digits
from tests.support.tools import must_have

needs_espeak = must_have(shutil.which("espeak-ng") is not None, "espeak-ng")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_whisper_base(tmp_path_factory.mktemp("models") / "whisper-base")


@pytest.fixture(scope="module")
def transcriber(model_dir: Path) -> Iterator[Transcriber]:
    # built with no model_dir, so the default path (env var -> assembled dir) is what loads
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MODEL_DIR_ENV, str(model_dir.parent))
        transcriber = Transcriber()
        transcriber.load()
    yield transcriber


def telephone(pcm: np.ndarray, rate: int) -> np.ndarray:
    """What a caller's words look like after a PCMU leg: 8 kHz, µ-law quantised."""
    codec = PcmuCodec()
    return codec.decode(codec.encode(resample(pcm, rate, 8000)))


def test_english_round_trip_through_ulaw(transcriber: Transcriber):
    voice = synthesizer_for("en")
    audio = telephone(voice.synthesize("What is the status of order four five seven two"), voice.sample_rate)
    text = transcriber.transcribe(audio, 8000, language="en").lower()
    assert "status" in text and "order" in text, text  # the words
    assert spoken_digits(text) == "4572", text  # and the whole number, however whisper writes it


async def test_async_calls_share_one_model(transcriber: Transcriber):
    voice = synthesizer_for("en")
    yes = telephone(voice.synthesize("Yes, please."), voice.sample_rate)
    agent = telephone(voice.synthesize("Agent."), voice.sample_rate)
    answers = await asyncio.gather(transcriber.transcribe_async(yes, 8000, language="en"),
                                   transcriber.transcribe_async(agent, 8000, language="en", hints=["agent", "sales"]))
    assert "yes" in answers[0].lower()
    assert "agent" in answers[1].lower()


def test_float_input_at_16k(transcriber: Transcriber):
    voice = synthesizer_for("en")
    pcm = resample(voice.synthesize("I would like to speak to someone in billing."), voice.sample_rate, 16000)
    text = transcriber.transcribe(pcm.astype(np.float32) / 32768, 16000, language="en")
    # "billing" alone sometimes comes back as "villain"; the sentence around it is stable.
    assert "speak to someone" in text.lower(), text


def test_too_short_audio_is_empty(transcriber: Transcriber):
    assert transcriber.transcribe(np.zeros(400, dtype=np.int16), 8000) == ""


@needs_espeak
def test_spanish_round_trip(transcriber: Transcriber):
    voice = synthesizer_for("es")
    audio = telephone(voice.synthesize("Quiero hablar con un agente, por favor."), voice.sample_rate)
    text = transcriber.transcribe(audio, 8000, language="es").lower()
    assert "quiero" in text and "hablar" in text


def test_model_dir_is_verified_once(model_dir: Path, monkeypatch: pytest.MonkeyPatch):
    assert {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"} <= {p.name for p in model_dir.iterdir()}

    def must_not_hash(*args: object) -> None:
        raise AssertionError("a stamped model must not be hashed again")

    monkeypatch.setattr(whisper_model, "_join_parts", must_not_hash)
    monkeypatch.setattr(whisper_model, "_verify_existing", must_not_hash)
    assert ensure_whisper_base(model_dir) == model_dir


def test_corrupt_model_is_rebuilt(tmp_path: Path, model_dir: Path):
    copy = tmp_path / "whisper-base"
    shutil.copytree(model_dir, copy)
    with open(copy / "model.bin", "r+b") as model:
        model.seek(1000)
        model.write(b"\xff" * 16)  # changes the mtime, so the stamp no longer vouches for it
    ensure_whisper_base(copy)
    assert whisper_model._verify_existing(copy / "model.bin")


def test_default_model_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path))
    assert whisper_model.default_model_dir() == tmp_path / "whisper-base"
    monkeypatch.delenv(MODEL_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert whisper_model.default_model_dir() == tmp_path / "cache" / "callbridge" / "whisper-base"


def test_assembly_reports_progress(tmp_path):
    seen: list[tuple[int, int]] = []
    ensure_whisper_base(tmp_path / "whisper-base", progress=lambda done, total: seen.append((done, total)))
    assert len(seen) > 10, "a 140 MB join reports progress more than a few times"
    assert all(b[0] > a[0] for a, b in pairwise(seen)), "progress only moves forward"
    assert seen[-1][0] == seen[-1][1] > 100_000_000
    seen.clear()
    ensure_whisper_base(tmp_path / "whisper-base", progress=lambda done, total: seen.append((done, total)))
    assert seen == [], "an assembled, stamped model is not joined again"
