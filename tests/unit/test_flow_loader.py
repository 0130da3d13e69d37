"""Loading flows: each mistake is reported at its file:line:column."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from callbridge.ivr import load_flow, load_flow_text
from callbridge.ivr.nodes import BranchNode, GatherNode, HttpNode, MenuNode, PlayNode, TransferNode
from callbridge.yamlsource import SourceError

FLOWS = Path(__file__).parent / "flows"
SETTINGS = {"operator_uri": "sip:operator@example.com"}


def load(text: str, **kwargs):
    kwargs.setdefault("agents", {"assistant"})
    kwargs.setdefault("trunks", {"twilio"})
    kwargs.setdefault("settings", SETTINGS)
    return load_flow_text(textwrap.dedent(text).lstrip("\n"), "test.yaml", base_dir=FLOWS, **kwargs)


def error_of(text: str, **kwargs) -> SourceError:
    with pytest.raises(SourceError) as caught:
        load(text, **kwargs)
    return caught.value


HEAD = "flow: t\nstart: a\nnodes:\n"  # node `a` starts on line 4


@pytest.mark.parametrize(("nodes", "line", "column", "fragment"), [
    pytest.param("  a:\n    type: sya\n", 5, 5, "unknown node type 'sya' in node 'a' (did you mean 'say'?)",
                 id="unknown-type"),
    pytest.param("  a:\n    text: hi\n", 4, 3, "node 'a' has no type:", id="no-type"),
    pytest.param("  a: {type: say, text: hi, next: nowhere}\n", 4, 28, "unknown node 'nowhere'",
                 id="dangling-next"),
    pytest.param("  a:\n    type: menu\n    prompt: Pick\n    options:\n      1: {next: b}\n      2: {next: c}\n"
                 "  b: {type: hangup}\n", 9, 11, "unknown node 'c'", id="dangling-option"),
    pytest.param("  a: {type: goto, next: b}\n  b: {type: hangup}\n  a: {type: hangup}\n", 6, 3,
                 "duplicate node id 'a' (first defined at line 4)", id="duplicate-id"),
    pytest.param("  a:\n    type: menu\n    prompt: Pick\n    options:\n      12: {next: a}\n", 8, 7,
                 "menu key 12 must be a single key: 0-9, * or #", id="two-digit-key"),
    pytest.param("  a:\n    type: menu\n    prompt: Pick\n    options:\n      x: {next: a}\n", 8, 7,
                 "menu key 'x' must be a single key", id="letter-key"),
    pytest.param("  a:\n    type: menu\n    prompt: Pick\n    options:\n      yes: {next: a}\n", 8, 7,
                 "quote it", id="boolean-key"),
    pytest.param("  a:\n    type: say\n    next: a\n", 4, 3, "say node 'a' has no text", id="say-without-text"),
    pytest.param("  a:\n    type: menu\n    options: {1: a}\n", 4, 3, "menu node 'a' has no prompt",
                 id="menu-without-prompt"),
    pytest.param("  a:\n    type: say\n    text: {en: Hi, fr: Salut}\n    next: a\n", 6, 20,
                 "language 'fr' is not one of the flow's languages (en)", id="undeclared-language"),
    pytest.param("  a:\n    type: branch\n    when:\n      - if: {hours: {timezone: Europe/Paris, open: \"25:00\","
                 " close: \"17:00\"}}\n        next: a\n    else: a\n", 7, 46, "is not a time of day",
                 id="bad-time"),
    pytest.param("  a:\n    type: branch\n    when:\n      - if: {hours: {timezone: Europe/Paris, open: \"09:00\","
                 " close: 17:30}}\n        next: a\n    else: a\n", 7, 61, "put the time in quotes",
                 id="unquoted-time"),
    pytest.param("  a:\n    type: branch\n    when:\n      - if:\n          hours:\n"
                 "            timezone: Mars/Olympus\n"
                 "            open: \"09:00\"\n            close: \"17:00\"\n        next: a\n    else: a\n",
                 9, 13, "unknown timezone 'Mars/Olympus'", id="bad-timezone"),
    pytest.param("  a:\n    type: branch\n    when:\n"
                 "      - if: {hours: {timezone: UTC, days: mon-fry, open: \"09:00\","
                 " close: \"17:00\"}}\n        next: a\n    else: a\n", 7, 37, "unknown day 'fry'", id="bad-day"),
    pytest.param("  a:\n    type: agent\n    agent: sales\n    reason: x\n", 6, 5,
                 "unknown agent 'sales' (known: assistant)", id="unknown-agent"),
    pytest.param("  a:\n    type: transfer\n    target: \"+15550001111\"\n    method: bridge\n    trunk: telnyx\n",
                 8, 5, "unknown trunk 'telnyx' (known: twilio)", id="unknown-trunk"),
    pytest.param("  a:\n    type: transfer\n    target: \"+15550001111\"\n    method: bridge\n", 4, 3,
                 "bridging to a phone number needs trunk:", id="bridge-without-trunk"),
    pytest.param("  a:\n    type: transfer\n    target: operator\n", 6, 5,
                 "neither a SIP URI (sip:user@host) nor a phone number", id="bad-target"),
    pytest.param("  a:\n    type: gather\n    next: a\n", 4, 3,
                 "gather node 'a' is missing required field 'into'", id="missing-required"),
    pytest.param("  a:\n    type: menu\n    prompt: Pick\n    retries: three\n    options: {1: a}\n", 7, 5,
                 "retries must be a whole number, got 'three'", id="wrong-type"),
    pytest.param("  a:\n    type: say\n    text: Hi\n    next: [a]\n", 7, 5, "next must be text, got a list",
                 id="wrong-type-list"),
    pytest.param("  a:\n    type: say\n    text: Hi\n    nxt: a\n", 7, 5,
                 "unknown field 'nxt' in say node 'a' (did you mean 'next'?)", id="unknown-field"),
    pytest.param("  a:\n    type: menu\n    prompt: Pick\n    next: a\n    options: {1: a}\n", 7, 5,
                 "unknown field 'next' in menu node 'a'", id="menu-has-no-next"),
    pytest.param("  a:\n    type: say\n    text: \"Hello {{ caller.name() }}\"\n    next: a\n", 6, 5,
                 "bad template in text", id="bad-template"),
    pytest.param("  a:\n    type: set\n    vars: {greeting: \"{{ oops\"}\n    next: a\n", 6, 12,
                 "'{{' is not closed", id="unclosed-template"),
    pytest.param("  a:\n    type: set\n    vars: {caller.number: \"+1\"}\n    next: a\n", 6, 12,
                 "'caller.number' is a built-in variable", id="set-builtin"),
    pytest.param("  a:\n    type: set\n    vars: {language: fr}\n    next: a\n", 6, 12,
                 "language 'fr' is not one of the flow's languages", id="set-unknown-language"),
    pytest.param("  a:\n    type: play\n    file: missing.wav\n    next: a\n", 6, 5, "audio file not found",
                 id="missing-audio"),
    pytest.param("  a:\n    type: http\n    url: ftp://example.com/x\n    next: a\n", 6, 5,
                 "url must start with http:// or https://", id="bad-url"),
    pytest.param("  a:\n    type: http\n    url: http://example.com/x\n    json: {a: 1}\n    next: a\n", 7, 5,
                 "a GET request has no body", id="get-with-body"),
    pytest.param("  a:\n    type: gather\n    into: x\n    timeout: -1\n    next: a\n", 7, 5,
                 "timeout must be between 0 and 120", id="negative-timeout"),
    pytest.param("  a:\n    type: branch\n    when:\n      - if: {var: x, equals: 1, in: [1]}\n        next: a\n"
                 "    else: a\n", 7, 9, "needs exactly one of", id="two-operators"),
])
def test_broken_node(nodes, line, column, fragment):
    error = error_of(HEAD + nodes)
    assert (error.position.file, error.position.line, error.position.column) == ("test.yaml", line, column), \
        error.reason
    assert fragment in error.reason
    assert str(error).startswith(f"test.yaml:{line}:{column}: ")


@pytest.mark.parametrize(("text", "line", "column", "fragment"), [
    pytest.param("flow: t\nnodes:\n  a: {type: hangup}\n", 1, 1, "flow file is missing required field 'start'",
                 id="no-start"),
    pytest.param("flow: t\nstart: begin\nnodes:\n  a: {type: hangup}\n", 2, 1, "start node 'begin' is not defined",
                 id="start-undefined"),
    pytest.param("flow: t\nstart: a\n", 1, 1, "missing required field 'nodes'", id="no-nodes"),
    pytest.param("flow: t\nstart: a\nlanguages: [es]\nnodes:\n  a: {type: hangup}\n", 3, 1,
                 "languages must include the default language 'en'", id="languages-without-default"),
    pytest.param("flow: t\nstart: a\nlanguage: english\nnodes:\n  a: {type: hangup}\n", 3, 1,
                 "'english' is not a language code", id="bad-language-code"),
    pytest.param("flow: t\nstart: a\nlanguages: [en, es]\nnodes:\n  a:\n    type: say\n    text: {es: Hola}\n"
                 "    next: a\n", 7, 5, "has no 'en' text (the flow's default language)",
                 id="missing-default-language"),
    pytest.param("flow: t\nstart: a\nnodez:\n  a: {type: hangup}\n", 3, 1, "did you mean 'nodes'?",
                 id="top-level-typo"),
    pytest.param("flow: t\nstart: a\nnodes:\n  a: {type: hangup\n", 5, 1, "YAML syntax error", id="yaml-syntax"),
    pytest.param("flow: t\nstart: a\nnodes:\n  1: {type: hangup}\n", 4, 3, "node id 1 must start with a letter",
                 id="numeric-id"),
])
def test_broken_file(text, line, column, fragment):
    error = error_of(text)
    assert (error.position.line, error.position.column) == (line, column), error.reason
    assert fragment in error.reason


def test_agent_and_trunk_checks_are_skipped_when_unknown():
    flow = load(HEAD + "  a: {type: agent, agent: anyone, reason: x, next: b}\n"
                "  b: {type: transfer, target: \"+15550001111\", method: bridge, trunk: any}\n",
                agents=None, trunks=None)
    assert flow.nodes["a"].agent == "anyone"


def test_unreachable_node_is_a_warning():
    flow = load(HEAD + "  a: {type: hangup}\n  lonely:\n    type: say\n    text: Nobody hears me\n    next: a\n")
    [warning] = flow.warnings
    assert (warning.position.line, warning.position.column) == (5, 3)
    assert "node 'lonely' is never reached from 'a'" in warning.reason
    assert str(warning).startswith("test.yaml:5:3: warning:")


def test_variable_nothing_sets_is_a_warning():
    flow = load(HEAD + "  a:\n    type: say\n    text: \"Hi {{ custmer.name }}, {{ caller.number }}\"\n"
                "    next: b\n  b: {type: hangup}\n")
    [warning] = flow.warnings
    assert warning.position.line == 6 and "custmer.name" in warning.reason
    # Without settings the service's constants are unknown, so no such warning.
    assert load(HEAD + "  a: {type: transfer, target: \"{{ operator_uri }}\"}\n", settings=None).warnings == []


def test_full_fixture_flow_loads(tmp_path):
    flow = load_flow(FLOWS / "support.yaml", agents={"assistant"}, trunks={"twilio"}, settings=SETTINGS)
    assert flow.warnings == []
    assert flow.name == "support" and flow.languages == ("en", "fr")
    assert isinstance(flow.nodes["hours"], BranchNode)
    lookup = flow.nodes["lookup"]
    assert isinstance(lookup, HttpNode) and lookup.method == "POST" and lookup.into_prefix == "crm"
    menu = flow.nodes["main"]
    assert isinstance(menu, MenuNode) and set(menu.options) == {"1", "2", "*", "#"}
    assert menu.options["2"].set == {"topic": "billing"}
    assert isinstance(flow.nodes["chime"], PlayNode) and flow.nodes["chime"].file == (FLOWS / "chime.wav").resolve()
    gather = flow.nodes["ask_account"]
    assert isinstance(gather, GatherNode) and gather.input == "both" and gather.choices["yes"] == "yes"
    assert isinstance(flow.nodes["to_sales"], TransferNode) and flow.nodes["to_sales"].trunk == "twilio"


def test_static_prompts_skip_templates_and_cover_each_language():
    flow = load_flow(FLOWS / "support.yaml", agents={"assistant"}, trunks={"twilio"}, settings=SETTINGS)
    specs = {(spec.text, spec.language, spec.voice) for spec in flow.static_prompts()}
    assert ("Welcome to Example Support.", "en", "amy") in specs
    assert ("Bienvenue chez Example Support.", "fr", "gilles") in specs
    assert not any("{{" in text for text, _, _ in specs)
    # A language-neutral prompt may be spoken in every language of the flow.
    assert {("Thank you.", "en", "amy"), ("Thank you.", "fr", "gilles")} <= specs
    # A say node with a fixed language is spoken in that language only.
    assert ("One moment please.", "en", "amy") in specs
    assert ("One moment please.", "fr", "gilles") not in specs


def test_unreadable_file_is_a_source_error(tmp_path):
    with pytest.raises(SourceError) as caught:
        load_flow(tmp_path / "nope.yaml", agents=None, trunks=None)
    assert "cannot read flow file" in caught.value.reason
