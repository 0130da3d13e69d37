"""The demo line's SQLite orders and the lookup_order tool over it."""

import sqlite3

import pytest

from callbridge.agent.demo_orders import ORDERS_DB_KEY, OrdersDb, lookup_order, normalise_order_id
from callbridge.agent.tools import ToolContext, ToolRegistry, get_tool_spec


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "orders.sqlite3"


@pytest.fixture
def db(db_path) -> OrdersDb:
    return OrdersDb(db_path)


def rows(path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT order_id, status, detail FROM orders ORDER BY order_id").fetchall()


def test_creates_a_real_seeded_file(db, db_path) -> None:
    assert db_path.is_file()
    assert rows(db_path) == [
        ("1234", "processing", "It ships tomorrow."),
        ("4572", "shipped", "It is arriving on Thursday."),
        ("9981", "delivered", "It was delivered on Monday."),
    ]
    with sqlite3.connect(db_path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(orders)")]
    assert columns == ["order_id", "status", "detail", "updated_at", "customer_phone"]


def test_reopen_is_idempotent_and_keeps_edits(db, db_path) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE orders SET status = 'delivered' WHERE order_id = '4572'")
    OrdersDb(db_path)
    reopened = OrdersDb(db_path)
    assert len(rows(db_path)) == 3
    assert reopened.lookup("4572")["status"] == "delivered"


def test_lookup_found_and_missing(db) -> None:
    row = db.lookup("1234")
    assert row["order_id"] == "1234"
    assert row["status"] == "processing"
    assert row["detail"] == "It ships tomorrow."
    assert row["updated_at"]  # ISO timestamp set when seeded
    assert row["customer_phone"].startswith("+1555555")
    assert db.lookup("0000") is None


@pytest.mark.parametrize(
    ("spoken", "digits"),
    [("order #4572", "4572"), ("45 72", "4572"), ("4572", "4572"), ("number nine nine", "")],
)
def test_normalise_order_id(spoken, digits) -> None:
    assert normalise_order_id(spoken) == digits


def test_lookup_order_tool_spec() -> None:
    spec = get_tool_spec(lookup_order)
    assert spec.name == "lookup_order"
    assert spec.timeout == 3
    assert spec.description == "Look up the status of a customer's order by its number."
    assert spec.context_param == "ctx"
    assert spec.parameters_schema["required"] == ["order_id"]
    assert spec.parameters_schema["properties"]["order_id"]["type"] == "string"
    assert spec.parameters_schema["properties"]["order_id"]["description"]


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry([lookup_order])


@pytest.fixture
def ctx(db) -> ToolContext:
    return ToolContext(call_id="call-7", caller="+15555550101", extras={ORDERS_DB_KEY: db})


async def test_tool_end_to_end_found(registry, ctx) -> None:
    result = await registry.invoke("lookup_order", '{"order_id": "order #4572"}', ctx)
    assert result.ok
    assert result.value == {
        "found": True,
        "order_id": "4572",
        "status": "shipped",
        "detail": "It is arriving on Thursday.",
    }


async def test_tool_end_to_end_numeric_argument_and_missing_order(registry, ctx) -> None:
    assert (await registry.invoke("lookup_order", {"order_id": 9981}, ctx)).value["status"] == "delivered"
    result = await registry.invoke("lookup_order", {"order_id": "5555"}, ctx)
    assert result.ok
    assert result.value == {"found": False, "order_id": "5555"}


async def test_tool_reports_unusable_input_and_missing_db(registry, ctx) -> None:
    result = await registry.invoke("lookup_order", {"order_id": "I don't know"}, ctx)
    assert not result.ok and result.error.startswith("ValueError:")

    bare = ToolContext(call_id="call-8")
    result = await registry.invoke("lookup_order", {"order_id": "4572"}, bare)
    assert not result.ok
    assert "RuntimeError" in result.error and ORDERS_DB_KEY in result.error
