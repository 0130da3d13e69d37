"""Test-call scripts: what loads, what is rejected, and where the error points."""

from __future__ import annotations

from pathlib import Path

import pytest

from callbridge.simulator.script import (ExpectHangup, ExpectHeard, ExpectTransfer, Hangup, Press, Say, Wait,
                                            WaitForPrompt, heard_matches, load_script, load_script_text,
                                            normalize_text)
from callbridge.yamlsource import SourceError

EXAMPLE = Path(__file__).parents[2] / "examples" / "demo-line.test.yaml"

EVERY_STEP = """\
target: sip:demo@127.0.0.1:5060
from: "+15551230000"
headers: {X-Lang: en, X-Priority: 2}
timeout: 60
answer_timeout: 5
language: en-US
steps:
  - wait_for_prompt
  - wait_for_prompt: 12
  - wait_for_prompt: {timeout: 20, quiet: 1.5}
  - expect_heard: "press 1"
  - expect_heard: ["press 1", "press one"]
  - expect_heard: {text: Goodbye, timeout: 0}
  - press: "1"
  - press: 0
  - press: {digits: "12w#", duration_ms: 150}
  - say: "I want to check my order"
  - wait: 2
  - wait: {seconds: 0.5}
  - expect_transfer
  - expect_transfer: operator
  - expect_transfer: {target: "sip:operator@127.0.0.1:5099", timeout: 10}
  - expect_hangup
  - expect_hangup: {timeout: 3}
  - hangup
"""


def test_every_step_kind_and_shorthand_loads():
    script = load_script_text(EVERY_STEP, "every.yaml")
    assert script.target == "sip:demo@127.0.0.1:5060"
    assert script.caller == "+15551230000"
    assert script.headers == (("X-Lang", "en"), ("X-Priority", "2"))
    assert (script.timeout, script.answer_timeout, script.language) == (60.0, 5.0, "en-US")
    steps = script.steps
    assert [type(step) for step in steps] == [
        WaitForPrompt, WaitForPrompt, WaitForPrompt, ExpectHeard, ExpectHeard, ExpectHeard, Press, Press, Press,
        Say, Wait, Wait, ExpectTransfer, ExpectTransfer, ExpectTransfer, ExpectHangup, ExpectHangup, Hangup]
    assert steps[0].timeout == 15.0 and steps[1].timeout == 12.0
    assert (steps[2].timeout, steps[2].quiet) == (20.0, 1.5)
    assert steps[4].texts == ("press 1", "press one")
    assert steps[5].timeout == 0.0
    assert [s.digits for s in steps[6:9]] == ["1", "0", "12w#"] and steps[8].duration_ms == 150.0
    assert steps[9].text == "I want to check my order"
    assert (steps[10].seconds, steps[11].seconds) == (2.0, 0.5)
    assert [s.target for s in steps[12:15]] == [None, "operator", "sip:operator@127.0.0.1:5099"]
    assert steps[16].timeout == 3.0
    # Every step knows its line, for the report.
    assert [step.position.line for step in steps] == list(range(8, 26))


def test_target_can_come_from_the_command_line():
    script = load_script_text("steps: [hangup]\n", target="sip:line@10.0.0.5:5070")
    assert script.target == "sip:line@10.0.0.5:5070"
    script = load_script_text("target: sip:a@127.0.0.1\nsteps: [hangup]\n", target="sip:b@127.0.0.1")
    assert script.target == "sip:b@127.0.0.1"


def test_the_demo_line_example_loads():
    script = load_script(EXAMPLE)
    assert [step.kind for step in script.steps] == [
        "wait_for_prompt", "expect_heard", "press", "wait_for_prompt", "press", "expect_transfer"]


HEAD = "target: sip:demo@127.0.0.1:5060\nsteps:\n"

