"""The Celery tier's delivery counts (``task_deliveries``), the redelivery cap's memory
(see docs/celery.md).

Revision ID: 0010
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_deliveries",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.Float(), nullable=False),
        sa.Column("last_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_task_deliveries_last", "task_deliveries", ["last_at"])


def downgrade() -> None:
    op.drop_index("ix_task_deliveries_last", table_name="task_deliveries")
    op.drop_table("task_deliveries")
