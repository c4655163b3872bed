"""The sheet outbox moves onto the durable queue: marks no status write delivered yet
become items of the ``sheet_outbox`` queue (put when they were), and the ``outbox``
table goes; delivered marks had done their job.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import json
import time

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

QUEUE = "sheet_outbox"  # sheetops.store.outbox.QUEUE, frozen here


def upgrade() -> None:
    conn = op.get_bind()
    pending = conn.execute(sa.text(
        "SELECT tab, key, created_at FROM outbox WHERE delivered_at IS NULL ORDER BY id")
    ).all()
    now = time.time()
    if pending:
        conn.execute(sa.text(
            "INSERT INTO queue_items (queue, key, unique_key, payload, priority, state, "
            "visible_at, created_at, deliveries) VALUES (:queue, :tab, NULL, :payload, 0, "
            "'live', :now, :created, 0)"),
            [{"queue": QUEUE, "tab": row.tab, "now": now, "created": row.created_at,
              "payload": json.dumps({"tab": row.tab, "key": row.key or ""},
                                    separators=(",", ":"))} for row in pending])
    op.drop_table("outbox")  # its index goes with it


def downgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tab", sa.String(32), nullable=False),
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("delivered_at", sa.Float()),
    )
    op.create_index("ix_outbox_pending", "outbox", ["delivered_at", "id"])
    conn = op.get_bind()
    items = conn.execute(sa.text(
        "SELECT payload, created_at FROM queue_items WHERE queue = :queue AND "
        "state = 'live' ORDER BY id"), {"queue": QUEUE}).all()
    if items:
        marks = [json.loads(row.payload) for row in items]
        conn.execute(sa.text("INSERT INTO outbox (tab, key, created_at) VALUES "
                             "(:tab, :key, :created)"),
                     [{"tab": m["tab"], "key": m["key"], "created": row.created_at}
                      for m, row in zip(marks, items, strict=True)])
    conn.execute(sa.text("DELETE FROM queue_items WHERE queue = :queue"), {"queue": QUEUE})
