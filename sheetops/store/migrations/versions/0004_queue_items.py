"""The durable queue's table: ``queue_items`` and its indexes (see docs/queue.md).

Run requests live on it from this revision: requests 0.1.0 left unclaimed are put on
the ``run_requests`` queue, so the next scheduler still runs them.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import json
import time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_items",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(128), nullable=False),
        sa.Column("key", sa.String(256)),
        sa.Column("unique_key", sa.String(256)),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("visible_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(32)),
        sa.Column("consumer", sa.String(200)),
        sa.Column("claimed_at", sa.Float()),
        sa.Column("error_type", sa.String(128)),
        sa.Column("error", sa.Text()),
        sa.Column("traceback", sa.Text()),
        sa.Column("dead_at", sa.Float()),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_queue_items_claim", "queue_items",
                    ["queue", "state", sa.text("priority DESC"), "id"])
    op.create_index("ix_queue_items_age", "queue_items", ["queue", "state", "created_at"])
    op.create_index("ux_queue_items_unique_key", "queue_items", ["queue", "unique_key"],
                    unique=True)
    _requeue_pending_requests()


def _requeue_pending_requests() -> None:
    """Put every request no scheduler claimed yet on the ``run_requests`` queue."""
    conn = op.get_bind()
    pending = conn.execute(sa.text(
        "SELECT id, job, dry_run, requested_by, created_at FROM run_requests "
        "WHERE claimed_at IS NULL ORDER BY id")).all()
    now = time.time()
    for row in pending:
        conn.execute(sa.text(
            "INSERT INTO queue_items (queue, key, unique_key, payload, priority, state, "
            "visible_at, created_at, deliveries) VALUES ('run_requests', :key, :key, "
            ":payload, 0, 'live', :now, :created, 0)"),
            {"key": str(row.id), "now": now, "created": row.created_at,
             "payload": json.dumps({"request_id": row.id, "job": row.job,
                                    "dry_run": bool(row.dry_run),
                                    "requested_by": row.requested_by})})


def downgrade() -> None:
    op.drop_table("queue_items")
