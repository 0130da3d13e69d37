"""Initial tables: calls, call_events, transcripts, trunks, webhook_outbox.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written out in full rather than built from schema.metadata: a migration must
keep creating what it created the day it shipped, whatever the schema becomes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.String(64), nullable=False),
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
        sa.PrimaryKeyConstraint("id", name="pk_calls"),
    )
    op.create_index("ix_calls_sip_call_id", "calls", ["sip_call_id"])
    op.create_index("ix_calls_created_at", "calls", ["created_at"])
    op.create_index("ix_calls_status_created_at", "calls", ["status", "created_at"])

    op.create_table(
        "call_events",
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("call_id", "seq", name="pk_call_events"),
    )

    op.create_table(
        "transcripts",
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("role", sa.String(32)),
        sa.Column("entry", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("call_id", "seq", name="pk_transcripts"),
    )

    op.create_table(
        "trunks",
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("kind", "id", name="pk_trunks"),
    )

    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("event", sa.String(128), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Double),
        sa.Column("delivered_at", sa.Double),
        sa.Column("failed_at", sa.Double),
        sa.Column("last_error", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_outbox"),
    )
    op.create_index("ix_webhook_outbox_next_attempt_at", "webhook_outbox", ["next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_outbox_next_attempt_at", table_name="webhook_outbox")
    op.drop_table("webhook_outbox")
    op.drop_table("trunks")
    op.drop_table("transcripts")
    op.drop_table("call_events")
    op.drop_index("ix_calls_status_created_at", table_name="calls")
    op.drop_index("ix_calls_created_at", table_name="calls")
    op.drop_index("ix_calls_sip_call_id", table_name="calls")
    op.drop_table("calls")
