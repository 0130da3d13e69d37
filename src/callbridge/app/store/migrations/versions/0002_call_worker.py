"""calls.worker: the cluster worker that ran each call.

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01

A nullable column (NULL for every call of a single process, and for the calls
recorded before it existed) and an index for the cluster's questions: which
calls did this worker leave unfinished.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    # Adding a nullable column needs no table rebuild, on SQLite either.
    op.add_column("calls", sa.Column("worker", sa.String(64)))
    op.create_index("ix_calls_worker_status", "calls", ["worker", "status"])


def downgrade() -> None:
    op.drop_index("ix_calls_worker_status", table_name="calls")
    with op.batch_alter_table("calls") as batch:  # SQLite before 3.35 cannot drop a column in place
        batch.drop_column("worker")
