"""Dry runs apart: rollups count them in ``dry_runs`` only; dashboard indexes carry
``dry_run`` so aggregates that leave dry runs out still read only the index.

The rollups are emptied of their refresh mark, so the engine's next refresh rebuilds
them under the new rule (until then the dashboard reads the runs themselves).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_OLD = {
    "ix_runs_dash_job_started": ["job", "started_at", "status", "duration_s", "records_in",
                                 "records_out", "records_failed"],
    "ix_runs_dash_job_duration": ["job", "duration_s", "started_at"],
    "ix_runs_dash_started": ["started_at", "status", "duration_s", "job"],
    "ix_runs_dash_duration": ["duration_s", "started_at", "job"],
}
_NEW = {
    "ix_runs_dash_job_started": ["job", "started_at", "status", "duration_s", "records_in",
                                 "records_out", "records_failed", "dry_run"],
    "ix_runs_dash_job_duration": ["job", "dry_run", "duration_s", "started_at"],
    "ix_runs_dash_started": ["started_at", "status", "duration_s", "job", "dry_run"],
    "ix_runs_dash_duration": ["dry_run", "duration_s", "started_at", "job"],
}


def _swap(indexes: dict[str, list[str]]) -> None:
    for name, columns in indexes.items():
        op.drop_index(name, table_name="runs")
        op.create_index(name, "runs", columns)


def upgrade() -> None:
    for table in ("runs_hourly", "runs_daily"):
        op.add_column(table, sa.Column("dry_runs", sa.Integer(), nullable=False,
                                       server_default="0"))
    _swap(_NEW)
    op.execute("DELETE FROM rollup_state")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ANALYZE")


def downgrade() -> None:
    _swap(_OLD)
    for table in ("runs_hourly", "runs_daily"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("dry_runs")
    op.execute("DELETE FROM rollup_state")
