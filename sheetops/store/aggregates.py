"""The one implementation of run counts, success/failure rates and duration percentiles.

The dashboard's pages and the alert metrics both read them from here, so a page and the
alert that fires on it agree. **Dry runs are left out of every rate, percentile, count
and record total; they are counted on their own (``dry_runs``).** A rate is over finished
runs (ok, failed, timed out); a failure is a failed or timed-out run; percentiles are
nearest-rank over the durations of the window's (non-dry) runs.

Percentiles: PostgreSQL's ``percentile_disc``; on SQLite a ``ROW_NUMBER()`` ranking for
small windows and, above ``large_window_rows`` runs, ``ORDER BY duration_s LIMIT 1 OFFSET
k`` per job along the (job, duration_s, started_at) covering index, which needs no sort.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import ColumnElement, Engine, case, func, select, text

from sheetops.store import schema as t
from sheetops.store.schema import RunStatus

#: Above this many runs in the window, SQLite percentiles walk a duration-ordered index.
LARGE_WINDOW_ROWS = 50_000

Jobs = Sequence[str] | None


@dataclass(frozen=True)
class Window:
    """A time window ``[since, until)`` of run start times, in epoch seconds."""

    since: float
    until: float

    @classmethod
    def last(cls, seconds: float, now: float | None = None) -> Window:
        now = time.time() if now is None else now
        return cls(now - seconds, now)

    @property
    def seconds(self) -> float:
        return self.until - self.since


def run_filter(window: Window | None, jobs: Jobs = None,
               statuses: Sequence[str] | None = None) -> list[ColumnElement]:
    """Conditions on ``runs``: started in ``window``, of ``jobs``, in ``statuses``
    (dry runs included: this is for lists)."""
    r = t.runs.c
    conds: list[ColumnElement] = []
    if window is not None:
        conds += [r.started_at >= window.since, r.started_at < window.until]
    if jobs:
        conds.append(r.job.in_(list(jobs)))
    if statuses:
        conds.append(r.status.in_(list(statuses)))
    return conds


def counted(window: Window | None, jobs: Jobs = None) -> list[ColumnElement]:
    """The runs aggregates count: :func:`run_filter` without dry runs."""
    return [*run_filter(window, jobs), t.runs.c.dry_run.is_(False)]


def count_if(cond: ColumnElement) -> ColumnElement:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def rank(n: int, p: int) -> int:
    """0-based nearest rank of the p-th percentile among n sorted values."""
    return max(-(-n * p // 100) - 1, 0)


def with_rates(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``success_rate`` and ``failure_rate`` (of finished runs; NaN without any) to a
    frame with ``ok``, ``failed`` and ``timeout`` columns."""
    finished = df["ok"] + df["failed"] + df["timeout"]
    df["success_rate"] = (df["ok"] / finished.where(finished > 0)).astype(float)
    df["failure_rate"] = ((df["failed"] + df["timeout"])
                          / finished.where(finished > 0)).astype(float)
    return df


def job_counts(engine: Engine, window: Window, jobs: Jobs = None) -> pd.DataFrame:
    """Per job over ``window``: runs, ok, failed, timeout, running, avg_s, last_start,
    records in/out/failed and timed (runs with a duration), dry runs left out; plus
    ``dry_runs``. Jobs with only dry runs appear with zeros."""
    r = t.runs.c
    real = r.dry_run.is_(False)
    query = select(
        r.job,
        count_if(real).label("runs"),
        count_if(real & (r.status == RunStatus.OK.value)).label("ok"),
        count_if(real & (r.status == RunStatus.FAILED.value)).label("failed"),
        count_if(real & (r.status == RunStatus.TIMEOUT.value)).label("timeout"),
        count_if(real & (r.status == RunStatus.RUNNING.value)).label("running"),
        func.avg(case((real, r.duration_s))).label("avg_s"),
        func.max(r.started_at).label("last_start"),
        func.coalesce(func.sum(case((real, r.records_in))), 0).label("records_in"),
        func.coalesce(func.sum(case((real, r.records_out))), 0).label("records_out"),
        func.coalesce(func.sum(case((real, r.records_failed))), 0).label("records_failed"),
        func.count(case((real, r.duration_s))).label("timed"),
        count_if(r.dry_run.is_(True)).label("dry_runs"),
    ).where(*run_filter(window, jobs)).group_by(r.job).order_by(r.job)
    with engine.connect() as conn:
        result = conn.execute(query)
        return pd.DataFrame([tuple(x) for x in result.fetchall()], columns=list(result.keys()))


