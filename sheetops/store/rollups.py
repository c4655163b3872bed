"""Read-side additions to the store for the dashboard: covering indexes that keep the
Overview fast at a million runs, and the ``job_config`` table the scheduler publishes
after each refresh so pages can show schedules without touching the sheet.

Everything here is defined on :data:`sheetops.store.schema.metadata`, so a fresh store
gets it from ``create_all``; :func:`ensure_dashboard_schema` adds it to an existing
store (``create_all`` never adds indexes to tables that already exist).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    case,
    cast,
    delete,
    event,
    func,
    insert,
    literal_column,
    select,
    update,
)

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
        for table in ROLLUP_TABLES:
            table.create(engine, checkfirst=True)
        ix_runs_hourly_open.create(engine, checkfirst=True)
        if engine.dialect.name == "sqlite":
            _sqlite_math(engine)
        for index in DASHBOARD_INDEXES:
            index.create(engine, checkfirst=True)
        if engine.dialect.name == "sqlite":
            with engine.begin() as conn:
                # Lets the planner pick the covering indexes on a large store.
                conn.exec_driver_sql("ANALYZE")
        _ensured.add(key)


def _sqlite_math(engine: Engine) -> None:
    """The rollups bucket durations with ``ln()``; SQLite builds without the math
    functions get it from Python on every new connection."""
    with engine.connect() as conn:
        try:
            conn.exec_driver_sql("SELECT ln(2.0)")
            return
        except Exception:
            pass

    def register(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function(
            "ln", 1, lambda x: math.log(x) if x is not None and x > 0 else None,
            deterministic=True)

    event.listen(engine, "connect", register)
    engine.dispose()


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


# -- hourly (and daily) run rollups ------------------------------------------------------
# Per job and per hour of ``started_at``: counts by status, duration sum/count/min/max,
# records, the last start, and a log-bucket histogram of durations (``h00`` … ``h71``)
# from which long windows get approximate percentiles. ``runs_daily`` sums the hourly rows
# per UTC day, so a 30-day window reads ~30 rows per job instead of ~720.
HOUR_S = 3600.0
DAY_S = 86400.0
#: Histogram buckets: ``h00`` holds durations below ``HIST_MIN_S``; bucket ``i >= 1``
#: holds ``[HIST_MIN_S * HIST_RATIO**(i-1), HIST_MIN_S * HIST_RATIO**i)``; the last one
#: everything above (≈ 14 h with these constants). Each bucket is 26% wide, so a
#: percentile read from it (its geometric middle, clamped to the window's min/max) is
#: within about ±12% of the exact nearest-rank value.
HIST_MIN_S = 0.01
HIST_RATIO = 2 ** (1 / 3)
HIST_BUCKETS = 72
HIST_COLUMNS = tuple(f"h{i:02d}" for i in range(HIST_BUCKETS))
COUNT_COLUMNS = ("runs", "queued", "running", "ok", "failed", "timeout", "timed",
                 "records_in", "records_out", "records_failed")
ROLLUP_SUMS = (*COUNT_COLUMNS, "duration_sum", *HIST_COLUMNS)


def _rollup_table(name: str, period: str) -> Table:
    return Table(
        name, t.metadata,
        Column(period, Float, primary_key=True),       # start of the hour/day, epoch s
        Column("job", String(128), primary_key=True),
        *(Column(c, Integer, nullable=False, default=0) for c in COUNT_COLUMNS),
        Column("duration_sum", Float, nullable=False, default=0.0),
        Column("duration_min", Float),
        Column("duration_max", Float),
        Column("last_start", Float),
        *(Column(c, Integer, nullable=False, default=0) for c in HIST_COLUMNS),
    )


runs_hourly = _rollup_table("runs_hourly", "hour")
runs_daily = _rollup_table("runs_daily", "day")
# The few hours with runs still running or queued (re-aggregated at every refresh).
_OPEN = (runs_hourly.c.running + runs_hourly.c.queued) > 0
ix_runs_hourly_open = Index("ix_runs_hourly_open", runs_hourly.c.hour,
                            sqlite_where=_OPEN, postgresql_where=_OPEN)
rollup_state = Table(
    "rollup_state", t.metadata,
    Column("name", String(32), primary_key=True),
    Column("refreshed_at", Float, nullable=False),   # runs recorded before this are in
    Column("seconds", Float, nullable=False, default=0.0),  # the last refresh took
)
ROLLUP_TABLES = (runs_hourly, runs_daily, rollup_state)

_LN_RATIO = math.log(HIST_RATIO)
_HIST_TOP_S = HIST_MIN_S * HIST_RATIO ** (HIST_BUCKETS - 2)


def _num(value: float) -> Any:
    """A numeric constant inlined in the SQL (a bound parameter would make PostgreSQL
    see ``floor(x / $1)`` in SELECT and ``floor(x / $2)`` in GROUP BY as different)."""
    return literal_column(repr(float(value)))


def period_start(column: Any, seconds: float) -> Any:
    """``floor(column / seconds) * seconds``: the start of the UTC hour/day."""
    return func.floor(column / _num(seconds)) * _num(seconds)


def bucket_expr(duration: Any) -> Any:
    """The histogram bucket of a duration, in SQL (-1 for NULL)."""
    return case(
        (duration.is_(None), -1),
        (duration < _num(HIST_MIN_S), 0),
        (duration >= _num(_HIST_TOP_S), HIST_BUCKETS - 1),
        else_=cast(func.floor(func.ln(duration / _num(HIST_MIN_S)) / _num(_LN_RATIO)),
                   Integer) + 1)


def bucket_of(duration: float) -> int:
    """The histogram bucket of a duration, in Python (same edges as :func:`bucket_expr`)."""
    if duration < HIST_MIN_S:
        return 0
    if duration >= _HIST_TOP_S:
        return HIST_BUCKETS - 1
    return math.floor(math.log(duration / HIST_MIN_S) / _LN_RATIO) + 1


def bucket_value(i: int) -> float:
    """The value reported for bucket ``i``: its geometric middle."""
    if i <= 0:
        return HIST_MIN_S / 2
    return HIST_MIN_S * HIST_RATIO ** (i - 0.5)


def raw_rollup_select(conds: list[Any], period_s: float = HOUR_S) -> Any:
    """Per (period, job) over the ``runs`` rows matching ``conds``: every rollup column,
    computed from the runs themselves (used to build the rollups and, for the partial
    hours at a window's edges, by the dashboard)."""
    r = t.runs.c

    def count_if(cond: Any) -> Any:
        return func.sum(case((cond, 1), else_=0))

    inner = select(
        period_start(r.started_at, period_s).label("period"), r.job.label("job"),
        bucket_expr(r.duration_s).label("b"), func.count().label("runs"),
        *(count_if(r.status == s).label(s) for s in
          ("queued", "running", "ok", "failed", "timeout")),
        func.count(r.duration_s).label("timed"),
        func.coalesce(func.sum(r.records_in), 0).label("records_in"),
        func.coalesce(func.sum(r.records_out), 0).label("records_out"),
        func.coalesce(func.sum(r.records_failed), 0).label("records_failed"),
        func.coalesce(func.sum(r.duration_s), 0.0).label("duration_sum"),
        func.min(r.duration_s).label("duration_min"),
        func.max(r.duration_s).label("duration_max"),
        func.max(r.started_at).label("last_start"),
    ).where(r.started_at.is_not(None), *conds).group_by("period", "job", "b").subquery()
    g = inner.c
    return select(
        g.period, g.job, *(func.sum(g[c]).label(c) for c in COUNT_COLUMNS),
        func.sum(g.duration_sum).label("duration_sum"),
        func.min(g.duration_min).label("duration_min"),
        func.max(g.duration_max).label("duration_max"),
        func.max(g.last_start).label("last_start"),
        *(func.sum(case((g.b == i, g.timed), else_=0)).label(c)
          for i, c in enumerate(HIST_COLUMNS)),
    ).group_by(g.period, g.job)


_ROLLUP_COLUMNS = (*COUNT_COLUMNS, "duration_sum", "duration_min", "duration_max",
                   "last_start", *HIST_COLUMNS)


def _daily_from_hourly(lo: float, hi: float) -> Any:
    h = runs_hourly.c
    return select(
        period_start(h.hour, DAY_S).label("day"), h.job,
        *(func.sum(h[c]).label(c) for c in (*COUNT_COLUMNS, "duration_sum")),
        func.min(h.duration_min).label("duration_min"),
        func.max(h.duration_max).label("duration_max"),
        func.max(h.last_start).label("last_start"),
        *(func.sum(h[c]).label(c) for c in HIST_COLUMNS),
    ).where(h.hour >= lo, h.hour < hi).group_by(period_start(h.hour, DAY_S), h.job)


def _floor(x: float, step: float) -> float:
    return math.floor(x / step) * step


def rollup_refreshed_at(store: Any) -> float | None:
    """When the rollups were last refreshed (every run recorded before is in them)."""
    engine: Engine = getattr(store, "engine", store)
    ensure_dashboard_schema(engine)
    with engine.connect() as conn:
        return conn.execute(select(rollup_state.c.refreshed_at)
                            .where(rollup_state.c.name == "runs")).scalar()


def refresh_rollups(store: Any, now: float | None = None, *, full: bool = False
                    ) -> dict[str, Any]:
    """Bring ``runs_hourly``/``runs_daily`` up to date, incrementally: re-aggregate the
    hours from the one before the previous refresh on, plus every older hour that had
    (or has) runs still running or queued, then the days those hours belong to; drop
    rollup rows older than the oldest run (after :meth:`Store.prune`). The first call
    (or ``full=True``) aggregates every run. One transaction; concurrent callers (the
    engine's status loop, a dashboard) take turns. Returns what it did."""
    engine: Engine = getattr(store, "engine", store)
    ensure_dashboard_schema(engine)
    now = time.time() if now is None else now
    t0 = time.perf_counter()
    r, h, d, s = t.runs.c, runs_hourly.c, runs_daily.c, rollup_state.c
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(734520117)")
        else:  # write first: takes SQLite's write lock before reading anything
            conn.execute(update(rollup_state).where(s.name == "runs")
                         .values(seconds=s.seconds))
        prev = None if full else conn.execute(
            select(s.refreshed_at).where(s.name == "runs")).scalar()
        if prev is None:
            conn.execute(delete(runs_hourly))
            conn.execute(delete(runs_daily))
            conn.execute(insert(runs_hourly).from_select(
                ["hour", "job", *_ROLLUP_COLUMNS], raw_rollup_select([])))
            conn.execute(insert(runs_daily).from_select(
                ["day", "job", *_ROLLUP_COLUMNS], _daily_from_hourly(-math.inf, math.inf)))
            hours: list[float] = []
        else:
            lo = _floor(min(prev, now) - HOUR_S, HOUR_S)
            open_hours = set(conn.execute(select(h.hour).where(_OPEN, h.hour < lo))
                             .scalars())
            # along ix_runs_status (few rows); a started_at bound would pick a range scan
            open_hours |= {_floor(x, HOUR_S) for x in conn.execute(
                select(r.started_at).where(r.status.in_(("running", "queued")))).scalars()
                if x is not None and x < lo}
            hours = sorted(open_hours)
            conn.execute(delete(runs_hourly).where(h.hour >= lo))
            conn.execute(insert(runs_hourly).from_select(
                ["hour", "job", *_ROLLUP_COLUMNS], raw_rollup_select([r.started_at >= lo])))
            for hour in hours:
                conn.execute(delete(runs_hourly).where(h.hour == hour))
                conn.execute(insert(runs_hourly).from_select(
                    ["hour", "job", *_ROLLUP_COLUMNS], raw_rollup_select(
                        [r.started_at >= hour, r.started_at < hour + HOUR_S])))
            day_lo = _floor(lo, DAY_S)
            days = sorted({_floor(x, DAY_S) for x in hours if x < day_lo})
            conn.execute(delete(runs_daily).where(d.day >= day_lo))
            conn.execute(insert(runs_daily).from_select(
                ["day", "job", *_ROLLUP_COLUMNS], _daily_from_hourly(day_lo, math.inf)))
            for day in days:
                conn.execute(delete(runs_daily).where(d.day == day))
                conn.execute(insert(runs_daily).from_select(
                    ["day", "job", *_ROLLUP_COLUMNS], _daily_from_hourly(day, day + DAY_S)))
        oldest = conn.execute(select(func.min(r.started_at))).scalar()
        pruned = 0
        if oldest is None:
            pruned += conn.execute(delete(runs_hourly)).rowcount or 0
            conn.execute(delete(runs_daily))
        else:
            pruned += conn.execute(delete(runs_hourly).where(
                h.hour < _floor(oldest, HOUR_S))).rowcount or 0
            first_day = _floor(oldest, DAY_S)
            conn.execute(delete(runs_daily).where(d.day < first_day))
            if pruned:  # the oldest day lost hours: sum it again
                conn.execute(delete(runs_daily).where(d.day == first_day))
                conn.execute(insert(runs_daily).from_select(
                    ["day", "job", *_ROLLUP_COLUMNS],
                    _daily_from_hourly(first_day, first_day + DAY_S)))
        seconds = time.perf_counter() - t0
        if conn.execute(update(rollup_state).where(s.name == "runs").values(
                refreshed_at=now, seconds=seconds)).rowcount == 0:
            conn.execute(insert(rollup_state).values(name="runs", refreshed_at=now,
                                                     seconds=seconds))
    return {"full": prev is None, "reopened_hours": len(hours), "pruned_hours": pruned,
            "seconds": time.perf_counter() - t0}
