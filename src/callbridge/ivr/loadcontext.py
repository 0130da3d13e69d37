"""State shared by the node parsers while one flow file loads.

Node targets and variable names can only be checked once every node is
parsed, so parsers note them here and :mod:`callbridge.ivr.loader` checks
them at the end.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

from ..yamlsource import Located, Path_
from .fields import Fields, describe
from .nodes import Text
from .template import has_placeholders, is_variable_name

# Variables every call has; only `language` may be changed by a flow.
BUILTIN_NAMES = frozenset({"caller.number", "caller.name", "called", "trunk", "call_id", "language"})
SIP_PREFIX = "sip."


@dataclass
class LoadContext:
    source: Located
    base_dir: Path
    language: str
    languages: tuple[str, ...]
    agents: set[str] | None
    trunks: set[str] | None
    settings: dict[str, str]
    references: list[tuple[str, Path_]] = field(default_factory=list)  # (node id, where)
    templates: list[tuple[str, Path_]] = field(default_factory=list)
    assigned: set[str] = field(default_factory=set)
    assigned_prefixes: set[str] = field(default_factory=set)

    def fields(self, path: Path_, value: Any, what: str, allowed: Iterable[str]) -> Fields:
        return Fields(self.source, path, value, what, allowed, self.templates)

    @overload
    def ref(self, fields: Fields, name: str, *, required: Literal[True]) -> str: ...

    @overload
    def ref(self, fields: Fields, name: str, *, required: bool = False) -> str | None: ...

    def ref(self, fields: Fields, name: str, *, required: bool = False) -> str | None:
        """A node id a field points at; checked once all nodes are known."""
        target = fields.string(name, required=required)
        if target is not None:
            self.references.append((target, fields.at(name)))
        return target

    @overload
    def text(self, fields: Fields, name: str, *, required: Literal[True]) -> Text: ...

    @overload
    def text(self, fields: Fields, name: str, *, required: bool = False) -> Text | None: ...

    def text(self, fields: Fields, name: str, *, required: bool = False) -> Text | None:
        """A prompt: a plain text or a mapping language -> text."""
        value = fields.raw(name)
        what = f"{fields.what} {name}"
        if value is None or value == "" or value == {}:
            if required:
                raise fields.whole_error(f"{fields.what} has no {name} (nothing to say)")
            return None
        if isinstance(value, dict):
            return Text(by_language=self._per_language(fields, name, value, what))
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise fields.error(name, f"{name} must be text or a mapping language -> text, got {describe(value)}")
        fields.check_template(name, str(value))
        return Text(neutral=str(value))

    def _per_language(self, fields: Fields, name: str, value: dict, what: str) -> dict[str, str]:
        texts: dict[str, str] = {}
        for language, text in value.items():
            path = fields.at(name) + (language,)
            if language not in self.languages:
                raise self.source.error(
                    path, f"{what}: language {language!r} is not one of the flow's languages "
                          f"({', '.join(self.languages)}); add it to languages:")
            if isinstance(text, bool) or not isinstance(text, (str, int, float)) or str(text).strip() == "":
                raise self.source.error(path, f"{what}: the {language!r} text must be non-empty text")
            fields.check_template(f"{name}.{language}", str(text), path)
            texts[language] = str(text)
        if self.language not in texts:
            raise fields.error(name, f"{what} has no {self.language!r} text (the flow's default language)")
        return texts

    def assignments(self, fields: Fields, name: str, *, required: bool = False) -> dict[str, str]:
        """A ``name: template`` mapping of variables to set, checked for writability."""
        values = fields.template_map(name, required=required)
        if required and not values:
            raise fields.error(name, f"{fields.what} {name} sets no variables")
        for variable, template in values.items():
            self.assignable(fields.at(name) + (variable,), variable, template)
        return values

    def assignable(self, path: Path_, variable: str, literal: str | None = None) -> None:
        if not is_variable_name(variable):
            raise self.source.error(path, f"{variable!r} is not a variable name (letters, digits, _ - and dots)")
        if variable in self.settings:
            raise self.source.error(path, f"{variable!r} is a service setting and cannot be changed")
        if variable != "language" and (variable in BUILTIN_NAMES or variable.startswith(SIP_PREFIX)):
            raise self.source.error(path, f"{variable!r} is a built-in variable and cannot be changed")
        if (variable == "language" and literal is not None and not has_placeholders(literal)
                and literal not in self.languages):
            raise self.source.error(
                path, f"language {literal!r} is not one of the flow's languages ({', '.join(self.languages)})")
        self.assigned.add(variable)

    def assignable_prefix(self, path: Path_, prefix: str) -> None:
        """``prefix`` will receive ``prefix.<field>`` variables (a webhook reply)."""
        if prefix in ("caller", "sip") or prefix in BUILTIN_NAMES or prefix in self.settings:
            raise self.source.error(path, f"{prefix!r} is a built-in or setting name; choose another prefix")
        self.assigned_prefixes.add(prefix)

    def is_known_name(self, name: str) -> bool:
        return (name in BUILTIN_NAMES or name.startswith(SIP_PREFIX) or name in self.settings
                or name in self.assigned
                or any(name.startswith(prefix + ".") for prefix in self.assigned_prefixes))
