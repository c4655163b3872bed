"""Baseline: the store of sheetops 0.1.0 (main at 2e057a7).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from sheetops.store.migrations import frozen_0_1_0

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    frozen_0_1_0.metadata.create_all(op.get_bind())


def downgrade() -> None:
    frozen_0_1_0.metadata.drop_all(op.get_bind())
