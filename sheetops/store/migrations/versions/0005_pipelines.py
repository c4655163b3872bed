"""The pipelines' tables: source checkpoints, per-stage counts and the idempotency ledger
(see docs/pipelines.md).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pipeline_checkpoints",
        sa.Column("pipeline", sa.String(128), primary_key=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("position", sa.Text()),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "pipeline_counts",
        sa.Column("pipeline", sa.String(128), primary_key=True),
        sa.Column("generation", sa.Integer(), primary_key=True),
        sa.Column("stage", sa.String(128), primary_key=True),
        sa.Column("records_in", sa.BigInteger(), nullable=False),
        sa.Column("records_out", sa.BigInteger(), nullable=False),
        sa.Column("records_failed", sa.BigInteger(), nullable=False),
        sa.Column("dead_letters", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "pipeline_ledger",
        sa.Column("pipeline", sa.String(128), primary_key=True),
        sa.Column("stage", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("done_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    for table in ("pipeline_ledger", "pipeline_counts", "pipeline_checkpoints"):
        op.drop_table(table)