def failure_rates(engine: Engine, window: Window, jobs: Jobs = None,
                  min_finished: int = 1) -> dict[str, float]:
    """The pages' ``failure_rate`` (:func:`job_counts` through :func:`with_rates`) per job
    with at least ``min_finished`` finished runs."""
    df = with_rates(job_counts(engine, window, jobs))
    df = df[df["ok"] + df["failed"] + df["timeout"] >= max(1, min_finished)]
    return {job: float(rate) for job, rate in zip(df["job"], df["failure_rate"], strict=True)}


def _timed_counts(engine: Engine, window: Window, jobs: Jobs) -> dict[str, int]:
    r = t.runs.c
    with engine.connect() as conn:
        return {j: int(n) for j, n in conn.execute(
            select(r.job, func.count(r.duration_s)).where(*counted(window, jobs))
            .group_by(r.job)) if n}


def duration_percentiles(engine: Engine, window: Window, jobs: Jobs = None,
                         percentiles: tuple[int, ...] = (50, 95),
                         counts: dict[str, int] | None = None,
                         large_window_rows: int = LARGE_WINDOW_ROWS) -> pd.DataFrame:
    """Nearest-rank duration percentiles per job over the window's non-dry runs with a
    duration: columns ``job, p50_s, p95_s`` (one per requested percentile). ``counts``
    (job → runs with a duration) saves a query when the caller has them."""
    r = t.runs.c
    names = [f"p{p}_s" for p in percentiles]
    conds = [*counted(window, jobs), r.duration_s.is_not(None)]
    if engine.dialect.name == "postgresql":
        cols = [func.percentile_disc(p / 100).within_group(r.duration_s).label(n)
                for p, n in zip(percentiles, names, strict=True)]
        query = select(r.job, *cols).where(*conds).group_by(r.job)
    else:
        if counts is None:
            counts = _timed_counts(engine, window, jobs)
        counts = {j: int(n) for j, n in counts.items() if n}
        if sum(counts.values()) >= large_window_rows:
            return _indexed_percentiles(engine, window, counts, percentiles, names)
        ranked = select(
            r.job, r.duration_s,
            func.row_number().over(partition_by=r.job, order_by=r.duration_s).label("rn"),
            func.count().over(partition_by=r.job).label("n"),
        ).where(*conds).subquery()
        cols = [func.min(case((ranked.c.rn * 100 >= ranked.c.n * p, ranked.c.duration_s)))
                .label(n) for p, n in zip(percentiles, names, strict=True)]
        query = select(ranked.c.job, *cols).group_by(ranked.c.job)
    with engine.connect() as conn:
        rows = conn.execute(query).fetchall()
    return pd.DataFrame([tuple(x) for x in rows], columns=["job", *names])


def _indexed_percentiles(engine: Engine, window: Window, counts: dict[str, int],
                         percentiles: tuple[int, ...], names: list[str]) -> pd.DataFrame:
    sql = text("SELECT duration_s FROM runs INDEXED BY ix_runs_dash_job_duration "
               "WHERE job = :job AND dry_run = 0 AND duration_s IS NOT NULL "
               "AND started_at >= :since AND started_at < :until "
               "ORDER BY duration_s LIMIT 1 OFFSET :k")
    rows = []
    with engine.connect() as conn:
        for job, n in sorted(counts.items()):
            rows.append([job, *(conn.execute(sql, {
                "job": job, "since": window.since, "until": window.until, "k": rank(n, p)})
                .scalar() for p in percentiles)])
    return pd.DataFrame(rows, columns=["job", *names])


def total_percentiles(engine: Engine, window: Window, jobs: Jobs = None,
                      percentiles: tuple[int, ...] = (50, 95),
                      large_window_rows: int = LARGE_WINDOW_ROWS) -> dict[int, float | None]:
    """Nearest-rank duration percentiles over every (filtered, non-dry) run in the
    window: count them, then ``ORDER BY duration_s LIMIT 1 OFFSET k`` per percentile
    (along the duration index when the window is large)."""
    r = t.runs.c
    conds = [*counted(window, jobs), r.duration_s.is_not(None)]
    out: dict[int, float | None] = dict.fromkeys(percentiles)
    with engine.connect() as conn:
        n = int(conn.execute(select(func.count()).select_from(t.runs).where(*conds))
                .scalar_one())
        if not n:
            return out
        large = engine.dialect.name == "sqlite" and n >= large_window_rows and not jobs
        for p in percentiles:
            if large:
                out[p] = conn.execute(text(
                    "SELECT duration_s FROM runs INDEXED BY ix_runs_dash_duration "
                    "WHERE dry_run = 0 AND duration_s IS NOT NULL AND started_at >= :since "
                    "AND started_at < :until ORDER BY duration_s LIMIT 1 OFFSET :k"),
                    {"since": window.since, "until": window.until, "k": rank(n, p)}).scalar()
            else:
                out[p] = conn.execute(select(r.duration_s).where(*conds)
                                      .order_by(r.duration_s).limit(1)
                                      .offset(rank(n, p))).scalar()
    return out
