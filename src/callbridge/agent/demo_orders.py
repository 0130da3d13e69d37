"""The demo line's order database and the tool the agent uses to read it.

The data lives in a real SQLite file so the demo exercises the same shape of
work a production tool does: blocking I/O, kept off the event loop.

Wiring: the desk puts an :class:`OrdersDb` in
``ToolContext.extras["orders_db"]`` for every call that offers
:func:`lookup_order`; the server makes one only when some agent lists that
tool (the demo line's agent does).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from os import PathLike
from typing import Any

from ..offload import run_store
from .tools import ToolContext, tool

ORDERS_DB_KEY = "orders_db"  # ToolContext.extras key holding the OrdersDb

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    detail TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    customer_phone TEXT
)
"""

# (order_id, status, detail, customer_phone); 555-01xx numbers are reserved for fiction
SEED_ORDERS: tuple[tuple[str, str, str, str], ...] = (
    ("4572", "shipped", "It is arriving on Thursday.", "+15555550101"),
    ("1234", "processing", "It ships tomorrow.", "+15555550102"),
    ("9981", "delivered", "It was delivered on Monday.", "+15555550103"),
)


class OrdersDb:
    """A small orders table in a SQLite file, created and seeded on first open.

    Each operation opens its own connection, so the object can be used from
    any worker thread (``offload.run_store``) without sharing a connection.
    """

    def __init__(self, path: str | PathLike[str]) -> None:
        self.path = path
        with _transaction(self.path) as conn:
            conn.execute(_SCHEMA)
            (count,) = conn.execute("SELECT COUNT(*) FROM orders").fetchone()
            if count == 0:  # seed only a fresh table; never overwrite edited data
                now = datetime.now(UTC).isoformat(timespec="seconds")
                conn.executemany(
                    "INSERT INTO orders (order_id, status, detail, updated_at, customer_phone)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(oid, status, detail, now, phone) for oid, status, detail, phone in SEED_ORDERS],
                )

    def lookup(self, order_id: str) -> dict[str, Any] | None:
        """The order's row as a dict, or None when there is no such order."""
        with _transaction(self.path) as conn:
            row = conn.execute(
                "SELECT order_id, status, detail, updated_at, customer_phone FROM orders WHERE order_id = ?",
                (order_id,),
            ).fetchone()
        return dict(row) if row is not None else None


SPANISH = {"es": {
    "shipped": "enviado", "processing": "en preparación", "delivered": "entregado",
    "It is arriving on Thursday.": "Llega el jueves.", "It ships tomorrow.": "Se envía mañana.",
    "It was delivered on Monday.": "Se entregó el lunes.",
}}


@contextmanager
def _transaction(path: str | PathLike[str]) -> Iterator[sqlite3.Connection]:
    """A connection that commits (or rolls back on error) and is always closed."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    with closing(conn), conn:
        yield conn


def normalise_order_id(spoken: str) -> str:
    """Keep only the digits: callers and transcripts say "order #4572" or "45 72"."""
    return re.sub(r"\D", "", spoken)


@tool(timeout=3)
async def lookup_order(ctx: ToolContext, order_id: str) -> dict:
    """Look up the status of a customer's order by its number.

    Args:
        order_id: The order number the caller gave, e.g. "4572"; words and
            symbols around the digits are ignored.
    """
    db = ctx.extras.get(ORDERS_DB_KEY)
    if not isinstance(db, OrdersDb):
        raise RuntimeError(f"no orders database: ToolContext.extras[{ORDERS_DB_KEY!r}] must be an OrdersDb")
    digits = normalise_order_id(order_id)
    if not digits:
        # an error the model can act on: ask the caller for the number again
        raise ValueError(f"{order_id!r} contains no order number digits")
    row = await run_store(db.lookup, digits)
    if row is None:
        return {"found": False, "order_id": digits}
    status, detail = row["status"], row["detail"]
    if ctx.language in SPANISH:  # the demo's rows, as a Spanish-speaking caller hears them
        status, detail = SPANISH[ctx.language].get(status, status), SPANISH[ctx.language].get(detail, detail)
    return {"found": True, "order_id": digits, "status": status, "detail": detail}
