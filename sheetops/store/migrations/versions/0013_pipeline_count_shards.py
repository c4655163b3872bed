"""A pipeline stage's counts in one row per shard (the thread that counted):
``pipeline_counts.shard`` joins the primary key, so two workers' hand-offs of the same
stage never wait on each other's row lock — held until the commit reached the disk —
and readers sum the shards (docs/pipelines.md). The rows already there become shard ''.

The table is rebuilt (a primary key changes), the same way on SQLite and PostgreSQL.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_COUNTS = ("records_in", "records_out", "records_failed", "dead_letters")


def _create(name: str, sharded: bool) -> None:
    key = [sa.Column("pipeline", sa.String(128), primary_key=True),
           sa.Column("generation", sa.Integer(), primary_key=True),
           sa.Column("stage", sa.String(128), primary_key=True)]
    if sharded:
        key.append(sa.Column("shard", sa.String(96), primary_key=True))
    op.create_table(name, *key, *(sa.Column(c, sa.BigInteger(), nullable=False)
                                  for c in _COUNTS))


def _rename(built: str) -> None:
    """The rebuilt table takes the old one's name (and, on PostgreSQL, its key's)."""
    op.rename_table(built, "pipeline_counts")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE pipeline_counts RENAME CONSTRAINT {built}_pkey "
                   "TO pipeline_counts_pkey")


def upgrade() -> None:
    _create("pipeline_counts_sharded", True)
    columns = ", ".join(_COUNTS)
    op.execute(f"INSERT INTO pipeline_counts_sharded (pipeline, generation, stage, shard, "
               f"{columns}) SELECT pipeline, generation, stage, '', {columns} "
               f"FROM pipeline_counts")
    op.drop_table("pipeline_counts")
    _rename("pipeline_counts_sharded")


def downgrade() -> None:
    _create("pipeline_counts_summed", False)
    columns = ", ".join(_COUNTS)
    sums = ", ".join(f"SUM({c})" for c in _COUNTS)
    op.execute(f"INSERT INTO pipeline_counts_summed (pipeline, generation, stage, "
               f"{columns}) SELECT pipeline, generation, stage, {sums} FROM "
               f"pipeline_counts GROUP BY pipeline, generation, stage")
    op.drop_table("pipeline_counts")
    _rename("pipeline_counts_summed")
