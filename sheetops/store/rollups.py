"""Hourly and daily run rollups: what lets the dashboard read 30 days in milliseconds.

The engine keeps them (:meth:`RollupStore.refresh`, on the scheduler's status loop);
the dashboard only reads them, and reads the runs themselves for anything newer than
the last refresh, so a stale rollup is slower, never wrong. The tables live in
:mod:`sheetops.store.schema`; dry runs are counted in ``dry_runs`` and left out of every
other column (the rule of :mod:`sheetops.store.aggregates`).
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

from sqlalchemy import (
    Engine,
    Integer,
    case,
    cast,
    delete,
    func,
    insert,
    literal_column,
    select,
    update,
)

from sheetops.store import schema as t
from sheetops.store.schema import (
    COUNT_COLUMNS,
    HIST_BUCKETS,
    HIST_COLUMNS,
    ROLLUP_OPEN,
    UNFINISHED,
    RunStatus,
    rollup_state,
    runs_daily,
    runs_hourly,
)


class HasEngine(Protocol):
    """A :class:`~sheetops.store.Store` or :class:`~sheetops.store.db.Database`."""

    @property
    def engine(self) -> Engine: ...


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
ROLLUP_SUMS = (*COUNT_COLUMNS, "duration_sum", *HIST_COLUMNS)


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
    hours at a window's edges, by the dashboard). Dry runs only count in ``dry_runs``."""
    r = t.runs.c
    real = r.dry_run.is_(False)

    def count_if(cond: Any) -> Any:
        return func.sum(case((cond, 1), else_=0))

    def real_sum(col: Any) -> Any:
        return func.coalesce(func.sum(case((real, col))), 0)

    inner = select(
        period_start(r.started_at, period_s).label("period"), r.job.label("job"),
        case((real, bucket_expr(r.duration_s)), else_=-1).label("b"),
        count_if(real).label("runs"),
        *(count_if(real & (r.status == s.value)).label(s.value) for s in
          (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.OK, RunStatus.FAILED,
           RunStatus.TIMEOUT)),
        func.count(case((real, r.duration_s))).label("timed"),
        real_sum(r.records_in).label("records_in"),
        real_sum(r.records_out).label("records_out"),
        real_sum(r.records_failed).label("records_failed"),
        count_if(r.dry_run.is_(True)).label("dry_runs"),
        func.coalesce(func.sum(case((real, r.duration_s))), 0.0).label("duration_sum"),
        func.min(case((real, r.duration_s))).label("duration_min"),
        func.max(case((real, r.duration_s))).label("duration_max"),
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


def rollup_refreshed_at(store: HasEngine | Engine) -> float | None:
    """When the rollups were last refreshed (every run recorded before is in them)."""
    engine = store if isinstance(store, Engine) else store.engine
    with engine.connect() as conn:
        return conn.execute(select(rollup_state.c.refreshed_at)
                            .where(rollup_state.c.name == "runs")).scalar()


def refresh_rollups(store: HasEngine | Engine, now: float | None = None, *,
                    full: bool = False) -> dict[str, Any]:
    """Bring ``runs_hourly``/``runs_daily`` up to date, incrementally: re-aggregate the
    hours from the one before the previous refresh on, plus every older hour that had
    (or has) runs still running or queued, then the days those hours belong to; drop
    rollup rows older than the oldest run (after :meth:`RunStore.prune`). The first call
    (or ``full=True``) aggregates every run. One transaction; concurrent callers take
    turns. Returns what it did."""
    engine = store if isinstance(store, Engine) else store.engine
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
            open_hours = set(conn.execute(select(h.hour).where(ROLLUP_OPEN, h.hour < lo))
                             .scalars())
            # along ix_runs_status (few rows); a started_at bound would pick a range scan
            open_hours |= {_floor(x, HOUR_S) for x in conn.execute(
                select(r.started_at).where(r.status.in_([u.value for u in UNFINISHED]))).scalars()
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


class RollupStore:
    """The rollups of one store: refreshed by the engine, read by the dashboard."""

    def __init__(self, db: HasEngine) -> None:
        self.db = db

    def refresh(self, now: float | None = None, *, full: bool = False) -> dict[str, Any]:
        return refresh_rollups(self.db, now, full=full)

    def refreshed_at(self) -> float | None:
        return rollup_refreshed_at(self.db)

    def refresh_if_older(self, max_age_s: float, now: float | None = None) -> bool:
        """Refresh when the last refresh is older than ``max_age_s`` (or never was);
        returns whether it refreshed."""
        now = time.time() if now is None else now
        at = self.refreshed_at()
        if at is not None and now - at < max_age_s:
            return False
        self.refresh(now)
        return True
