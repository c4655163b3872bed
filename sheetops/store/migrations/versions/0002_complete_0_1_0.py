"""Complete a store written by 0.1.0: the tables and indexes it made on first use.

0.1.0 created the dashboard's indexes and tables (``job_config``, the rollups) when a
page was first viewed, the alert tables when alerts were first evaluated and
``deliveries`` when an automation first noted one, so a store it wrote may lack any of
them. This creates whatever is missing and refreshes SQLite's planner statistics (which
the dashboard used to do on every start).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sheetops.store.migrations import frozen_0_1_0

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    frozen_0_1_0.metadata.create_all(bind, checkfirst=True)
    inspector = sa.inspect(bind)
    for table in frozen_0_1_0.metadata.sorted_tables:
        have = {ix["name"] for ix in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in have:
                index.create(bind)
    if bind.dialect.name == "sqlite":
        op.execute("ANALYZE")


def downgrade() -> None:
    """Nothing to undo: 0.1.0 could have made all of it."""
