"""The database engine under CallStore: URLs, SQLite's durability pragmas, migrations, JSON and upserts."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger("callbridge.app.store.callstore")  # the name these lines always logged under

SQLITE_FILE_NAME = "callbridge.db"
# A reader in another thread may hold the database briefly; wait rather than fail.
SQLITE_BUSY_TIMEOUT_MS = 5000
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant will do: it only has to be the same in every callbridge process.
PG_MIGRATION_LOCK_ID = 0x63616C6C  # "call"


def database_url(url: str | None, data_dir: Path) -> str:
    """The SQLAlchemy URL for a configured database URL (None: SQLite under data_dir)."""
    if url is None:
        return f"sqlite:///{(Path(data_dir) / SQLITE_FILE_NAME).resolve()}"
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            # psycopg 3 is the driver we ship; SQLAlchemy would otherwise pick psycopg2.
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _finite(value: Any) -> Any:
    """The value with NaN/Infinity replaced by None: JSON (and PostgreSQL's json) has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def to_json(value: Any) -> str:
    """JSON for the database. Never fails on odd values: they are stored as their str()."""
    try:
        return json.dumps(value, default=str, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), default=str, ensure_ascii=False, allow_nan=False)


def normalised(value: Any) -> Any:
    """What a value reads back as after a trip through a JSON column."""
    return json.loads(to_json(value))


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("SQLite refused WAL mode (journal_mode=%s); commits stay durable but readers block writers",
                        mode)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # Connections move between the writer thread and reader threads through
        # the pool; each is used by one thread at a time, which is all SQLite needs.
        engine = sa.create_engine(url, json_serializer=to_json, connect_args={"check_same_thread": False})
        sa.event.listen(engine, "connect", _set_sqlite_pragmas)
        return engine
    return sa.create_engine(url, json_serializer=to_json, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Two processes starting at once would both try to create the tables.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": PG_MIGRATION_LOCK_ID})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def upsert(connection: Connection, table: sa.Table, row: dict[str, Any], keys: list[str]) -> None:
    dialect = connection.dialect.name
    changes = {name: value for name, value in row.items() if name not in keys}
    if dialect in ("sqlite", "postgresql"):
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        insert = sqlite_insert if dialect == "sqlite" else pg_insert
        statement = insert(table).values(**row).on_conflict_do_update(index_elements=keys, set_=changes)
        connection.execute(statement)
        return
    where = sa.and_(*(table.c[key] == row[key] for key in keys))
    if connection.execute(table.update().where(where).values(**changes)).rowcount == 0:
        connection.execute(table.insert().values(**row))
