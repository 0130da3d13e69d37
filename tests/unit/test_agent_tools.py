"""The @tool decorator's schemas and the registry's never-raising invoke."""

import asyncio
import json
from typing import Literal, Optional

import pytest

from callbridge.agent.tools import (
    ToolContext,
    ToolRegistry,
    ToolResult,
    ToolSpec,
    get_tool_spec,
    parse_docstring,
    tool,
)


@tool
async def book_table(
    ctx: ToolContext,
    guests: int,
    day: Literal["today", "tomorrow"],
    seating: Literal["inside", "terrace"] | None,
    note: Optional[str] = None,
    tags: list[str] = (),  # type: ignore[assignment]  # noqa: B006 - not JSON, so not published as a default
    high_chair: bool = False,
    budget: float = 50.0,
) -> dict:
    """Book a table at the restaurant.

    Longer prose the model does not need.

    Args:
        guests: How many people are coming.
        day: Which day to book.
        seating (str): Where to sit; the caller may
            not mind.

        note: Anything the host should know.
    Returns:
        The booking.
    """
    return {"guests": guests, "day": day, "seating": seating, "note": note, "caller": ctx.caller}


@tool(timeout=0.05, name="slow_thing")
async def sleepy(seconds: float) -> str:
    """Sleep for a while."""
    await asyncio.sleep(seconds)
    return "awake"


NAP_S = 0.2  # long against timer slop, short for the suite


@tool
async def nap() -> str:
    """Sleep a known time."""
    await asyncio.sleep(NAP_S)
    return "rested"


@tool
async def explode(reason: str) -> None:
    """Always fails."""
    raise LookupError(reason)


@tool
async def add(a: int, b: int = 1) -> int:
    """Add two integers."""
    return a + b


@tool
async def pick(colour: Literal["red", "green"], flags: list[bool] | None = None) -> str:
    """Pick a colour."""
    return f"{colour}:{flags}"


def params(fn) -> dict:
    return get_tool_spec(fn).parameters_schema


def test_spec_fields() -> None:
    spec = get_tool_spec(book_table)
    assert isinstance(spec, ToolSpec)
    assert spec.name == "book_table"
    assert spec.description == "Book a table at the restaurant."
    assert spec.timeout == 5.0
    assert spec.function is book_table
    assert spec.context_param == "ctx"


def test_schema_for_a_rich_signature() -> None:
    schema = params(book_table)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert "ctx" not in schema["properties"]  # injected, never shown to the model
    assert schema["required"] == ["guests", "day"]
    props = schema["properties"]
    assert props["guests"] == {"type": "integer", "description": "How many people are coming."}
    assert props["day"] == {"type": "string", "enum": ["today", "tomorrow"], "description": "Which day to book."}
    assert props["seating"] == {
        "type": ["string", "null"],
        "enum": ["inside", "terrace", None],
        "description": "Where to sit; the caller may not mind.",
    }
    assert props["note"] == {
        "type": ["string", "null"],
        "description": "Anything the host should know.",
        "default": None,
    }
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["high_chair"] == {"type": "boolean", "default": False}
    assert props["budget"] == {"type": "number", "default": 50.0}


def test_bare_and_configured_decorator_forms() -> None:
    spec = get_tool_spec(sleepy)
    assert spec.name == "slow_thing"
    assert spec.timeout == 0.05
    assert get_tool_spec(add).context_param is None
    assert params(add)["required"] == ["a"]
    assert params(add)["properties"]["b"] == {"type": "integer", "default": 1}


def test_nested_list_and_int_literal() -> None:
    @tool
    async def grid(rows: list[list[int]], level: Literal[1, 2, 3]) -> None:
        """Grid."""

    props = params(grid)["properties"]
    assert props["rows"] == {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}
    assert props["level"] == {"type": "integer", "enum": [1, 2, 3]}


def test_tool_without_docstring_or_parameters() -> None:
    @tool
    async def ping() -> str:
        return "pong"

    spec = get_tool_spec(ping)
    assert spec.description == ""
    assert spec.parameters_schema["properties"] == {}
    assert spec.parameters_schema["required"] == []


def test_decorated_function_stays_callable() -> None:
    assert asyncio.run(add(2, 3)) == 5


@pytest.mark.parametrize(
    "annotation",
    [dict, dict[str, int], list, tuple[int, int], int | str, bytes, object, "Literal['a', 1]"],
)
def test_unsupported_annotations_are_rejected(annotation) -> None:
    async def fn(value) -> None:
        """Doc."""

    fn.__annotations__["value"] = eval(annotation) if isinstance(annotation, str) else annotation
    with pytest.raises(TypeError, match="parameter 'value'"):
        tool(fn)


def test_missing_annotation_is_rejected() -> None:
    async def fn(value) -> None:
        """Doc."""

    with pytest.raises(TypeError, match="needs a type annotation"):
        tool(fn)


def test_sync_function_and_var_args_are_rejected() -> None:
    def sync(a: int) -> None:
        """Doc."""

    async def star(*values: int) -> None:
        """Doc."""

    with pytest.raises(TypeError, match="async def"):
        tool(sync)  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(TypeError, match=r"\*args"):
        tool(star)


def test_context_must_be_first() -> None:
    async def fn(a: int, ctx: ToolContext) -> None:
        """Doc."""

    with pytest.raises(TypeError, match="must come first"):
        tool(fn)


def test_bad_name_and_timeout_are_rejected() -> None:
    async def fn() -> None:
        """Doc."""

    with pytest.raises(ValueError, match="name"):
        tool(name="has spaces")(fn)
    with pytest.raises(ValueError, match="timeout"):
        tool(timeout=0)(fn)


