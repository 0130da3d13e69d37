"""Built-in offline "brain" for the voice agent: intents, slots and replies.

MiniLM sentence embeddings (numpy only) pick the nearest example intent;
slot parsers turn spoken numbers into digits; replies use the IVR's safe
``{{ name }}`` templates.
"""

from pathlib import Path

from .intents import FALLBACK, Intent, IntentEngine, IntentsConfig, Match, load_intents
from .slots import SlotSpec, parse_digits, parse_number

DEMO_INTENTS = Path(__file__).with_name("demo_intents.yaml")

__all__ = [
    "DEMO_INTENTS", "FALLBACK", "Intent", "IntentEngine", "IntentsConfig", "Match", "SlotSpec",
    "load_intents", "parse_digits", "parse_number",
]
