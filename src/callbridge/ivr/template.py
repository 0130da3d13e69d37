"""``{{ name }}`` substitution for flow texts, URLs and webhook bodies.

Deliberately tiny: a placeholder holds one dotted variable name and nothing
else. There are no expressions, filters, attribute access or calls, and the
lookup is a plain dictionary ``get``, so a flow file (or a caller-supplied SIP
header that ends up in a variable) can never run code. Values are inserted
verbatim and never rendered again, so ``{{`` inside a value stays text.

A missing variable renders as the empty string; the loader warns at load time
about names that nothing in the flow or the service could ever set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# Segments start with a letter (first) or a letter/digit (later ones), so
# Python-ish tricks such as ``__class__`` are not even valid names.
NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_-]*(?:\.[A-Za-z0-9][A-Za-z0-9_-]*)*"
_NAME = re.compile(NAME_PATTERN + r"\Z")
_TAG = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


class TemplateError(ValueError):
    """The template text is not valid ``{{ name }}`` syntax."""


@dataclass(frozen=True, slots=True)
class _Literal:
    text: str


@dataclass(frozen=True, slots=True)
class _Placeholder:
    name: str


def is_variable_name(name: str) -> bool:
    return bool(_NAME.match(name))


def _parse(template: str) -> list[_Literal | _Placeholder]:
    parts: list[_Literal | _Placeholder] = []
    position = 0
    for match in _TAG.finditer(template):
        if match.start() > position:
            parts.append(_Literal(template[position:match.start()]))
        name = match.group(1).strip()
        if not name:
            raise TemplateError("empty placeholder '{{ }}'")
        if not _NAME.match(name):
            raise TemplateError(
                f"placeholder '{{{{{match.group(1)}}}}}' must be a variable name "
                "such as {{ caller.number }} (no expressions, calls or attributes)")
        parts.append(_Placeholder(name))
        position = match.end()
    rest = template[position:]
    if "{{" in rest:
        raise TemplateError("'{{' is not closed with '}}'")
    if rest:
        parts.append(_Literal(rest))
    return parts


def check(template: str) -> None:
    """Raise :class:`TemplateError` if ``template`` is not valid."""
    _parse(template)


def template_names(template: str) -> set[str]:
    """The variable names a template uses."""
    return {part.name for part in _parse(template) if isinstance(part, _Placeholder)}


def has_placeholders(template: str) -> bool:
    return bool(template_names(template))


def render(template: str, variables: Mapping[str, object]) -> str:
    """Substitute each ``{{ name }}``; missing names (and ``None``) give ''."""
    out: list[str] = []
    for part in _parse(template):
        if isinstance(part, _Literal):
            out.append(part.text)
        else:
            value = variables.get(part.name)
            out.append("" if value is None else str(value))
    return "".join(out)
