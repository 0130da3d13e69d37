"""The speaking-rate bounds every synthesizer accepts.

A leaf module: the voices (piper_voice, espeak_voice) check rates with it, and
tts.py, which builds those voices, re-exports it, so neither imports the other.
"""

from __future__ import annotations

# Speaking-rate multipliers: 1.0 is the voice's own speed, 2.0 twice as fast.
MIN_RATE = 0.25
MAX_RATE = 4.0


def check_rate(rate: float) -> float:
    """``rate`` as a float; ValueError outside MIN_RATE..MAX_RATE."""
    rate = float(rate)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ValueError(f"speech rate must be within {MIN_RATE}..{MAX_RATE}, got {rate}")
    return rate
