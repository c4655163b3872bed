"""Read-side additions to the store for the dashboard: covering indexes that keep the
Overview fast at a million runs, and the ``job_config`` table the scheduler publishes
after each refresh so pages can show schedules without touching the sheet.

Everything here is defined on :data:`sheetops.store.schema.metadata`, so a fresh store
gets it from ``create_all``; :func:`ensure_dashboard_schema` adds it to an existing
store (``create_all`` never adds indexes to tables that already exist).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Boolean, Column, Engine, Float, Index, String, Table, Text, delete, insert

from sheetops.store import schema as t

# Overview aggregates per job over a window: one index range scan, no table lookups.
ix_runs_job_cover = Index(
    "ix_runs_dash_job_started", t.runs.c.job, t.runs.c.started_at, t.runs.c.status,
    t.runs.c.duration_s, t.runs.c.records_in, t.runs.c.records_out, t.runs.c.records_failed)
# Percentiles by ORDER BY duration_s … OFFSET k, restricted to a window, per job.
ix_runs_job_duration = Index(
    "ix_runs_dash_job_duration", t.runs.c.job, t.runs.c.duration_s, t.runs.c.started_at)
# Totals and the over-time charts: a range scan on started_at that covers the columns.
ix_runs_started_cover = Index(
    "ix_runs_dash_started", t.runs.c.started_at, t.runs.c.status, t.runs.c.duration_s,
    t.runs.c.job)

# The total percentiles over a large window: ORDER BY duration_s … OFFSET k in index order.
ix_runs_duration = Index("ix_runs_dash_duration", t.runs.c.duration_s, t.runs.c.started_at,
                         t.runs.c.job)

job_config = Table(
    "job_config", t.metadata,
    Column("job", String(128), primary_key=True),
    Column("automation", String(128), nullable=False, default=""),
    Column("schedule", String(128), nullable=False, default=""),
    Column("timezone", String(64), nullable=False, default="UTC"),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("owner", String(128), nullable=False, default=""),
    Column("notes", Text, nullable=False, default=""),
    Column("published_at", Float, nullable=False),
)

DASHBOARD_INDEXES = (ix_runs_job_cover, ix_runs_job_duration, ix_runs_started_cover,
                     ix_runs_duration)
_ensured: set[int] = set()
_lock = threading.Lock()


def ensure_dashboard_schema(engine: Engine) -> None:
    """Create the dashboard's indexes and tables if missing (once per engine)."""
    key = id(engine)
    if key in _ensured:
        return
    with _lock:
        if key in _ensured:
            return
        job_config.create(engine, checkfirst=True)
        for index in DASHBOARD_INDEXES:
            index.create(engine, checkfirst=True)
        if engine.dialect.name == "sqlite":
            with engine.begin() as conn:
                # Lets the planner pick the covering indexes on a large store.
                conn.exec_driver_sql("ANALYZE")
        _ensured.add(key)


def _job_row(spec: Any, now: float) -> dict[str, Any]:
    return {"job": spec.job, "automation": getattr(spec, "automation", ""),
            "schedule": getattr(spec, "schedule", ""),
            "timezone": getattr(spec, "timezone", "UTC") or "UTC",
            "enabled": bool(getattr(spec, "enabled", True)),
            "owner": getattr(spec, "owner", "") or "",
            "notes": getattr(spec, "notes", "") or "", "published_at": now}


def publish_job_config(store: Any, snapshot_jobs: dict[str, Any] | Iterable[Any]) -> int:
    """Replace the stored job configuration with ``snapshot_jobs`` (the scheduler calls
    this after each successful refresh with ``snapshot.jobs``; a mapping of name to
    :class:`~sheetops.config.model.JobSpec` or an iterable of them). Only non-secret
    columns are kept: name, automation, schedule, timezone, enabled, owner, notes.
    Returns the number of jobs published."""
    specs = list(snapshot_jobs.values()) if isinstance(snapshot_jobs, dict) else list(
        snapshot_jobs)
    engine: Engine = store.engine
    ensure_dashboard_schema(engine)
    now = time.time()
    rows = [_job_row(spec, now) for spec in specs]
    with engine.begin() as conn:
        conn.execute(delete(job_config))
        if rows:
            conn.execute(insert(job_config), rows)
    return len(rows)
