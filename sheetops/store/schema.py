"""The store's tables (SQLAlchemy Core). Times are UTC epoch seconds (floats), which
aggregate the same way on SQLite and PostgreSQL."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()


class RunStatus(StrEnum):
    """Every state a run can be in: store column, Status/Runs cell, dashboard filter."""

    QUEUED = "queued"
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.OK, RunStatus.FAILED, RunStatus.TIMEOUT)


runs = Table(
    "runs", metadata,
    Column("id", String(40), primary_key=True),
    Column("job", String(128), nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("scheduled_for", Float),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("records_in", Integer, nullable=False, default=0),
    Column("records_out", Integer, nullable=False, default=0),
    Column("records_failed", Integer, nullable=False, default=0),
    Column("duration_s", Float),
    Column("result", Text, nullable=False, default="{}"),
    Column("error_type", String(128), nullable=False, default=""),
    Column("error_message", Text, nullable=False, default=""),
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("requested_by", String(128), nullable=False, default=""),
    Index("ix_runs_job_started", "job", "started_at"),
    Index("ix_runs_started", "started_at"),
    Index("ix_runs_status", "status"),
)

attempts = Table(
    "attempts", metadata,
    Column("run_id", String(40), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("job", String(128), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error_type", String(128), nullable=False, default=""),
    Column("error_message", Text, nullable=False, default=""),
    Column("traceback", Text, nullable=False, default=""),
)

errors = Table(
    "errors", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False),
    Column("job", String(128), nullable=False),
    Column("run_id", String(40), nullable=False),
    Column("stage", String(64), nullable=False, default="run"),
    Column("attempt", Integer, nullable=False, default=1),
    Column("error_type", String(128), nullable=False),
    Column("message", Text, nullable=False),
    Column("record_key", String(256), nullable=False, default=""),
    Column("traceback", Text, nullable=False, default=""),
    Index("ix_errors_time", "time"),
    Index("ix_errors_job_time", "job", "time"),
)

job_state = Table(
    "job_state", metadata,
    Column("job", String(128), primary_key=True),
    Column("last_fire_time", Float),
    Column("last_run_id", String(40)),
    Column("last_status", String(16), nullable=False, default=""),
    Column("last_start", Float),
    Column("last_end", Float),
    Column("last_duration_s", Float),
    Column("last_result", Text, nullable=False, default=""),
    Column("records_in", Integer, nullable=False, default=0),
    Column("records_out", Integer, nullable=False, default=0),
    Column("records_failed", Integer, nullable=False, default=0),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("last_success_at", Float),
    Column("updated_at", Float),
)

outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tab", String(32), nullable=False),
    Column("key", String(160), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("delivered_at", Float),
    Index("ix_outbox_pending", "delivered_at", "id"),
)

run_requests = Table(
    "run_requests", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job", String(128), nullable=False),
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("requested_by", String(128), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("claimed_at", Float),
    Column("run_id", String(40)),
    Index("ix_run_requests_pending", "claimed_at", "id"),
)

config_problems = Table(
    "config_problems", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tab", String(32), nullable=False),
    Column("cell", String(16), nullable=False),
    Column("value", Text, nullable=False, default=""),
    Column("problem", Text, nullable=False),
    Column("severity", String(8), nullable=False),
)

config_events = Table(
    "config_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False),
    Column("kind", String(16), nullable=False),  # refresh, added, changed, removed, failed
    Column("job", String(128), nullable=False, default=""),
    Column("detail", Text, nullable=False, default=""),
    Index("ix_config_events_time", "time"),
)

gauges = Table(
    "gauges", metadata,
    Column("name", String(128), primary_key=True),
    Column("value", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

sheet_extent = Table(
    "sheet_extent", metadata,
    Column("tab", String(32), primary_key=True),
    Column("rows", Integer, nullable=False),
)

leases = Table(
    "leases", metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", Float, nullable=False),
)
