"""Loading a flow file: YAML in, a checked :class:`Flow` out.

The file format is documented for authors in ``docs/FLOWS.md``. In short::

    flow: support            # a name (default: the file name)
    start: welcome           # the first node
    language: en             # default language (default: en)
    languages: [en, es]      # languages callers may get (default: [language])
    voices: {en: amy}        # optional TTS voice per language
    vars: {team: sales}      # initial variables (templates allowed)
    nodes:
      welcome: {type: say, text: "Hello", next: bye}
      bye: {type: hangup}

Node types: say, play, gather, menu, set, branch, http, transfer, agent,
hangup, goto. Every mistake raises a :class:`SourceError` at the offending
line; unreachable nodes and variables nothing sets are warnings.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from ..yamlsource import Located, Position, SourceError, load_yaml_text, read_source_text
from .fields import Fields
from .model import Flow, FlowWarning
from .loadcontext import LoadContext
from .parse_nodes import parse_node
from .template import template_names

TOP_FIELDS = ("flow", "description", "start", "language", "languages", "voices", "vars", "nodes")
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})?\Z")
_NODE_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


def load_flow(path: str | Path, *, agents: set[str] | None, trunks: set[str] | None,
              settings: Mapping[str, object] | None = None) -> Flow:
    path = Path(path)
    text = read_source_text(path, "flow file")
    return load_flow_text(text, str(path), agents=agents, trunks=trunks, settings=settings, base_dir=path.parent)


def load_flow_text(text: str, file: str, *, agents: set[str] | None = None, trunks: set[str] | None = None,
                   settings: Mapping[str, object] | None = None, base_dir: Path | None = None) -> Flow:
    """``agents``/``trunks`` of ``None`` skip those checks; ``settings=None``
    also skips the warning about variables nothing sets."""
    source = _load_yaml(text, file)
    top = Fields(source, (), source.value, "flow file", TOP_FIELDS)
    language = _language_code(top, top.string("language", default="en") or "en", "language")
    languages = _languages(top, language)
    ctx = LoadContext(source, base_dir if base_dir is not None else Path(file).parent, language, languages,
                      agents, trunks, {str(k): "" if v is None else str(v) for k, v in (settings or {}).items()})
    voices = _voices(top, languages)
    start = top.string("start", required=True)
    variables = ctx.assignments(top, "vars")
    if "language" in variables:
        raise source.error(("vars", "language"), "set the default language with the top-level language: field")
    nodes_value = top.mapping("nodes", required=True)
    if not nodes_value:
        raise top.error("nodes", "a flow needs at least one node")
    nodes = {}
    for node_id, value in nodes_value.items():
        if not isinstance(node_id, str) or not _NODE_ID.match(node_id):
            raise source.error(("nodes", node_id), f"node id {node_id!r} must start with a letter and use "
                                                   "letters, digits, _ and -")
        nodes[node_id] = parse_node(ctx, node_id, value)
    if start not in nodes:
        raise top.error("start", f"start node {start!r} is not defined in nodes{_did_you_mean(start, nodes)}")
    for target, where in ctx.references:
        if target not in nodes:
            raise source.error(where, f"unknown node {target!r}{_did_you_mean(target, nodes)}")
    flow = Flow(str(top.string("flow") or Path(file).stem), start, nodes, language, languages, voices,
                variables, ctx.settings, file)
    flow.warnings.extend(_unreachable(source, flow))
    if settings is not None:
        flow.warnings.extend(_unknown_names(ctx))
    flow.warnings.sort(key=lambda w: (w.position.line, w.position.column))
    return flow


def _did_you_mean(name: str, known) -> str:
    hint = difflib.get_close_matches(str(name), list(known), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def _language_code(top: Fields, code: str, field: str) -> str:
    if not _LANGUAGE.match(code):
        raise top.error(field, f"{code!r} is not a language code like en or es-MX")
    return code


def _languages(top: Fields, language: str) -> tuple[str, ...]:
    codes = top.string_list("languages") or [language]
    for code in codes:
        _language_code(top, code, "languages")
    if language not in codes:
        raise top.error("languages", f"languages must include the default language {language!r}")
    return tuple(dict.fromkeys(codes))


def _voices(top: Fields, languages: tuple[str, ...]) -> dict[str, str]:
    voices = {}
    for code, voice in top.mapping("voices").items():
        if code not in languages:
            raise top.source.error(("voices", code), f"voices: {code!r} is not one of the flow's languages")
        voices[str(code)] = str(voice)
    return voices


def _unreachable(source: Located, flow: Flow) -> list[FlowWarning]:
    seen, pending = {flow.start}, [flow.start]
    while pending:
        for target in flow.nodes[pending.pop()].successors():
            if target not in seen:
                seen.add(target)
                pending.append(target)
    return [FlowWarning(source.position(("nodes", node_id)), f"node {node_id!r} is never reached from {flow.start!r}")
            for node_id in flow.nodes if node_id not in seen]


def _unknown_names(ctx: LoadContext) -> list[FlowWarning]:
    warnings, reported = [], set()
    for template, where in ctx.templates:
        for name in sorted(template_names(template)):
            if not ctx.is_known_name(name) and (name, where) not in reported:
                reported.add((name, where))
                warnings.append(FlowWarning(ctx.source.position(where),
                                            f"nothing sets {{{{ {name} }}}}: it will be empty"))
    return warnings


def _load_yaml(text: str, file: str) -> Located:
    try:
        return load_yaml_text(text, file)
    except SourceError as exc:
        if exc.reason.startswith("duplicate key"):
            first = _first_definition(text, exc.position)
            if first is not None:
                raise SourceError(exc.position, f"duplicate node id {first[0]!r} "
                                                f"(first defined at line {first[1]})") from None
        raise


def _first_definition(text: str, position: Position) -> tuple[str, int] | None:
    """If ``position`` is a repeated key under ``nodes:``, its id and first line."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        return None
    for key, value in root.value:
        if key.value != "nodes" or not isinstance(value, yaml.MappingNode):
            continue
        keys = [k for k, _ in value.value]
        for node in keys:
            if (node.start_mark.line + 1, node.start_mark.column + 1) == (position.line, position.column):
                first = next(k for k in keys if k.value == node.value)
                return node.value, first.start_mark.line + 1
    return None