BAD_SCRIPTS = [
    # (script, line, column, words the message must contain)
    pytest.param(HEAD + "  - wait_for_prompt\n  - pres: \"1\"\n", 4, 5, "unknown step 'pres'; did you mean 'press'",
                 id="unknown-step"),
    pytest.param(HEAD + "  - wait_for_prompt: {timeout: 5, quite: 1}\n", 3, 35,
                 "unknown wait_for_prompt option 'quite'",
                 id="unknown-option"),
    pytest.param("steps:\n  - hangup\n", 1, 1, "no target", id="missing-target"),
    pytest.param(HEAD + "  - press: \"12x\"\n", 3, 5, "'x' is not a key", id="bad-digits"),
    pytest.param(HEAD + "  - press: 0123\n", 3, 5, "quoted string", id="digits-as-octal-number"),
    pytest.param(HEAD + "  - press: {digits: \"1\", duration_ms: 5}\n", 3, 26, "duration_ms", id="short-press"),
    pytest.param("target: http://example.com/\nsteps: [hangup]\n", 1, 1, "sip: or sips: URI", id="not-sip-target"),
    pytest.param("target: sip:demo@127.0.0.1\ntimout: 5\nsteps: [hangup]\n", 2, 1, "did you mean 'timeout'",
                 id="unknown-top-level-key"),
    pytest.param("target: sip:demo@127.0.0.1\nfrom: +15551230000\nsteps: [hangup]\n", 2, 1, "quoted string",
                 id="caller-number-unquoted"),
    pytest.param("target: sip:demo@127.0.0.1\nheaders: {Call-ID: x}\nsteps: [hangup]\n", 2, 11, "set by callbridge",
                 id="reserved-header"),
    pytest.param("target: sip:demo@127.0.0.1\ntimeout: -1\nsteps: [hangup]\n", 2, 1, "more than 0",
                 id="negative-timeout"),
    pytest.param("target: sip:demo@127.0.0.1\nsteps: []\n", 2, 1, "non-empty list", id="no-steps"),
    pytest.param(HEAD + "  - press: \"1\"\n    say: hi\n", 3, 5, "exactly one kind", id="two-kinds-in-one-step"),
    pytest.param(HEAD + "  - expect_heard:\n", 3, 5, "words to listen for", id="expect-heard-without-text"),
    pytest.param(HEAD + "  - expect_heard: [\"press 1\", \"\"]\n", 3, 31, "words to listen for",
                 id="empty-alternative"),
    pytest.param(HEAD + "  - wait\n", 3, 5, "number of seconds", id="wait-without-seconds"),
    pytest.param(HEAD + "  - wait: soon\n", 3, 5, "number of seconds", id="wait-not-a-number"),
    pytest.param(HEAD + "  - hangup: now\n", 3, 5, "takes no options", id="hangup-with-options"),
    pytest.param(HEAD + "  - say: \"\"\n", 3, 5, "sentence to speak", id="say-nothing"),
    pytest.param(HEAD + "  - expect_hangup: {timeout: yes}\n", 3, 21, "number of seconds", id="boolean-timeout"),
    pytest.param(HEAD + "  - press: \"1\"\n  - [press, 2]\n", 4, 5, "a step is a step name", id="step-is-a-list"),
    pytest.param(HEAD + "  - press: \"1\n", 4, 1, "YAML syntax error", id="yaml-syntax"),
]


@pytest.mark.parametrize("text,line,column,words", BAD_SCRIPTS)
def test_bad_scripts_are_rejected_where_the_mistake_is(text, line, column, words):
    with pytest.raises(SourceError) as raised:
        load_script_text(text, "bad.yaml")
    error = raised.value
    assert words in error.reason
    assert (error.position.file, error.position.line, error.position.column) == ("bad.yaml", line, column), str(error)


def test_bad_command_line_target_is_reported_as_such():
    with pytest.raises(SourceError) as raised:
        load_script_text("steps: [hangup]\n", target="demo@127.0.0.1")
    assert str(raised.value).startswith("<command line>:1:1: --target: target is not a SIP URI")


def test_unreadable_file_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="cannot read file"):
        load_script(tmp_path / "missing.yaml")


@pytest.mark.parametrize("transcript,expected,matches", [
    ("Welcome. For sales, press 1.", "press 1", True),
    ("Welcome for sales, press one.", "press 1", True),
    ("Press One!", "PRESS 1", True),
    ("For billing, press 10.", "press 1", False),
    ("For sales, press 1.", "press 7", False),
    ("Please hold while I connect you to an operator.", "connect you to an operator", True),
    ("Press star to go back.", "press *", True),
    ("", "press 1", False),
])
def test_heard_text_matching_ignores_case_punctuation_and_number_words(transcript, expected, matches):
    assert heard_matches(transcript, expected) is matches


def test_normalize_text():
    assert normalize_text("Don't press ZERO, press two.") == "don't press 0 press 2"


# -- what the far end said, split into utterances ----------------------------------------------

def _heard(pattern: str):
    """HeardAudio from a string: "#" is a loud 20 ms frame, "." a silent one."""
    import numpy as np

    from callbridge.simulator.heard import HeardAudio

    heard = HeardAudio(8000)
    for mark in pattern:
        heard(np.full(160, 8000 if mark == "#" else 0, dtype=np.int16))
    return heard


def test_utterances_are_split_at_long_pauses_only():
    heard = _heard("..###.##......####...")
    assert heard.utterances(0, heard.count, quiet_frames=3) == [(2, 8), (14, 18)]
    assert heard.utterances(0, heard.count, quiet_frames=6) == [(2, 8), (14, 18)]  # a 6-frame pause splits
    assert heard.utterances(0, heard.count, quiet_frames=7) == [(2, 18)]


def test_utterances_ignore_clicks_and_respect_the_window():
    heard = _heard("#....###....#.")
    assert heard.utterances(0, heard.count, quiet_frames=2) == [(5, 8)]  # a lone frame is a click
    assert heard.utterances(6, heard.count, quiet_frames=2) == [(6, 8)]
    assert heard.utterances(8, heard.count, quiet_frames=2) == []
