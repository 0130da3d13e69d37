"""Reading one YAML mapping's fields with errors a flow author can act on.

Each accessor checks presence and type and raises a located
:class:`SourceError` naming the field; unknown fields are rejected up front
(with a "did you mean" hint), because a typo such as ``nxt:`` would otherwise
surface as a confusing "missing next".
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, Literal, overload

from ..yamlsource import Located, Path_, SourceError
from .template import TemplateError, check, is_variable_name

def describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a yes/no value; quote it if you meant text)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return repr(value)


class Fields:
    def __init__(self, source: Located, path: Path_, value: Any, what: str, allowed: Iterable[str],
                 templates: list[tuple[str, Path_]] | None = None) -> None:
        self.source = source
        # Every template seen, with where: the loader warns about unknown names.
        self.templates = templates if templates is not None else []
        self.path = tuple(path)
        self.what = what
        if not isinstance(value, dict):
            raise source.error(self.path, f"{what} must be a mapping of fields, got {describe(value)}")
        self.values: dict[Any, Any] = value
        allowed = list(allowed)
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                suggestion = f" (did you mean {hint[0]!r}?)" if hint else f" (allowed: {', '.join(allowed)})"
                raise self.error(key, f"unknown field {key!r} in {what}{suggestion}")

    def at(self, name: str) -> Path_:
        return self.path + (name,)

    def error(self, name: str, reason: str) -> SourceError:
        return self.source.error(self.at(name), reason)

    def whole_error(self, reason: str) -> SourceError:
        return self.source.error(self.path, reason)

    def has(self, name: str) -> bool:
        return self.values.get(name) is not None

    def raw(self, name: str, *, required: bool = False) -> Any:
        value = self.values.get(name)
        if value is None and required:
            raise self.whole_error(f"{self.what} is missing required field {name!r}")
        return value

    @overload
    def string(self, name: str, *, required: Literal[True], default: str | None = None) -> str: ...

    @overload
    def string(self, name: str, *, required: bool = False, default: str) -> str: ...

    @overload
    def string(self, name: str, *, required: bool = False, default: None = None) -> str | None: ...

    def string(self, name: str, *, required: bool = False, default: str | None = None) -> str | None:
        value = self.raw(name, required=required)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.error(name, f"{name} must be text, got {describe(value)}")
        return str(value)

    @overload
    def template(self, name: str, *, required: Literal[True], default: str | None = None) -> str: ...

    @overload
    def template(self, name: str, *, required: bool = False, default: str) -> str: ...

    @overload
    def template(self, name: str, *, required: bool = False, default: None = None) -> str | None: ...

    def template(self, name: str, *, required: bool = False, default: str | None = None) -> str | None:
        value = self.string(name, required=required, default=default)
        if value is not None:
            self.check_template(name, value)
        return value

    def check_template(self, name: str, text: str, path: Path_ | None = None) -> None:
        where = path or self.at(name)
        try:
            check(text)
        except TemplateError as exc:
            raise self.source.error(where, f"bad template in {name}: {exc}") from None
        self.templates.append((text, where))

    @overload
    def variable_name(self, name: str, *, required: Literal[True]) -> str: ...

    @overload
    def variable_name(self, name: str, *, required: bool = False) -> str | None: ...

    def variable_name(self, name: str, *, required: bool = False) -> str | None:
        value = self.string(name, required=required)
        if value is not None and not is_variable_name(value):
            raise self.error(name, f"{name}: {value!r} is not a variable name (letters, digits, _ - and dots)")
        return value

    def number(self, name: str, *, default: float, minimum: float = 0.0, maximum: float = 3600.0) -> float:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(name, f"{name} must be a number of seconds, got {describe(value)}")
        if not minimum <= value <= maximum:
            raise self.error(name, f"{name} must be between {minimum:g} and {maximum:g}, got {value}")
        return float(value)

    @overload
    def integer(self, name: str, *, default: int, minimum: int = 0, maximum: int = 1000) -> int: ...

    @overload
    def integer(self, name: str, *, default: None, minimum: int = 0, maximum: int = 1000) -> int | None: ...

    def integer(self, name: str, *, default: int | None, minimum: int = 0, maximum: int = 1000) -> int | None:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"{name} must be a whole number, got {describe(value)}")
        if not minimum <= value <= maximum:
            raise self.error(name, f"{name} must be between {minimum} and {maximum}, got {value}")
        return value

    def boolean(self, name: str, *, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(name, f"{name} must be true or false, got {describe(value)}")
        return value

    def choice(self, name: str, options: tuple[str, ...], *, default: str) -> str:
        value = self.string(name, default=default)
        assert value is not None
        if value.lower() not in options:
            raise self.error(name, f"{name} must be one of {', '.join(options)}, got {value!r}")
        return value.lower()

    def mapping(self, name: str, *, required: bool = False) -> dict[Any, Any]:
        value = self.raw(name, required=required)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(name, f"{name} must be a mapping, got {describe(value)}")
        return value

    def string_list(self, name: str) -> list[str]:
        value = self.raw(name)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise self.error(name, f"{name} must be a list of texts, got {describe(value)}")
        for index, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise self.source.error(self.at(name) + (index,), f"{name} items must be text, got {describe(item)}")
        return [str(item) for item in value]

    def template_map(self, name: str, *, required: bool = False) -> dict[str, str]:
        """A mapping of variable name -> template (``set``, ``context``, headers)."""
        result: dict[str, str] = {}
        for key, value in self.mapping(name, required=required).items():
            path = self.at(name) + (key,)
            if isinstance(value, bool) or not isinstance(value, (str, int, float)) and value is not None:
                raise self.source.error(path, f"{name}.{key} must be text, got {describe(value)}")
            text = "" if value is None else str(value)
            self.check_template(f"{name}.{key}", text, path)
            result[str(key)] = text
        return result