def test_parse_docstring_sections() -> None:
    summary, args = parse_docstring(
        """Do a thing
        across two lines.

        Arguments:
            first (int, optional): One.
            *rest: Everything else.
        Raises:
            second: not an argument.
        """
    )
    assert summary == "Do a thing across two lines."
    assert args == {"first": "One.", "rest": "Everything else."}


def test_registry_schemas_use_chat_completions_format() -> None:
    registry = ToolRegistry([add, pick])
    schemas = registry.schemas()
    assert [s["type"] for s in schemas] == ["function", "function"]
    assert schemas[0]["function"] == {
        "name": "add",
        "description": "Add two integers.",
        "parameters": params(add),
    }
    json.dumps(schemas)  # must be serialisable as-is
    schemas[0]["function"]["parameters"]["properties"].clear()
    assert params(add)["properties"]  # callers get copies


def test_registry_rejects_duplicates_and_non_tools() -> None:
    registry = ToolRegistry([add])
    assert "add" in registry and len(registry) == 1
    with pytest.raises(ValueError, match="already registered"):
        registry.register(add)

    async def plain() -> None:
        pass

    with pytest.raises(TypeError, match="not a tool"):
        registry.register(plain)


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry([book_table, sleepy, explode, add, pick])


@pytest.fixture
def ctx() -> ToolContext:
    return ToolContext(call_id="call-1", caller="+15555550100", language="en")


async def test_invoke_success_injects_context(registry, ctx) -> None:
    result = await registry.invoke("book_table", {"guests": 2, "day": "today"}, ctx)
    assert isinstance(result, ToolResult)
    assert result.ok and result.error is None
    assert result.value == {"guests": 2, "day": "today", "seating": None, "note": None, "caller": "+15555550100"}


async def test_invoke_duration_is_the_tool_run_in_milliseconds(ctx) -> None:
    # A tool that sleeps NAP_S: seconds (0.2), microseconds (200000) or a clock
    # stopped before the await (~0) all fall outside these bounds.
    result = await ToolRegistry([nap]).invoke("nap", {}, ctx)
    assert result.ok and result.value == "rested"
    assert NAP_S * 1000 - 1 <= result.duration_ms < NAP_S * 1000 + 1500, result.duration_ms


async def test_invoke_accepts_json_string(registry, ctx) -> None:
    result = await registry.invoke("add", '{"a": 40, "b": 2}', ctx)
    assert result.ok and result.value == 42
    assert result.to_model_text() == "42"


async def test_invoke_coerces_forgivable_types(registry, ctx) -> None:
    assert (await registry.invoke("add", {"a": "4572", "b": 3.0}, ctx)).value == 4575
    result = await registry.invoke("pick", {"colour": "red", "flags": ["true", 0]}, ctx)
    assert result.value == "red:[True, False]"
    result = await registry.invoke("book_table", {"guests": "3", "day": "tomorrow", "budget": "12.5"}, ctx)
    assert result.ok and result.value["guests"] == 3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"a": "four"}, "argument 'a': expected integer"),
        ({"a": True}, "expected integer"),
        ({"a": 1.5}, "expected integer"),
        ({"b": 1}, "missing required argument(s): a"),
        ({"a": 1, "c": 2}, "unexpected argument(s): c"),
        ("[1, 2]", "must be a JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
async def test_invoke_bad_arguments_are_error_results(registry, ctx, arguments, message) -> None:
    result = await registry.invoke("add", arguments, ctx)
    assert not result.ok
    assert result.value is None
    assert message in result.error


async def test_invoke_enum_violation(registry, ctx) -> None:
    result = await registry.invoke("pick", {"colour": "blue"}, ctx)
    assert not result.ok
    assert "'blue' is not one of" in result.error and '"red"' in result.error


async def test_invoke_empty_arguments_for_parameterless_tool(ctx) -> None:
    @tool
    async def ping() -> str:
        """Ping."""
        return "pong"

    registry = ToolRegistry([ping])
    empties: tuple[str | None | dict, ...] = ("", None, {})
    for empty in empties:
        assert (await registry.invoke("ping", empty, ctx)).value == "pong"


async def test_invoke_unknown_tool(registry, ctx) -> None:
    result = await registry.invoke("launch_rocket", {}, ctx)
    assert not result.ok
    assert "unknown tool 'launch_rocket'" in result.error
    assert "add" in result.error  # tells the model what it can call instead


async def test_invoke_timeout(registry, ctx) -> None:
    result = await registry.invoke("slow_thing", {"seconds": 5}, ctx)
    assert not result.ok
    assert result.error == "tool 'slow_thing' timed out after 0.05s"
    assert 50 - 1 <= result.duration_ms < 2000  # waited the tool's 0.05 s timeout, not its 5 s
    assert (await registry.invoke("slow_thing", {"seconds": 0}, ctx)).value == "awake"


async def test_invoke_exception_becomes_error_result(registry, ctx) -> None:
    result = await registry.invoke("explode", {"reason": "no such table"}, ctx)
    assert result == ToolResult(False, None, "LookupError: no such table", result.duration_ms)
    assert json.loads(result.to_model_text()) == {"error": "LookupError: no such table"}


async def test_invoke_exception_without_message(ctx) -> None:
    @tool
    async def bare_failure() -> None:
        """Fails quietly."""
        raise RuntimeError

    result = await ToolRegistry([bare_failure]).invoke("bare_failure", {}, ctx)
    assert not result.ok and result.error == "RuntimeError"


async def test_invoke_without_required_context(registry) -> None:
    result = await registry.invoke("book_table", {"guests": 2, "day": "today"}, None)
    assert not result.ok
    assert "needs a ToolContext" in result.error
