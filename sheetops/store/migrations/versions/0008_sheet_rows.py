"""A sheet tab as a pipeline's source and sink: the tab a pipeline reads and each
record's outcome at its row (see docs/pipelines.md, "A sheet tab as source and sink").

Revision ID: 0008
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sheet_row_sources",
        sa.Column("job", sa.String(128), primary_key=True),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("tab", sa.String(128), nullable=False),
        sa.Column("columns", sa.Text(), nullable=False),
        sa.Column("header_pending", sa.Boolean(), nullable=False),
        sa.Column("read_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "sheet_row_outcomes",
        sa.Column("job", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("written", sa.Integer(), nullable=False),
    )
    op.create_index("ix_sheet_row_outcomes_unwritten", "sheet_row_outcomes",
                    ["job", "written", "version"])


def downgrade() -> None:
    op.drop_index("ix_sheet_row_outcomes_unwritten", "sheet_row_outcomes")
    op.drop_table("sheet_row_outcomes")
    op.drop_table("sheet_row_sources")
