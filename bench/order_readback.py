"""How often a caller hears the agent's order answer right, by phrasing.

Each phrasing of the demo agent's answer is rendered with the offline voice
(piper), sent through what a phone line does to it (8 kHz, G.711 mu-law) and
transcribed with whisper-base, the simulator's ears. A rendering counts as
heard when the transcript holds the whole order number, the status and the
day. Piper samples its prosody, so every rendering differs: --renderings sets
how many per phrasing.

    .venv/bin/python bench/order_readback.py                  # order 4572, 25 renderings
    .venv/bin/python bench/order_readback.py --random-ids 20  # plus 20 random 4-5 digit numbers
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # callbridge from the checkout; tests.support for the digit reader

from table import print_table  # noqa: E402

from callbridge.media.codecs import codec_for  # noqa: E402
from callbridge.media.resample import resample  # noqa: E402
from callbridge.speech.stt import Transcriber  # noqa: E402
from callbridge.speech.tts import synthesizer_for  # noqa: E402
from tests.support.spoken import spoken_digits  # noqa: E402

PHONE_RATE = 8000
PHRASINGS = {  # what the demo template said before, and says now
    "Order N is shipped": "Order {} is shipped. It is arriving on Thursday.",
    "Order number N is shipped": "Order number {} is shipped. It is arriving on Thursday.",
}


def heard_right(text: str, order_id: str) -> bool:
    return order_id in spoken_digits(text) and "shipped" in text.lower() and "thursday" in text.lower()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--order-id", default="4572")
    parser.add_argument("--renderings", type=int, default=25)
    parser.add_argument("--random-ids", type=int, default=0, help="also this many random order numbers, once each")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    voice, ears, codec = synthesizer_for("en"), Transcriber(), codec_for("PCMU", PHONE_RATE)()
    rng = random.Random(args.seed)
    groups = {f"order {args.order_id}": [args.order_id] * args.renderings,
              "random numbers": [str(rng.randrange(1000, 100000)) for _ in range(args.random_ids)]}
    rows = []
    for group, ids in groups.items():
        if not ids:
            continue
        for name, template in PHRASINGS.items():
            right = 0
            for order_id in ids:
                pcm = voice.synthesize(template.format(order_id))
                line = codec.decode(codec.encode(resample(pcm, voice.sample_rate, PHONE_RATE)))
                right += heard_right(ears.transcribe(line, PHONE_RATE, language="en"), order_id)
            rows.append((f"{group}: {name}", f"{right}/{len(ids)} heard right ({100 * right / len(ids):.0f} %)"))
    print_table(rows)

if __name__ == "__main__":
    main()
