"""The durable tables: calls, their event and transcript logs, trunks, and the webhook outbox.

SQLAlchemy Core, one MetaData. The migration in migrations/versions/ creates the
same tables; tests compare the two so they cannot drift apart.

Timestamps are unix seconds as double precision: an IEEE double round-trips
exactly through SQLite REAL and PostgreSQL float8, and the app already speaks
time.time() floats everywhere.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# The scalar fields of Call.to_record() that get their own columns (filtered,
# sorted, indexed); every other field of the record goes to calls.extra as JSON.
CALL_COLUMNS: tuple[str, ...] = (
    "id", "direction", "sip_call_id", "status", "end_reason", "caller", "caller_name",
    "called", "trunk", "created_at", "answered_at", "ended_at", "recording", "route", "worker",
)
# Rebuilt from their own tables, never stored in calls.extra.
LOGGED_FIELDS: tuple[str, ...] = ("events", "transcript")

calls = sa.Table(
    "calls",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("direction", sa.String(16), nullable=False),
    sa.Column("sip_call_id", sa.String(255)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("end_reason", sa.String(255)),
    sa.Column("caller", sa.String(255)),
    sa.Column("caller_name", sa.String(255)),
    sa.Column("called", sa.String(255)),
    sa.Column("trunk", sa.String(255)),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("answered_at", sa.Double),
    sa.Column("ended_at", sa.Double),
    sa.Column("recording", sa.Text),
    sa.Column("route", sa.String(255)),
    sa.Column("extra", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("worker", sa.String(64)),  # the cluster worker that ran the call (migration 0002)
    sa.Index(None, "sip_call_id"),
    sa.Index(None, "created_at"),
    sa.Index(None, "status", "created_at"),
    sa.Index(None, "worker", "status"),  # a cluster's reaper: the calls a lost worker left unfinished
)

# No foreign keys to calls: the first events of a call are logged before the
# call's first save, and the log must never lose a row for want of a parent.
call_events = sa.Table(
    "call_events",
    metadata,
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),  # 1, 2, 3... per call
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
)

transcripts = sa.Table(
    "transcripts",
    metadata,
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),  # 1, 2, 3... per call
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("role", sa.String(32)),
    sa.Column("entry", sa.JSON, nullable=False),
)

trunks = sa.Table(
    "trunks",
    metadata,
    sa.Column("kind", sa.String(32), primary_key=True),  # "inbound" | "outbound"
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

# A row is pending while next_attempt_at is set; delivery or giving up clears it,
# so "what is due" is one range scan of this index.
webhook_outbox = sa.Table(
    "webhook_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event", sa.String(128), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Double),
    sa.Column("delivered_at", sa.Double),
    sa.Column("failed_at", sa.Double),
    sa.Column("last_error", sa.Text),
    sa.Index(None, "next_attempt_at"),
)
