"""One parser per node type: YAML mapping in, checked node dataclass out."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any

from ..yamlsource import Path_
from .fields import Fields, describe
from .loadcontext import LoadContext
from .parse_branch import BRANCH_FIELDS, parse_branch
from .parse_http import HTTP_FIELDS, parse_http
from .nodes import (AgentNode, GatherNode, GotoNode, HangupNode, MenuNode, MenuOption, Node, PlayNode,
                    SayNode, SetNode, TransferNode)
from .template import has_placeholders

KEYS = "0123456789*#"
_PHONE = re.compile(r"\+?[0-9][0-9 ().-]{2,}\Z")


def _say(ctx: LoadContext, node_id: str, f: Fields) -> SayNode:
    language = f.string("language")
    if language is not None and language not in ctx.languages:
        raise f.error("language", f"language {language!r} is not one of the flow's languages "
                                  f"({', '.join(ctx.languages)})")
    text = ctx.text(f, "text", required=True)
    assert text is not None
    return SayNode(node_id, text, ctx.ref(f, "next", required=True), language, f.string("voice"))


def _play(ctx: LoadContext, node_id: str, f: Fields) -> PlayNode:
    name = f.string("file", required=True)
    path = (ctx.base_dir / name).resolve()
    if not path.is_file():
        raise f.error("file", f"audio file not found: {path}")
    return PlayNode(node_id, path, ctx.ref(f, "next", required=True))


def _single_key(f: Fields, name: str, key: Any, path: Path_) -> str:
    if isinstance(key, bool):
        raise f.source.error(path, f"{name} {describe(key)}: YAML reads yes/no/on/off as true/false; quote it")
    text = str(key) if isinstance(key, int) else key
    if not isinstance(text, str) or len(text) != 1 or text not in KEYS:
        raise f.source.error(path, f"{name} {key!r} must be a single key: 0-9, * or # (quote * and #)")
    return text


def _choices(f: Fields) -> dict[str, str]:
    choices: dict[str, str] = {}
    for key, value in f.mapping("choices").items():
        path = f.at("choices") + (key,)
        if isinstance(key, bool):
            raise f.source.error(path, f"choice {describe(key)}: YAML reads yes/no/on/off as true/false; quote it")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise f.source.error(path, f"choice {key!r} must map to a text value, got {describe(value)}")
        choices[str(key).strip().lower()] = str(value)
    return choices


def _gather(ctx: LoadContext, node_id: str, f: Fields) -> GatherNode:
    finish = f.string("finish_on_key", default="#")
    finish_key = _single_key(f, "finish_on_key", finish, f.at("finish_on_key")) if finish else None
    into = f.variable_name("into", required=True)
    assert into is not None
    ctx.assignable(f.at("into"), into)
    return GatherNode(
        node_id,
        input=f.choice("input", ("dtmf", "speech", "both"), default="dtmf"),
        into=into,
        next=ctx.ref(f, "next", required=True),
        prompt=ctx.text(f, "prompt"),
        num_digits=f.integer("num_digits", default=None, minimum=1, maximum=64),
        finish_on_key=finish_key,
        first_digit_timeout=f.number("first_digit_timeout", default=5.0, maximum=120),
        inter_digit_timeout=f.number("inter_digit_timeout", default=3.0, maximum=60),
        timeout=f.number("timeout", default=5.0, maximum=120),
        choices=_choices(f),
        hints=tuple(f.string_list("hints")),
        retries=f.integer("retries", default=1, minimum=1, maximum=10),
        on_timeout=ctx.ref(f, "on_timeout"),
        on_no_match=ctx.ref(f, "on_no_match"),
        voice=f.string("voice"),
    )


def _option(ctx: LoadContext, f: Fields, key: Any, digit: str) -> MenuOption:
    path = f.at("options") + (key,)
    value = f.values["options"][key]
    if isinstance(value, str):  # shorthand: `1: node_id`
        ctx.references.append((value, path))
        return MenuOption(digit, value, value)
    option = ctx.fields(path, value, f"menu option {digit!r}", ("next", "label", "set"))
    target = ctx.ref(option, "next", required=True)
    assert target is not None
    return MenuOption(digit, target, option.string("label", default=target) or target,
                      ctx.assignments(option, "set"))


def _menu(ctx: LoadContext, node_id: str, f: Fields) -> MenuNode:
    prompt = ctx.text(f, "prompt", required=True)
    assert prompt is not None
    raw_options = f.mapping("options", required=True)
    if not raw_options:
        raise f.error("options", "a menu needs at least one option")
    options: dict[str, MenuOption] = {}
    for key in raw_options:
        digit = _single_key(f, "menu key", key, f.at("options") + (key,))
        if digit in options:
            raise f.source.error(f.at("options") + (key,), f"menu key {digit!r} appears twice")
        options[digit] = _option(ctx, f, key, digit)
    return MenuNode(
        node_id, prompt, options,
        retries=f.integer("retries", default=3, minimum=1, maximum=10) or 3,
        timeout=f.number("timeout", default=5.0, minimum=0.5, maximum=120),
        invalid_prompt=ctx.text(f, "invalid_prompt"),
        timeout_prompt=ctx.text(f, "timeout_prompt"),
        default=ctx.ref(f, "default"),
        prompt_on_entry=f.boolean("prompt_on_entry", default=True),
        voice=f.string("voice"),
    )


def _set(ctx: LoadContext, node_id: str, f: Fields) -> SetNode:
    return SetNode(node_id, ctx.assignments(f, "vars", required=True), ctx.ref(f, "next", required=True))


def _transfer(ctx: LoadContext, node_id: str, f: Fields) -> TransferNode:
    target = f.template("target", required=True)
    assert target is not None
    method = f.choice("method", ("refer", "bridge"), default="refer")
    trunk = f.string("trunk")
    literal = not has_placeholders(target)
    if literal and not (target.startswith(("sip:", "sips:", "tel:")) or _PHONE.match(target)):
        raise f.error("target", f"target {target!r} is neither a SIP URI (sip:user@host) nor a phone number")
    if trunk is not None and ctx.trunks is not None and trunk not in ctx.trunks:
        raise f.error("trunk", _unknown("trunk", trunk, ctx.trunks))
    if method == "bridge" and literal and _PHONE.match(target) and trunk is None:
        raise f.whole_error("bridging to a phone number needs trunk: (which trunk places the call)")
    return TransferNode(node_id, target, method, trunk, ctx.ref(f, "on_failure"))


def _agent(ctx: LoadContext, node_id: str, f: Fields) -> AgentNode:
    agent = f.string("agent", required=True)
    assert agent is not None
    if ctx.agents is not None and agent not in ctx.agents:
        raise f.error("agent", _unknown("agent", agent, ctx.agents))
    reason = f.template("reason", required=True)
    assert reason is not None
    return AgentNode(node_id, agent, reason, f.template_map("context"), ctx.ref(f, "next"))


def _hangup(ctx: LoadContext, node_id: str, f: Fields) -> HangupNode:
    return HangupNode(node_id, f.string("reason", default="normal") or "normal")


def _goto(ctx: LoadContext, node_id: str, f: Fields) -> GotoNode:
    return GotoNode(node_id, ctx.ref(f, "next", required=True))


def _unknown(what: str, name: str, known: set[str]) -> str:
    listing = ", ".join(sorted(known)) or "none configured"
    return f"unknown {what} {name!r} (known: {listing})"


Parser = Callable[[LoadContext, str, Fields], Node]
PARSERS: dict[str, tuple[tuple[str, ...], Parser]] = {
    "say": (("text", "language", "voice", "next"), _say),
    "play": (("file", "next"), _play),
    "gather": (("input", "into", "next", "prompt", "num_digits", "finish_on_key", "first_digit_timeout",
                "inter_digit_timeout", "timeout", "choices", "hints", "retries", "on_timeout", "on_no_match",
                "voice"), _gather),
    "menu": (("prompt", "options", "retries", "timeout", "invalid_prompt", "timeout_prompt", "default",
              "prompt_on_entry", "voice"), _menu),
    "set": (("vars", "next"), _set),
    "transfer": (("target", "method", "trunk", "on_failure"), _transfer),
    "agent": (("agent", "reason", "context", "next"), _agent),
    "hangup": (("reason",), _hangup),
    "goto": (("next",), _goto),
    "branch": (BRANCH_FIELDS, parse_branch),
    "http": (HTTP_FIELDS, parse_http),
}


def parse_node(ctx: LoadContext, node_id: str, value: Any) -> Node:
    path = ("nodes", node_id)
    kinds = ", ".join(sorted(PARSERS))
    if not isinstance(value, dict):
        raise ctx.source.error(path, f"node {node_id!r} must be a mapping with a type: ({kinds})")
    kind = value.get("type")
    if kind is None:
        raise ctx.source.error(path, f"node {node_id!r} has no type: (one of {kinds})")
    if not isinstance(kind, str) or kind not in PARSERS:
        hint = difflib.get_close_matches(str(kind), list(PARSERS), n=1)
        suggestion = f"did you mean {hint[0]!r}?" if hint else f"one of {kinds}"
        raise ctx.source.error(path + ("type",), f"unknown node type {kind!r} in node {node_id!r} ({suggestion})")
    allowed, parser = PARSERS[kind]
    fields = ctx.fields(path, value, f"{kind} node {node_id!r}", ("type",) + allowed)
    return parser(ctx, node_id, fields)
