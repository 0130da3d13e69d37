"""Alembic environment for callbridge's store.

CallStore.open() runs the migrations programmatically and hands over its own
connection in config.attributes["connection"], so no alembic.ini is needed. The
alembic CLI still works with `-x url=...` (or sqlalchemy.url in an ini file).
Logging is left to the application: no fileConfig here.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from callbridge.app.store.schema import metadata

# Its own name, so a PostgreSQL database shared with other apps keeps them apart.
VERSION_TABLE = "callbridge_alembic_version"


def _configure_and_run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        # SQLite can only ALTER a little; batch mode rebuilds tables for later migrations.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("callbridge migrations: pass -x url=<database url>")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            _configure_and_run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("callbridge migrations run online only")
run()
