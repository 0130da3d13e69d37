"""Micro-benchmark of the per-frame media work. Prints µs per 20 ms frame.

Run: .venv/bin/python bench/bench_codecs.py
Budget reference: 500 calls, 50 frames/s each way -> 50,000 frames/s per
direction; on one core that is 20 µs per frame for everything.
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable
from pathlib import Path

import numpy as np

try:
    import callbridge  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from callbridge.media.codecs import L16Codec, PcmaCodec, PcmuCodec, g722_available
from callbridge.media.dtmf.inband import InbandDtmfDetector
from callbridge.media.resample import StreamResampler

FRAME_MS = 20
ROUNDS = 20_000


def frame(rate: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.normal(0, 3000, rate * FRAME_MS // 1000).astype(np.int16)


def per_frame_us(stmt: Callable[[], object], number: int = ROUNDS, repeat: int = 5) -> float:
    best = min(timeit.repeat(stmt, number=number, repeat=repeat))
    return best / number * 1e6


def main() -> None:
    rows: list[tuple[str, float]] = []
    codecs = [PcmuCodec(), PcmaCodec(), L16Codec(16000)]
    if g722_available():
        from callbridge.media.codecs import G722Codec

        codecs.append(G722Codec())
    for codec in codecs:
        pcm = frame(codec.sample_rate)
        payload = codec.encode(pcm)
        rows.append((f"{codec.name}/{codec.sample_rate} encode", per_frame_us(lambda c=codec, p=pcm: c.encode(p))))
        rows.append((f"{codec.name}/{codec.sample_rate} decode", per_frame_us(lambda c=codec, p=payload: c.decode(p))))
    for src, dst in ((8000, 16000), (16000, 8000), (24000, 8000), (48000, 16000)):
        stream = StreamResampler(src, dst)
        pcm = frame(src)
        rows.append((f"resample stream {src}->{dst}", per_frame_us(lambda s=stream, p=pcm: s.process(p))))
    for rate in (8000, 16000):
        detector = InbandDtmfDetector(rate)
        pcm = frame(rate)
        rows.append((f"in-band DTMF detect {rate} Hz", per_frame_us(lambda d=detector, p=pcm: d.feed(p), ROUNDS // 4)))
    width = max(len(name) for name, _ in rows)
    print(f"{'operation (one 20 ms frame)':<{width}}  {'µs':>7}")
    for name, us in rows:
        print(f"{name:<{width}}  {us:7.2f}")


if __name__ == "__main__":
    main()
