"""Tools the voice agent's language model can call.

A tool is a plain typed ``async def`` with a Google-style docstring. The
``@tool`` decorator reads the signature and docstring once, at import time,
into a :class:`ToolSpec` whose JSON schema is what the model sees. The
:class:`ToolRegistry` runs calls from the model: it checks and coerces the
arguments against that schema, enforces the timeout and turns every failure
into a :class:`ToolResult` so the model can read the error and recover,
instead of the call crashing mid-conversation.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import math
import re
import time
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Literal, Union

DEFAULT_TIMEOUT_S = 5.0
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what chat-completions APIs accept
_SCALAR_TYPES: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_ARGS_HEADERS = {"args:", "arguments:", "parameters:"}
_ARG_LINE_RE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


@dataclass
class ToolContext:
    """Call-related handles the runtime passes to a tool; never shown to the model.

    A tool receives it by declaring a first parameter annotated ``ToolContext``.
    ``extras`` carries whatever services a deployment wires in (databases,
    HTTP clients); each tool documents the keys it reads.
    """

    call_id: str
    caller: str | None = None
    language: str = "en"
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters_schema: dict[str, Any]
    timeout: float
    function: Callable[..., Awaitable[Any]]
    context_param: str | None = None  # name of the injected ToolContext parameter

    def openai_schema(self) -> dict[str, Any]:
        """This tool in the chat-completions ``tools`` list format."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": copy.deepcopy(self.parameters_schema),
            },
        }


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    value: Any = None
    error: str | None = None
    duration_ms: float = 0.0

    def to_model_text(self) -> str:
        """The result as the JSON text handed back to the model."""
        if self.ok:
            return json.dumps(self.value, default=str, ensure_ascii=False)
        return json.dumps({"error": self.error}, ensure_ascii=False)


# --- decoration -------------------------------------------------------------


def tool(
    func: Callable[..., Awaitable[Any]] | None = None,
    /,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    name: str | None = None,
):
    """Mark an ``async def`` as a tool; usable as ``@tool`` or ``@tool(timeout=3)``.

    The function is returned unchanged (still directly callable) with its
    :class:`ToolSpec` attached as ``__tool_spec__``.
    """

    def decorate(fn: Callable[..., Awaitable[Any]]):
        fn.__tool_spec__ = build_spec(fn, timeout=timeout, name=name)  # type: ignore[attr-defined]
        return fn

    return decorate(func) if func is not None else decorate


def get_tool_spec(obj: Any) -> ToolSpec:
    if isinstance(obj, ToolSpec):
        return obj
    spec = getattr(obj, "__tool_spec__", None)
    if not isinstance(spec, ToolSpec):
        raise TypeError(f"{obj!r} is not a tool; decorate it with @tool")
    return spec


def build_spec(fn: Callable[..., Awaitable[Any]], *, timeout: float, name: str | None) -> ToolSpec:
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"tool {fn.__qualname__} must be an async def")
    tool_name = name or fn.__name__
    if not _NAME_RE.match(tool_name):
        raise ValueError(f"tool name {tool_name!r} must match {_NAME_RE.pattern}")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"tool {tool_name}: timeout must be a positive number, got {timeout!r}")

    summary, arg_docs = parse_docstring(inspect.getdoc(fn) or "")
    hints = typing.get_type_hints(fn)
    properties: dict[str, Any] = {}
    required: list[str] = []
    context_param = None
    for index, param in enumerate(inspect.signature(fn).parameters.values()):
        where = f"tool {tool_name}, parameter {param.name!r}"
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            raise TypeError(f"{where}: *args, **kwargs and positional-only parameters are not supported")
        if param.name not in hints:
            raise TypeError(f"{where}: needs a type annotation")
        hint = hints[param.name]
        if hint is ToolContext:
            if index != 0:
                raise TypeError(f"{where}: a ToolContext parameter must come first")
            context_param = param.name
            continue
        schema, nullable = _schema_for(hint, where)
        if param.name in arg_docs:
            schema["description"] = arg_docs[param.name]
        if param.default is not param.empty:
            if _is_json_scalar(param.default):
                schema["default"] = param.default
        elif not nullable:
            required.append(param.name)
        properties[param.name] = schema

    parameters = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    return ToolSpec(tool_name, summary, parameters, float(timeout), fn, context_param)


def _schema_for(hint: Any, where: str) -> tuple[dict[str, Any], bool]:
    """JSON schema for one annotation, and whether it admits None."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        others = [a for a in args if a is not type(None)]
        if len(others) != 1 or len(args) != 2:
            raise TypeError(f"{where}: only 'X | None' unions are supported, got {hint!r}")
        schema, _ = _schema_for(others[0], where)
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
        return schema, True
    if origin is Literal:
        kinds = {_SCALAR_TYPES.get(type(value)) for value in args}
        if None in kinds or len(kinds) != 1:
            raise TypeError(f"{where}: Literal values must all be str, all int, all float or all bool")
        return {"type": kinds.pop(), "enum": list(args)}, False
    if origin is list:
        if len(args) != 1:
            raise TypeError(f"{where}: list needs an item type, e.g. list[str]")
        items, _ = _schema_for(args[0], where)
        return {"type": "array", "items": items}, False
    if hint in _SCALAR_TYPES:
        return {"type": _SCALAR_TYPES[hint]}, False
    raise TypeError(
        f"{where}: unsupported annotation {hint!r}; use str, int, float, bool, Literal[...], list[X] or X | None"
    )


def _is_json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Summary (first paragraph) and per-argument descriptions of a Google-style docstring."""
    lines = inspect.cleandoc(doc).splitlines()
    summary_lines: list[str] = []
    for line in lines:
        if not line.strip():
            break
        summary_lines.append(line.strip())
    summary = " ".join(summary_lines)
    if summary.lower() in _ARGS_HEADERS:
        summary = ""

    args: dict[str, str] = {}
    in_args, current = False, None
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if not line.startswith((" ", "\t")):  # a top-level line starts or ends a section
            in_args, current = stripped.lower() in _ARGS_HEADERS, None
            continue
        if not in_args:
            continue
        match = _ARG_LINE_RE.match(stripped)
        entry_indent = len(line) - len(line.lstrip())
        if match and (current is None or entry_indent <= current[1]):
            current = (match.group(1).lstrip("*"), entry_indent)
            args[current[0]] = match.group(2).strip()
        elif current is not None:  # continuation of the previous argument
            args[current[0]] = f"{args[current[0]]} {stripped}".strip()
    return summary, args


