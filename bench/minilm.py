"""What the offline agent's sentence encoder (numpy all-MiniLM-L6-v2) costs on this machine.

    .venv/bin/python bench/minilm.py            # prints a table (a few seconds)

- load: reading the packaged safetensors and tokenizer into a new encoder;
- encode: one short caller utterance, the per-turn cost the intent matcher pays;
- batch: eight utterances in one call, per utterance (start-up encodes the
  intents' examples this way).

Each encode figure is the median of --repeat runs after one warm-up.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    import callbridge  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from callbridge.agent.brain.minilm import MiniLmEncoder, default_model_dir
from table import median_time, print_table

UTTERANCE = "hi, I'm calling about order four five seven two"
BATCH = [
    "where is my order", "has my parcel shipped yet", "I have a question about my bill",
    "can I talk to a person", "what are your opening hours", "I want to cancel my order",
    "that's all, thanks, goodbye", "hi, I'm calling about order four five seven two",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    model_dir = default_model_dir()

    start = time.perf_counter()
    encoder = MiniLmEncoder(model_dir)
    load = time.perf_counter() - start
    single = median_time(lambda: encoder.encode([UTTERANCE]), args.repeat)
    batch = median_time(lambda: encoder.encode(BATCH), args.repeat) / len(BATCH)

    rows = [
        ("MiniLM: load (safetensors + tokenizer)", f"{load * 1000:.0f} ms"),
        ("MiniLM: encode one utterance", f"{single * 1000:.1f} ms"),
        (f"MiniLM: encode a batch of {len(BATCH)}, per utterance", f"{batch * 1000:.1f} ms"),
    ]
    print_table(rows)


if __name__ == "__main__":
    main()
