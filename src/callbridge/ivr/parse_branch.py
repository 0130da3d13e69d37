"""Parsing ``branch`` nodes and their conditions."""

from __future__ import annotations

from typing import Any

from ..yamlsource import Path_
from .conditions import VAR_OPERATORS, AllOf, HoursTest, Test, VarTest, check_timezone, parse_clock, parse_days
from .fields import Fields, describe
from .loadcontext import LoadContext
from .nodes import BranchNode, BranchRule

BRANCH_FIELDS = ("when", "else")
CALLER_OPERATORS = ("equals", "prefix", "in")


def parse_branch(ctx: LoadContext, node_id: str, f: Fields) -> BranchNode:
    rules_value = f.raw("when", required=True)
    if not isinstance(rules_value, list) or not rules_value:
        raise f.error("when", f"when must be a list of {{if: ..., next: ...}} entries, got {describe(rules_value)}")
    rules = []
    for index, item in enumerate(rules_value):
        rule = ctx.fields(f.at("when") + (index,), item, f"branch {node_id!r} rule {index + 1}", ("if", "next"))
        test = parse_test(ctx, rule.at("if"), rule.raw("if", required=True))
        rules.append(BranchRule(test, ctx.ref(rule, "next", required=True)))
    otherwise = ctx.ref(f, "else", required=True)
    assert otherwise is not None
    return BranchNode(node_id, tuple(rules), otherwise)


def parse_test(ctx: LoadContext, path: Path_, value: Any) -> Test:
    if isinstance(value, list):  # every condition must hold
        if not value:
            raise ctx.source.error(path, "an empty condition list")
        return AllOf(tuple(parse_test(ctx, path + (index,), item) for index, item in enumerate(value)))
    if isinstance(value, dict) and "var" in value:
        return _var_test(ctx, path, value)
    if isinstance(value, dict) and "caller" in value:
        return _caller_test(ctx, path, value)
    if isinstance(value, dict) and "hours" in value:
        return _hours_test(ctx, path, value)
    raise ctx.source.error(path, "a condition needs var:, caller: or hours: (see docs/FLOWS.md)")


def _operator(f: Fields, operators: tuple[str, ...]) -> str:
    present = [name for name in operators if name in f.values]
    if len(present) != 1:
        raise f.whole_error(f"{f.what} needs exactly one of {', '.join(operators)}")
    return present[0]


def _compare_value(f: Fields, operator: str) -> str | tuple[str, ...] | bool:
    if operator == "exists":
        return f.boolean("exists", default=True)
    if operator in ("in", "not_in"):
        items = f.raw(operator)
        if not isinstance(items, list) or not items:
            raise f.error(operator, f"{operator} must be a non-empty list, got {describe(items)}")
        values = f.string_list(operator)
        for index, item in enumerate(values):
            f.check_template(operator, item, f.at(operator) + (index,))
        return tuple(values)
    value = f.template(operator)
    if value is None:
        raise f.error(operator, f"{operator} needs a value")
    return value


def _var_test(ctx: LoadContext, path: Path_, value: dict) -> VarTest:
    f = ctx.fields(path, value, "var condition", ("var",) + VAR_OPERATORS)
    name = f.variable_name("var", required=True)
    assert name is not None
    f.templates.append(("{{ " + name + " }}", f.at("var")))  # a read, for the unknown-name warning
    operator = _operator(f, VAR_OPERATORS)
    return VarTest(name, operator, _compare_value(f, operator))


def _caller_test(ctx: LoadContext, path: Path_, value: dict) -> VarTest:
    outer = ctx.fields(path, value, "caller condition", ("caller",))
    f = ctx.fields(outer.at("caller"), value["caller"], "caller condition", CALLER_OPERATORS)
    operator = _operator(f, CALLER_OPERATORS)
    return VarTest("caller.number", operator, _compare_value(f, operator))


def _hours_test(ctx: LoadContext, path: Path_, value: dict) -> HoursTest:
    outer = ctx.fields(path, value, "hours condition", ("hours",))
    f = ctx.fields(outer.at("hours"), value["hours"], "hours", ("timezone", "days", "open", "close"))
    try:
        timezone = check_timezone(f.raw("timezone", required=True))
    except ValueError as exc:
        raise f.error("timezone", str(exc)) from None
    clocks = {}
    for name in ("open", "close"):
        try:
            clocks[name] = parse_clock(f.raw(name, required=True))
        except ValueError as exc:
            raise f.error(name, f"{name}: {exc}") from None
    if clocks["open"] == clocks["close"]:
        raise f.error("close", "close must differ from open")
    try:
        days = parse_days(f.raw("days") or "daily")
    except ValueError as exc:
        raise f.error("days", str(exc)) from None
    return HoursTest(timezone, days, clocks["open"], clocks["close"])