# --- invocation -------------------------------------------------------------


class ArgumentError(ValueError):
    """The model's arguments do not fit the tool's schema."""


def coerce_arguments(schema: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """Check ``arguments`` against an object schema, converting forgivable mismatches.

    Models often send numbers as strings ("4572") or vice versa; converting
    those is kinder than bouncing the call back to the model.
    """
    properties = schema["properties"]
    unknown = sorted(set(arguments) - set(properties))
    if unknown:
        raise ArgumentError(f"unexpected argument(s): {', '.join(unknown)}")
    missing = [name for name in schema["required"] if name not in arguments]
    if missing:
        raise ArgumentError(f"missing required argument(s): {', '.join(missing)}")
    coerced = {}
    for name, prop in properties.items():
        if name in arguments:
            coerced[name] = _coerce(prop, arguments[name], name)
        elif "default" not in prop and _allows_null(prop):
            coerced[name] = None  # an omitted 'X | None' without a Python default
    return coerced


def _allows_null(prop: dict[str, Any]) -> bool:
    kind = prop["type"]
    return isinstance(kind, list) and "null" in kind


def _coerce(prop: dict[str, Any], value: Any, path: str) -> Any:
    kind = prop["type"]
    if isinstance(kind, list):
        if value is None:
            return None
        kind = kind[0]
    converted = _coerce_kind(kind, prop, value, path)
    if "enum" in prop and converted not in prop["enum"]:
        choices = ", ".join(json.dumps(v) for v in prop["enum"] if v is not None)
        raise ArgumentError(f"argument {path!r}: {value!r} is not one of {choices}")
    return converted


def _coerce_kind(kind: str, prop: dict[str, Any], value: Any, path: str) -> Any:
    def fail() -> ArgumentError:
        return ArgumentError(f"argument {path!r}: expected {kind}, got {value!r}")

    if kind == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise fail()
    if kind == "integer":
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
        raise fail()
    if kind == "number":
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise fail() from None
            if math.isfinite(number):
                return number
        raise fail()
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, (str, int)) else None
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise fail()
    if kind == "array":
        if isinstance(value, str):  # some models JSON-encode nested values
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise fail() from None
        if not isinstance(value, list):
            raise fail()
        return [_coerce(prop["items"], item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise fail()


def _parse_arguments(arguments: dict[str, Any] | str | None) -> dict[str, Any]:
    if arguments is None:
        return {}
    if isinstance(arguments, str):
        if not arguments.strip():  # models send "" for tools without parameters
            return {}
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise ArgumentError(f"arguments are not valid JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise ArgumentError(f"arguments must be a JSON object, got {type(arguments).__name__}")
    return arguments


class ToolRegistry:
    """The tools offered to the model on a call, and the one place they are run."""

    def __init__(self, tools: typing.Iterable[Any] = ()) -> None:
        self._specs: dict[str, ToolSpec] = {}
        for item in tools:
            self.register(item)

    def register(self, item: Any) -> ToolSpec:
        """Add a ``@tool`` function (or a ToolSpec); names must be unique."""
        spec = get_tool_spec(item)
        if spec.name in self._specs:
            raise ValueError(f"a tool named {spec.name!r} is already registered")
        self._specs[spec.name] = spec
        return spec

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def get(self, name: str) -> ToolSpec | None:
        return self._specs.get(name)

    def names(self) -> list[str]:
        return list(self._specs)

    def schemas(self) -> list[dict[str, Any]]:
        """Every tool in the chat-completions ``tools`` format."""
        return [spec.openai_schema() for spec in self._specs.values()]

    async def invoke(
        self, name: str, arguments: dict[str, Any] | str | None, context: ToolContext | None
    ) -> ToolResult:
        """Run one tool call from the model; every failure comes back as ``ok=False``.

        Only cancellation of the caller itself propagates, so a hung-up call
        can still stop its pending tools.
        """
        started = time.perf_counter()

        def result(ok: bool, value: Any = None, error: str | None = None) -> ToolResult:
            return ToolResult(ok, value, error, (time.perf_counter() - started) * 1000.0)

        spec = self._specs.get(name)
        if spec is None:
            known = ", ".join(self._specs) or "none"
            return result(False, error=f"unknown tool {name!r} (available: {known})")
        try:
            kwargs = coerce_arguments(spec.parameters_schema, _parse_arguments(arguments))
        except ArgumentError as exc:
            return result(False, error=str(exc))
        if spec.context_param is not None:
            if not isinstance(context, ToolContext):
                return result(False, error=f"tool {name!r} needs a ToolContext but none was given")
            kwargs[spec.context_param] = context
        try:
            value = await asyncio.wait_for(spec.function(**kwargs), spec.timeout)
        except TimeoutError:
            return result(False, error=f"tool {name!r} timed out after {spec.timeout:g}s")
        except Exception as exc:  # noqa: BLE001 - a tool's failure is reported to the model
            detail = str(exc)
            return result(False, error=f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__)
        return result(True, value)
