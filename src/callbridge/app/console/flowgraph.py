"""A loaded flow as a graph the console draws: nodes (id, kind, label) and labelled edges.

Each edge carries what takes the caller along it: a menu key and its label, a branch condition, "timeout",
"error"... The console lays the graph out itself (BFS depth from the start node); this module only says
what is connected to what, from the same node classes the runner executes.
"""

from __future__ import annotations

from typing import Any

from ...ivr.conditions import AllOf, HoursTest, Test, VarTest
from ...ivr.model import Flow
from ...ivr.nodes import (AgentNode, BranchNode, GatherNode, GotoNode, HangupNode, HttpNode, MenuNode, Node,
                          PlayNode, SayNode, SetNode, Text, TransferNode)

MAX_LABEL = 80  # characters of prompt text shown on a node


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_LABEL else text[:MAX_LABEL - 1] + "…"


def _text(text: Text | None) -> str:
    if text is None:
        return ""
    variants = text.variants()
    return _short(variants[0][1]) if variants else ""


def describe_test(test: Test) -> str:
    if isinstance(test, VarTest):
        value = test.value
        shown = ", ".join(value) if isinstance(value, tuple) else str(value).lower() if isinstance(value, bool) \
            else value
        return f"{test.name} {test.operator.replace('_', ' ')} {shown}"
    if isinstance(test, HoursTest):
        return f"open {test.open:%H:%M}-{test.close:%H:%M} {test.timezone}"
    if isinstance(test, AllOf):
        return " and ".join(describe_test(t) for t in test.tests)
    return type(test).__name__


def _label(node: Node) -> str:
    match node:
        case SayNode():
            return _text(node.text)
        case MenuNode():
            return _text(node.prompt)
        case GatherNode():
            return f"{node.input} into {node.into}"
        case PlayNode():
            return node.file.name
        case SetNode():
            return ", ".join(sorted(node.values))
        case HttpNode():
            return f"{node.method} {_short(node.url)}"
        case TransferNode():
            return _short(node.target)
        case AgentNode():
            return f"agent {node.agent}"
        case HangupNode():
            return node.reason
        case _:
            return ""


def _edges(node: Node) -> list[tuple[str, str]]:
    """(target, label) pairs, in the order the node tries them."""
    match node:
        case MenuNode():
            pairs = [(option.next, f"{digit}: {option.label}") for digit, option in node.options.items()]
            return pairs + ([(node.default, "default")] if node.default else [])
        case BranchNode():
            return [(rule.next, f"if {describe_test(rule.test)}") for rule in node.rules] + [(node.otherwise, "else")]
        case GatherNode():
            return [(t, label) for t, label in ((node.next, "next"), (node.on_timeout, "timeout"),
                                                (node.on_no_match, "no match")) if t]
        case HttpNode():
            return [(t, label) for t, label in ((node.next, "ok"), (node.on_error, "error")) if t]
        case TransferNode():
            return [(node.on_failure, "failed")] if node.on_failure else []
        case AgentNode():
            return [(node.next, "after agent")] if node.next else []
        case SayNode() | PlayNode() | SetNode() | GotoNode():
            return [(node.next, "")]
        case _:
            return []


def flow_graph(flow: Flow) -> dict[str, Any]:
    nodes = [{"id": node_id, "kind": type(node).__name__.removesuffix("Node").lower(), "label": _label(node)}
             for node_id, node in flow.nodes.items()]
    edges = [{"from": node_id, "to": target, "label": label}
             for node_id, node in flow.nodes.items() for target, label in _edges(node)]
    return {"name": flow.name, "file": flow.file, "start": flow.start, "language": flow.language,
            "languages": list(flow.languages), "nodes": nodes, "edges": edges,
            "warnings": [{"file": w.position.file, "line": w.position.line, "column": w.position.column,
                          "reason": w.reason} for w in flow.warnings]}


__all__ = ["describe_test", "flow_graph"]
