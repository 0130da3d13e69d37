"""Offline speech costs on this machine: what a caller waits for, per engine.

    .venv/bin/python bench/speech.py            # prints a table (about 30 s)

- piper (joe): time to the first sentence's audio, and real-time factor;
- espeak-ng (Spanish): the same;
- prompt cache: a hit from disk (first call in a process) and from memory;
- whisper-base: model load, and transcribing a 3 s utterance sent through
  8 kHz µ-law, the way a caller's answer reaches us;
- silero VAD endpointing: cost per 20 ms frame at 8 kHz.

Each figure is the median of --repeat runs after one warm-up.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from callbridge.media.codecs import codec_for
from callbridge.media.resample import resample
from callbridge.speech import (PromptCache, PromptSpec, Transcriber, UtteranceDetector, synthesize_stream,
                               synthesizer_for)
from table import median_time, print_table

SENTENCE = "Thank you for calling. For the status of an order, press one. For billing, press two, or stay on the line."
ANSWER = "What is the status of order four five seven two?"


def first_audio(language: str) -> tuple[float, float]:
    synth = synthesizer_for(language)

    def first() -> None:
        next(iter(synthesize_stream(synth, SENTENCE)))

    start = time.perf_counter()
    audio = synth.synthesize(SENTENCE)
    whole = time.perf_counter() - start
    return median_time(first, 5), whole / (len(audio) / synth.sample_rate)


def telephone_round_trip(pcm: np.ndarray, rate: int) -> np.ndarray:
    codec = codec_for("PCMU")()
    narrow = resample(pcm, rate, 8000)
    return codec.decode(codec.encode(narrow))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []

    for language, label in (("en", "piper joe"), ("es", "espeak-ng es")):
        first, rtf = first_audio(language)
        rows.append((f"{label}: first audio, 20-word prompt", f"{first * 1000:.0f} ms"))
        rows.append((f"{label}: real-time factor", f"{rtf:.3f}"))

    with tempfile.TemporaryDirectory() as tmp:
        spec = PromptSpec(SENTENCE)
        PromptCache(Path(tmp)).render(spec)
        disk_hit = median_time(lambda: PromptCache(Path(tmp)).pcm(spec, 8000), args.repeat)
        rows.append(("prompt cache: disk hit, 8 kHz", f"{disk_hit * 1000:.1f} ms"))
        warm = PromptCache(Path(tmp))
        warm.pcm(spec, 8000)
        memory_hit = median_time(lambda: warm.pcm(spec, 8000), args.repeat)
        rows.append(("prompt cache: memory hit", f"{memory_hit * 1e6:.0f} µs"))

    synth = synthesizer_for("en")
    answer = telephone_round_trip(synth.synthesize(ANSWER), synth.sample_rate)
    transcriber = Transcriber()
    start = time.perf_counter()
    transcriber.load()
    rows.append(("whisper-base: load", f"{(time.perf_counter() - start) * 1000:.0f} ms"))
    seconds = len(answer) / 8000
    took = median_time(lambda: transcriber.transcribe(answer, 8000, language="en"), args.repeat)
    rows.append((f"whisper-base: transcribe {seconds:.1f} s answer", f"{took * 1000:.0f} ms"))
    rows.append(("  heard", repr(transcriber.transcribe(answer, 8000, language="en"))))

    frames = np.concatenate([np.zeros(8000, np.int16), answer, np.zeros(8000, np.int16)])
    chunks = [frames[i:i + 160] for i in range(0, len(frames) - 159, 160)]

    def endpoint() -> None:
        detector = UtteranceDetector(8000)
        for chunk in chunks:
            detector.feed(chunk)

    per_frame = median_time(endpoint, args.repeat) / len(chunks)
    rows.append(("silero endpointing, per 20 ms frame", f"{per_frame * 1e6:.0f} µs"))

    print_table(rows)


if __name__ == "__main__":
    main()
