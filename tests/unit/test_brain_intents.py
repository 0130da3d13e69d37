"""Intents files (validation with locations) and matching with the real model."""

from __future__ import annotations

from pathlib import Path

import pytest

from callbridge.agent.brain import DEMO_INTENTS, FALLBACK, IntentEngine, load_intents
from callbridge.agent.brain.intents import example_text
from callbridge.agent.brain.minilm import MiniLmEncoder
from callbridge.yamlsource import SourceError

# ASR-style output (numerals, fillers, odd punctuation) and paraphrases that
# are not examples in demo_intents.yaml.
PHRASINGS = [
    ("Yeah hi, uh, where's my order at?", "order_status"),
    ("Order 4572.", "order_status"),
    ("I'm checking on order number nine nine eight one.", "order_status"),
    ("Has 1234 shipped yet?", "order_status"),
    ("When does my parcel get delivered?", "order_status"),
    ("I'd like to know where my shipment is.", "order_status"),
    ("There's a problem with my bill.", "billing"),
    ("How do I pay what I owe?", "billing"),
    ("I think I was overcharged this month.", "billing"),
    ("Where do I find my invoices?", "billing"),
    ("Let me talk to somebody real.", "transfer"),
    ("Operator, please.", "transfer"),
    ("Can you put me through to customer support?", "transfer"),
    ("I want a human being.", "transfer"),
    ("OK that's it, bye bye.", "goodbye"),
    ("Alright, goodbye now.", "goodbye"),
    ("Thanks so much for that.", "thanks"),
    ("Hi, good afternoon.", "greeting"),
    ("What sort of things can you do?", "help"),
    ("The cat is sleeping on the sofa.", FALLBACK),
]


@pytest.fixture(scope="module")
def engine() -> IntentEngine:
    return IntentEngine(DEMO_INTENTS, MiniLmEncoder.load())  # a missing model fails, with its own message


def test_demo_file_loads():
    config = load_intents(DEMO_INTENTS)
    assert {"order_status", "billing", "help", "transfer", "goodbye", "greeting", "thanks"} <= set(config.intents)
    order = config.intents["order_status"]
    assert order.tool == "lookup_order" and [s.name for s in order.slots] == ["order_id"]
    assert config.intents["transfer"].action == "transfer"
    assert config.intents["goodbye"].action == "end_call"


def test_placeholders_are_removed_from_embedded_examples():
    assert example_text("track order {order_id} please") == "track order please"


def test_phrasings_accuracy(engine):
    wrong = []
    for utterance, expected in PHRASINGS:
        match = engine.match(utterance)
        if match.intent != expected:
            wrong.append((utterance, expected, match.intent, round(match.score, 3)))
    print(f"\nintent accuracy {len(PHRASINGS) - len(wrong)}/{len(PHRASINGS)}; wrong: {wrong}")
    assert len(PHRASINGS) - len(wrong) >= 18, wrong


def test_order_slot_and_replies(engine):
    match = engine.match("I'm calling about order four five seven two")
    assert match.intent == "order_status" and match.slots == {"order_id": "4572"} and match.missing == []
    result = {"status": "shipped", "detail": "It should arrive on Thursday."}
    assert engine.reply(match, result) == "Order number 4572 is shipped. It should arrive on Thursday."
    assert engine.reply(match, failed=True).startswith("Sorry, I could not look that order up")


def test_missing_slot_is_prompted_then_filled(engine):
    match = engine.match("where is my order")
    assert match.intent == "order_status" and match.missing == ["order_id"]
    assert engine.reply(match) == "Sure. What is your order number?"
    slots, missing = engine.extract_slots("order_status", "uh it's one two three four")
    assert slots == {"order_id": "1234"} and missing == []


def test_fallback(engine):
    match = engine.match("purple elephants dance at midnight")
    assert match.is_fallback and match.slots == {}
    assert engine.reply(match).startswith("Sorry, I didn't catch that.")
    assert engine.match("   ").intent == FALLBACK


# ------------------------------------------------------------ bad files

GOOD_INTENT = """\
  hello:
    examples: ["hi"]
    response: "Hello"
"""

BAD_FILES = [
    ("unknown top-level key", "language: en\nthreshhold: 0.5\nintents:\n" + GOOD_INTENT, 2, "unknown key 'threshhold'"),
    ("threshold out of range", "threshold: 1.5\nintents:\n" + GOOD_INTENT, 1, "threshold"),
    ("no intents", "language: en\n", 1, "'intents'"),
    ("examples missing", "intents:\n" + GOOD_INTENT + "  other:\n    response: x\n", 5, "examples"),
    ("empty examples", "intents:\n  a:\n    examples: []\n    response: x\n", 3, "non-empty list"),
    ("undeclared example slot",
     "intents:\n  a:\n    examples:\n      - hi\n      - order {order_id}\n    response: x\n",
     5, "{order_id}"),
    ("unknown slot type",
     "intents:\n  a:\n    examples: [x]\n    response: y\n    slots:\n      n: {type: colour, prompt: p}\n",
     6, "slot type"),
    ("min above max", "intents:\n  a:\n    examples: [x]\n    response: y\n    slots:\n"
     "      n:\n        prompt: p\n        min_length: 9\n        max_length: 3\n", 8, "min_length"),
    ("bad action", "intents:\n  a:\n    examples: [x]\n    action: explode\n", 4, "action must be"),
    ("template syntax", "intents:\n  a:\n    examples: [x]\n    response: 'Hi {{ a + b }}'\n", 4, "variable name"),
    ("unknown template name", "intents:\n  a:\n    examples: [x]\n    response: 'Order {{ order_id }}'\n",
     4, "order_id"),
    ("single braces", "intents:\n  a:\n    examples: [x]\n    response: 'Order {order_id}'\n", 4, "double braces"),
    ("result without tool", "intents:\n  a:\n    examples: [x]\n    response: '{{ result.status }}'\n",
     4, "result.status"),
    ("no response", "intents:\n  a:\n    examples: [x]\n", 2, "needs a response"),
    ("reserved name", "intents:\n  fallback:\n    examples: [x]\n    response: y\n", 2, "reserved"),
    ("shared example", "intents:\n" + GOOD_INTENT + "  b:\n    examples: [Hi]\n    response: y\n",
     6, "also an example"),
    ("yaml syntax", "intents:\n  a: [unclosed\n", 3, "YAML syntax"),
    ("unknown intent key", "intents:\n  a:\n    examples: [x]\n    respnse: y\n", 4, "unknown key 'respnse'"),
]


@pytest.mark.parametrize(("kind", "text", "line", "reason"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_rejected_with_line(tmp_path: Path, kind, text, line, reason):
    path = tmp_path / "intents.yaml"
    path.write_text(text)
    with pytest.raises(SourceError) as caught:
        load_intents(path)
    assert caught.value.position.line == line, str(caught.value)
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}:{line}:")
