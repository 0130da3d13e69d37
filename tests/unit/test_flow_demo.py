"""The demo line's flow, loaded for real and driven by a scripted caller."""

from __future__ import annotations

import pytest

from callbridge.ivr import DEMO_FLOW_PATH, FlowRunner, load_flow

from .test_flow_fakeio import FakeIO, run_with

OPERATOR = "sip:operator@127.0.0.1:5099"
GREETING = "Welcome to callbridge. For English, press 1."
GREETING_ES = "Para español, oprima el dos."
MAIN_EN = "For the status of an order, press 1."
INVALID_EN = "Sorry, that is not an option."
NO_CHOICE_EN = "Sorry, I did not hear a choice."


@pytest.fixture(scope="module")
def demo():
    return load_flow(DEMO_FLOW_PATH, agents={"assistant"}, trunks=set(), settings={"operator_uri": OPERATOR})


async def call(demo, **script):
    io = FakeIO(**script)
    runner = FlowRunner(demo, io)
    outcome = await run_with(runner, io)
    return runner, io, outcome


def test_demo_loads_without_warnings_and_lists_the_greeting(demo):
    assert demo.warnings == []
    assert demo.start == "check_language"
    texts = {(spec.text, spec.language) for spec in demo.static_prompts()}
    assert (GREETING, "en") in texts
    assert "press 1" in GREETING
    assert ("Lo siento, esa no es una opción.", "es") in texts
    assert not any("{{" in text for text, _ in texts)  # the operator URI template is not a prompt


async def test_one_then_one_hands_off_order_status_in_english(demo):
    runner, io, outcome = await call(demo, keys=[(3, "1"), (7, "1")])
    assert outcome == "handoff"
    [(agent, context)] = io.handoffs
    assert agent == "assistant"
    assert context.reason == "order_status" and context.language == "en"
    assert context.path == [
        {"menu": "language_menu", "digit": "1", "label": "English"},
        {"menu": "main_menu", "digit": "1", "label": "Order status"},
    ]
    assert runner.path == context.path
    assert io.said[:2] == [GREETING, GREETING_ES] and io.said[2].startswith(MAIN_EN)
    assert len(io.said) == 3  # the language menu did not repeat what the greeting asked
    choices = [(r["node"], r["digit"], r["label"]) for r in io.recorded("choice")]
    assert choices == [("language_menu", "1", "English"), ("main_menu", "1", "Order status")]
    assert io.calls[-1] == ("hangup", "agent_finished")


async def test_spanish_menu_is_spoken_in_spanish(demo):
    runner, io, _ = await call(demo, keys=[(3, "2"), (7, "2")])
    [(_, context)] = io.handoffs
    assert (context.language, context.reason) == ("es", "billing")
    spoken = [call for call in io.calls if call[0] == "say"]
    assert spoken[1][1] == GREETING_ES and spoken[1][2] == "es"  # the Spanish line in a Spanish voice
    assert spoken[2][1].startswith("Para el estado de un pedido") and spoken[2][2] == "es"
    assert runner.variables["language"] == "es"


async def test_zero_transfers_to_the_operator(demo):
    _, io, outcome = await call(demo, keys=[(3, "1"), (7, "0")])
    assert outcome == "transfer"
    assert ("transfer", OPERATOR, "refer", None) in io.calls
    assert "Please hold while I connect you to an operator." in io.said
    assert not io.handoffs
    assert not [c for c in io.calls if c[0] == "hangup"]  # the transfer owns the call now


async def test_three_invalid_keys_go_to_the_operator(demo):
    _, io, outcome = await call(demo, keys=[(3, "1"), (6, "7"), (11, "8"), (16, "5")])
    assert outcome == "transfer"
    assert io.said.count(INVALID_EN) == 3
    assert [r["digit"] for r in io.recorded("invalid")] == ["7", "8", "5"]
    assert io.calls[-1] == ("transfer", OPERATOR, "refer", None)


async def test_invalid_key_then_valid_choice(demo):
    _, io, _ = await call(demo, keys=[(3, "1"), (6, "4"), (11, "3")])
    [(_, context)] = io.handoffs
    assert context.reason == "general"
    assert io.said.count(INVALID_EN) == 1
    assert sum(text.startswith(MAIN_EN) for text in io.said) == 2  # re-prompted after the mistake


async def test_silence_reprompts_then_goes_to_the_operator(demo):
    _, io, outcome = await call(demo, keys=[(3, "1")])
    assert sum(text.startswith(MAIN_EN) for text in io.said) == 3
    assert io.said.count(NO_CHOICE_EN) == 2
    assert len(io.recorded("timeout")) == 3
    assert outcome == "transfer"


async def test_a_key_after_a_reprompt_is_taken(demo):
    # Main menu prompt 3-5 s, silence until 10, "no choice" 10-12, prompt 12-14.
    _, io, _ = await call(demo, keys=[(3, "1"), (13, "2")])
    [(_, context)] = io.handoffs
    assert context.reason == "billing"
    assert io.said.count(NO_CHOICE_EN) == 1


async def test_nine_repeats_the_menu(demo):
    _, io, _ = await call(demo, keys=[(3, "1"), (6, "9"), (9, "2")])
    assert sum(text.startswith(MAIN_EN) for text in io.said) == 2
    [(_, context)] = io.handoffs
    assert [step["label"] for step in context.path] == ["English", "Repeat the menu", "Billing"]


async def test_headers_skip_both_menus(demo):
    headers = {"X-Lang": "es", "X-Reason": "billing", "X-Twilio-CallSid": "CA123"}
    runner, io, outcome = await call(demo, headers=headers)
    assert outcome == "handoff"
    assert io.said == []
    [(agent, context)] = io.handoffs
    assert (agent, context.reason, context.language) == ("assistant", "billing", "es")
    assert context.path == []
    assert context.x_lang == "es" and context.twilio_call_sid == "CA123"


async def test_language_header_alone_skips_only_the_language_menu(demo):
    _, io, _ = await call(demo, headers={"x-lang": "ES"}, keys=[(1, "3")])
    assert io.said[0].startswith("Para el estado de un pedido")
    [(_, context)] = io.handoffs
    assert (context.reason, context.language) == ("general", "es")


async def test_unknown_reason_header_falls_back_to_the_main_menu(demo):
    _, io, _ = await call(demo, headers={"X-Lang": "en", "X-Reason": "lottery"}, keys=[(1, "2")])
    [(_, context)] = io.handoffs
    assert context.reason == "billing"
    assert context.x_reason == "lottery"


async def test_unsupported_language_header_plays_the_greeting(demo):
    _, io, _ = await call(demo, headers={"X-Lang": "fr"}, keys=[(3, "1"), (7, "1")])
    assert io.said[0] == GREETING


async def test_key_pressed_during_the_greeting_is_used_by_the_menu(demo):
    # "2" during the greeting, "1" during the Spanish main menu prompt.
    _, io, _ = await call(demo, keys=[(1, "2"), (2.5, "1")])
    greeting, _, main = [call for call in io.calls if call[0] == "say"]
    assert greeting[1] == GREETING and greeting[4] == 0  # interrupted at 1 s
    assert main[2] == "es" and main[4] == 1
    [(_, context)] = io.handoffs
    assert (context.language, context.reason) == ("es", "order_status")


async def test_transfer_refused_says_sorry_and_hangs_up(demo):
    _, io, outcome = await call(demo, keys=[(3, "1"), (7, "0")], transfer_accepted=False)
    assert outcome == "hangup"
    assert io.said[-1].startswith("Sorry, no operator is available")
    assert io.calls[-1] == ("hangup", "operator_unavailable")
