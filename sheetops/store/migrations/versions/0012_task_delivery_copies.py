"""Which published copy of a Celery task owns its attempt: ``task_deliveries.copy_id``.

A run's attempt may be published more than once (a new leader republishes a run the old
one committed but may not have published); the first copy to reach the store owns the
attempt and the others are dropped (docs/celery.md).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("task_deliveries", sa.Column("copy_id", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("task_deliveries") as batch:
        batch.drop_column("copy_id")
