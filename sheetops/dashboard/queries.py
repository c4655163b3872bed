"""Every number the dashboard shows, as SQL aggregates over the store.

Plain functions: they take a :class:`~sheetops.store.Store` (or an Engine), a time
window and filters, and return dataclasses or pandas DataFrames; no Streamlit here, so
they are tested and benchmarked on their own. Percentiles are nearest-rank, computed in
SQL with ``ROW_NUMBER()`` over an index ordered by duration (SQLite has no percentile
function). Times are UTC epoch seconds, like the store.

Windows up to :data:`EXACT_MAX_WINDOW_S` (24 h) are exact SQL over ``runs``. Longer
windows (7 d, 30 d) read the hourly/daily rollups of :mod:`sheetops.store.rollups` for
the whole hours inside the window and the runs themselves for the partial hours at its
edges (and for anything newer than the last rollup refresh): counts, rates, records and
averages stay exact; **p50/p95 over long windows are approximate** — read from a
log-bucket histogram whose buckets are 26% wide, so within about ±12% of the exact
nearest-rank value (clamped to the window's real minimum and maximum).
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
from sqlalchemy import (
    Engine,
    Float,
    Integer,
    and_,
    case,
    cast,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.sql import ColumnElement

from sheetops import alerts as alerts_mod
from sheetops.store import rollups
from sheetops.store import schema as t
from sheetops.store.alerts_schema import EVENT_KINDS
from sheetops.store.alerts_schema import alert_events as alert_events_table
from sheetops.store.rollups import ensure_dashboard_schema, job_config
from sheetops.store.schema import RunStatus

FINISHED = (RunStatus.OK.value, RunStatus.FAILED.value, RunStatus.TIMEOUT.value)
FAILED = (RunStatus.FAILED.value, RunStatus.TIMEOUT.value)
WINDOWS = {"1h": 3600.0, "6h": 6 * 3600.0, "24h": 86400.0, "7d": 7 * 86400.0,
           "30d": 30 * 86400.0}
_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NICE_BUCKETS = (60, 300, 600, 900, 1800, 3600, 2 * 3600, 3 * 3600, 4 * 3600, 6 * 3600,
                 12 * 3600, 86400)


def parse_window(text: str) -> float:
    """``"24h"`` → 86400.0; accepts s/m/h/d suffixes (raises ValueError otherwise)."""
    m = _WINDOW.match(str(text).lower())
    if not m:
        raise ValueError(f"{text!r} is not a window; write e.g. 1h, 24h, 7d")
    return float(m.group(1)) * _UNIT[m.group(2)]


def engine_of(store: Any) -> Engine:
    """The Engine of a Store (or the Engine itself), with the dashboard indexes ensured."""
    engine = store if isinstance(store, Engine) else store.engine
    ensure_dashboard_schema(engine)
    return engine


def ensure_schema(store: Any) -> None:
    """Create the dashboard's indexes/tables on an existing store (idempotent)."""
    engine_of(store)


def _read(engine: Engine, query: Any, columns: list[str] | None = None) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(query)
        rows = result.fetchall()
        cols = columns or list(result.keys())
    return pd.DataFrame([tuple(r) for r in rows], columns=cols)


# -- filters -------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """A time window ``[since, until)`` in epoch seconds."""

    since: float
    until: float

    @classmethod
    def last(cls, seconds: float, now: float | None = None) -> Window:
        now = time.time() if now is None else now
        return cls(now - seconds, now)

    @property
    def seconds(self) -> float:
        return self.until - self.since


def _run_filter(window: Window | None, jobs: tuple[str, ...] | list[str] | None = None,
                statuses: tuple[str, ...] | list[str] | None = None) -> list[ColumnElement]:
    r = t.runs.c
    conds: list[ColumnElement] = []
    if window is not None:
        conds += [r.started_at >= window.since, r.started_at < window.until]
    if jobs:
        conds.append(r.job.in_(list(jobs)))
    if statuses:
        conds.append(r.status.in_(list(statuses)))
    return conds


def _window(window: Window | float, now: float | None) -> Window:
    return window if isinstance(window, Window) else Window.last(float(window), now)


# -- run aggregates ------------------------------------------------------------------
def _count_if(cond: ColumnElement) -> ColumnElement:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


def job_summary(store: Any, window: Window | float, now: float | None = None,
                jobs: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame:
    """Per job over the window: runs, ok, failed, timeout, running, success and failure
    rates (of finished runs), average/p50/p95 duration and records in/out/failed."""
    engine = engine_of(store)
    w = _window(window, now)
    if uses_rollups(w):
        return rollup_summary(engine, w, jobs=jobs).per_job
    r = t.runs.c
    agg = _read(engine, select(
        r.job,
        func.count().label("runs"),
        _count_if(r.status == RunStatus.OK.value).label("ok"),
        _count_if(r.status == RunStatus.FAILED.value).label("failed"),
        _count_if(r.status == RunStatus.TIMEOUT.value).label("timeout"),
        _count_if(r.status == RunStatus.RUNNING.value).label("running"),
        func.avg(r.duration_s).label("avg_s"),
        func.max(r.started_at).label("last_start"),
        func.sum(r.records_in).label("records_in"),
        func.sum(r.records_out).label("records_out"),
        func.sum(r.records_failed).label("records_failed"),
        func.count(r.duration_s).label("timed"),
    ).where(*_run_filter(w, jobs)).group_by(r.job).order_by(r.job))
    if agg.empty:
        return _empty_summary()
    pct = duration_percentiles(engine, w, jobs=jobs,
                               counts=dict(zip(agg["job"], agg["timed"], strict=True)))
    out = agg.merge(pct, on="job", how="left")
    finished = out["ok"] + out["failed"] + out["timeout"]
    out["success_rate"] = (out["ok"] / finished.where(finished > 0)).astype(float)
    out["failure_rate"] = ((out["failed"] + out["timeout"])
                           / finished.where(finished > 0)).astype(float)
    return out[SUMMARY_COLUMNS]


SUMMARY_COLUMNS = ["job", "runs", "ok", "failed", "timeout", "running", "success_rate",
                   "failure_rate", "avg_s", "p50_s", "p95_s", "records_in", "records_out",
                   "records_failed", "last_start"]


def _empty_summary() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object" if c == "job" else "float")
                         for c in SUMMARY_COLUMNS})


# Above this many runs in the window, SQLite percentiles walk a duration-ordered index
# (cost ~ runs of the job, any window) instead of sorting the window's rows.
LARGE_WINDOW_ROWS = 50_000


def _finished_counts(engine: Engine, w: Window, jobs) -> dict[str, int]:
    r = t.runs.c
    with engine.connect() as conn:
        return {j: int(n) for j, n in conn.execute(
            select(r.job, func.count(r.duration_s)).where(*_run_filter(w, jobs))
            .group_by(r.job)) if n}


def _rank(n: int, p: int) -> int:
    """0-based nearest rank of the p-th percentile among n sorted values."""
    return max(-(-n * p // 100) - 1, 0)


def duration_percentiles(store: Any, window: Window | float, now: float | None = None,
                         jobs: tuple[str, ...] | list[str] | None = None,
                         percentiles: tuple[int, ...] = (50, 95),
                         counts: dict[str, int] | None = None) -> pd.DataFrame:
    """Nearest-rank duration percentiles per job over finished runs in the window:
    columns ``job, p50_s, p95_s`` (one per requested percentile). All in SQL:
    PostgreSQL's ``percentile_disc``; on SQLite a ``ROW_NUMBER()`` ranking for small
    windows and, for large ones, ``ORDER BY duration_s LIMIT 1 OFFSET k`` per job along
    the (job, duration_s, started_at) covering index, which needs no sort."""
    engine = engine_of(store)
    w = _window(window, now)
    r = t.runs.c
    names = [f"p{p}_s" for p in percentiles]
    if engine.dialect.name == "postgresql":
        cols = [func.percentile_disc(p / 100).within_group(r.duration_s).label(n)
                for p, n in zip(percentiles, names, strict=True)]
        return _read(engine, select(r.job, *cols).where(*_run_filter(w, jobs),
                                                         r.duration_s.is_not(None))
                     .group_by(r.job))
    if counts is None:
        counts = _finished_counts(engine, w, jobs)
    counts = {j: int(n) for j, n in counts.items() if n}
    if sum(counts.values()) >= LARGE_WINDOW_ROWS:
        sql = text("SELECT duration_s FROM runs INDEXED BY ix_runs_dash_job_duration "
                   "WHERE job = :job AND duration_s IS NOT NULL AND started_at >= :since "
                   "AND started_at < :until ORDER BY duration_s LIMIT 1 OFFSET :k")
        rows = []
        with engine.connect() as conn:
            for job, n in sorted(counts.items()):
                rows.append([job, *(conn.execute(sql, {
                    "job": job, "since": w.since, "until": w.until, "k": _rank(n, p)})
                    .scalar() for p in percentiles)])
        return pd.DataFrame(rows, columns=["job", *names])
    ranked = select(
        r.job, r.duration_s,
        func.row_number().over(partition_by=r.job, order_by=r.duration_s).label("rn"),
        func.count().over(partition_by=r.job).label("n"),
    ).where(*_run_filter(w, jobs), r.duration_s.is_not(None)).subquery()
    cols = [func.min(case((ranked.c.rn * 100 >= ranked.c.n * p, ranked.c.duration_s)))
            .label(n) for p, n in zip(percentiles, names, strict=True)]
    return _read(engine, select(ranked.c.job, *cols).group_by(ranked.c.job))


def total_percentiles(store: Any, window: Window | float, now: float | None = None,
                      jobs: tuple[str, ...] | list[str] | None = None,
                      percentiles: tuple[int, ...] = (50, 95)) -> dict[int, float | None]:
    """Nearest-rank duration percentiles over all (filtered) finished runs in the window:
    count them, then ``ORDER BY duration_s LIMIT 1 OFFSET k`` for each percentile (along
    the duration index when the window is large)."""
    engine = engine_of(store)
    w = _window(window, now)
    if uses_rollups(w):
        return rollup_summary(engine, w, jobs=jobs, percentiles=percentiles).total
    r = t.runs.c
    conds = [*_run_filter(w, jobs), r.duration_s.is_not(None)]
    out: dict[int, float | None] = {p: None for p in percentiles}
    with engine.connect() as conn:
        n = int(conn.execute(select(func.count()).select_from(t.runs).where(*conds))
                .scalar_one())
        if not n:
            return out
        large = engine.dialect.name == "sqlite" and n >= LARGE_WINDOW_ROWS and not jobs
        for p in percentiles:
            if large:
                out[p] = conn.execute(text(
                    "SELECT duration_s FROM runs INDEXED BY ix_runs_dash_duration "
                    "WHERE duration_s IS NOT NULL AND started_at >= :since AND started_at < "
                    ":until ORDER BY duration_s LIMIT 1 OFFSET :k"),
                    {"since": w.since, "until": w.until, "k": _rank(n, p)}).scalar()
            else:
                out[p] = conn.execute(select(r.duration_s).where(*conds)
                                      .order_by(r.duration_s).limit(1)
                                      .offset(_rank(n, p))).scalar()
    return out


# -- long windows: the hourly/daily rollups -------------------------------------------
#: Windows up to this long are exact SQL over ``runs``; longer ones read the rollups.
EXACT_MAX_WINDOW_S = 86400.0
#: The dashboard refreshes the rollups itself when the engine has not for this long.
ROLLUP_MAX_AGE_S = 600.0


def uses_rollups(window: Window | float) -> bool:
    """Whether a window reads the rollups (and so has approximate percentiles)."""
    seconds = window.seconds if isinstance(window, Window) else float(window)
    return seconds > EXACT_MAX_WINDOW_S


def _fresh_rollups(engine: Engine) -> float:
    at = rollups.rollup_refreshed_at(engine)
    if at is None or time.time() - at > ROLLUP_MAX_AGE_S:
        rollups.refresh_rollups(engine)
        at = rollups.rollup_refreshed_at(engine)
    return float(at or 0.0)


def _ceil(x: float, step: float) -> float:
    return -(-x // step) * step


def _segments(w: Window, refreshed_at: float, daily: bool = True
              ) -> list[tuple[str, float, float]]:
    """Split ``w`` into ("raw"|"hourly"|"daily", lo, hi) pieces: whole days from
    ``runs_daily``, whole hours from ``runs_hourly``, the partial hours at the edges and
    everything from the hour of the last rollup refresh on from ``runs``."""
    hour, day = rollups.HOUR_S, rollups.DAY_S
    a = _ceil(w.since, hour)
    b = min((w.until // hour) * hour, (refreshed_at // hour) * hour)
    if b <= a:
        return [("raw", w.since, w.until)]
    segs = [("raw", w.since, a)] if w.since < a else []
    d1, d2 = _ceil(a, day), (b // day) * day
    if daily and d1 < d2:
        segs += [("hourly", a, d1)] if a < d1 else []
        segs.append(("daily", d1, d2))
        segs += [("hourly", d2, b)] if d2 < b else []
    else:
        segs.append(("hourly", a, b))
    if b < w.until:
        segs.append(("raw", b, w.until))
    return segs


def _segment_source(kind: str, lo: float, hi: float, jobs) -> Any:
    """A selectable with ``period, job`` and the rollup columns for one segment."""
    if kind == "raw":
        r = t.runs.c
        conds = [r.started_at >= lo, r.started_at < hi]
        if jobs:
            conds.append(r.job.in_(list(jobs)))
        return rollups.raw_rollup_select(conds).subquery()
    table, period = ((rollups.runs_hourly, "hour") if kind == "hourly"
                     else (rollups.runs_daily, "day"))
    conds = [table.c[period] >= lo, table.c[period] < hi]
    if jobs:
        conds.append(table.c.job.in_(list(jobs)))
    return select(table.c[period].label("period"), table).where(*conds).subquery()


_SUMMED = (*rollups.COUNT_COLUMNS, "duration_sum")


def _rollup_aggregate(engine: Engine, w: Window, jobs, key: str, hist: bool,
                      origin: float = 0.0, bucket: float = 3600.0,
                      daily: bool = True) -> pd.DataFrame:
    """The rollup columns over ``w`` grouped by ``key`` ("job", or "b" = time bucket
    index from ``origin``), summed over the segments of :func:`_segments`."""
    refreshed = _fresh_rollups(engine)
    frames = []
    with engine.connect() as conn:
        for kind, lo, hi in _segments(w, refreshed, daily):
            src = _segment_source(kind, lo, hi, jobs)
            c = src.c
            group = (c.job if key == "job" else cast(func.floor(
                (c.period - rollups._num(origin)) / rollups._num(bucket)), Integer))
            cols = [group.label(key), *(func.sum(c[x]).label(x) for x in _SUMMED),
                    func.min(c.duration_min).label("duration_min"),
                    func.max(c.duration_max).label("duration_max"),
                    func.max(c.last_start).label("last_start")]
            if hist:
                cols += [func.sum(c[x]).label(x) for x in rollups.HIST_COLUMNS]
            result = conn.execute(select(*cols).group_by(group))
            frames.append(pd.DataFrame(result.fetchall(), columns=list(result.keys())))
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=[key, *_SUMMED, "duration_min", "duration_max",
                                     "last_start", *(rollups.HIST_COLUMNS if hist else ())])
    df = pd.concat(frames, ignore_index=True)
    agg = {x: "sum" for x in df.columns if x != key}
    agg.update(duration_min="min", duration_max="max", last_start="max")
    return df.groupby(key, as_index=False).agg(agg)


def hist_percentiles(hist: Any, lo: Any, hi: Any, p: int) -> Any:
    """Nearest-rank percentile ``p`` of each row of a bucket-count matrix: the geometric
    middle of the bucket holding rank ⌈n·p/100⌉, clamped to ``[lo, hi]`` (the rows' real
    min and max; exactly those for the first and the last rank); NaN for empty rows."""
    import numpy as np

    h = np.asarray(hist, dtype=float).reshape(-1, rollups.HIST_BUCKETS)
    n = h.sum(axis=1)
    k = np.maximum(np.ceil(n * p / 100), 1)
    idx = (h.cumsum(axis=1) < k[:, None]).sum(axis=1)
    mids = np.array([rollups.bucket_value(i) for i in range(rollups.HIST_BUCKETS)])
    values = mids[np.minimum(idx, rollups.HIST_BUCKETS - 1)]
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    values = np.clip(values, lo, hi)
    # the first and the last rank are the real min and max
    values = np.where(k >= n, hi, np.where(k <= 1, lo, values))
    return np.where(n > 0, values, np.nan)


@dataclass
class RollupSummary:
    """:func:`job_summary` and the total percentiles of a long window, from rollups."""

    per_job: pd.DataFrame
    total: dict[int, float | None]


def rollup_summary(store: Any, window: Window | float, now: float | None = None,
                   jobs: tuple[str, ...] | list[str] | None = None,
                   percentiles: tuple[int, ...] = (50, 95)) -> RollupSummary:
    """Per job and in total over a (long) window from the rollups: exact counts, rates,
    records and averages; approximate percentiles (see the module docstring)."""
    engine = engine_of(store)
    w = _window(window, now)
    df = _rollup_aggregate(engine, w, jobs, "job", hist=True)
    df = df[df["runs"] > 0].sort_values("job").reset_index(drop=True)
    hcols = list(rollups.HIST_COLUMNS)
    if df.empty:
        return RollupSummary(_empty_summary(), {p: None for p in percentiles})
    out = df[["job", "runs", "ok", "failed", "timeout", "running", "records_in",
              "records_out", "records_failed", "last_start"]].copy()
    for col in ("runs", "ok", "failed", "timeout", "running", "records_in", "records_out",
                "records_failed"):
        out[col] = out[col].astype(int)
    timed = df["timed"].astype(float)
    out["avg_s"] = (df["duration_sum"].astype(float) / timed.where(timed > 0)).astype(float)
    hist = df[hcols].to_numpy(dtype=float)
    for p in percentiles:
        out[f"p{p}_s"] = hist_percentiles(hist, df["duration_min"].fillna(0),
                                          df["duration_max"].fillna(0), p)
    finished = out["ok"] + out["failed"] + out["timeout"]
    out["success_rate"] = (out["ok"] / finished.where(finished > 0)).astype(float)
    out["failure_rate"] = ((out["failed"] + out["timeout"])
                           / finished.where(finished > 0)).astype(float)
    total_hist = hist.sum(axis=0)
    lo, hi = df["duration_min"].min(), df["duration_max"].max()
    total = {}
    for p in percentiles:
        v = hist_percentiles(total_hist, [0 if pd.isna(lo) else lo],
                             [0 if pd.isna(hi) else hi], p)[0]
        total[p] = None if pd.isna(v) else float(v)
    return RollupSummary(out[SUMMARY_COLUMNS] if {"p50_s", "p95_s"} <= set(out) else out,
                         total)


def _runs_over_time_rollup(engine: Engine, w: Window, jobs, bucket: int,
                           origin: float) -> pd.DataFrame:
    df = _rollup_aggregate(engine, w, jobs, "b", hist=False, origin=origin,
                           bucket=float(bucket), daily=bucket % int(rollups.DAY_S) == 0)
    timed = df["timed"].astype(float)
    return pd.DataFrame({
        "b": df["b"].astype(int), "runs": df["runs"],
        "ok": df["ok"], "failed": df["failed"].astype(int) + df["timeout"].astype(int),
        "avg_s": (df["duration_sum"].astype(float) / timed.where(timed > 0)).astype(float),
        "max_s": df["duration_max"].astype(float)})


@dataclass(frozen=True)
class Totals:
    """All jobs together over the window."""

    runs: int = 0
    ok: int = 0
    failed: int = 0
    timeout: int = 0
    running: int = 0
    records_in: int = 0
    records_out: int = 0
    records_failed: int = 0
    p50_s: float | None = None
    p95_s: float | None = None

    @property
    def finished(self) -> int:
        return self.ok + self.failed + self.timeout

    @property
    def success_rate(self) -> float | None:
        return self.ok / self.finished if self.finished else None

    @property
    def failure_rate(self) -> float | None:
        return (self.failed + self.timeout) / self.finished if self.finished else None


def totals_from(summary: pd.DataFrame, p50: float | None, p95: float | None) -> Totals:
    """Sum the per-job SQL aggregates (exact for counts) into :class:`Totals`."""
    if summary.empty:
        return Totals(p50_s=p50, p95_s=p95)
    s = summary.sum(numeric_only=True)
    return Totals(**{k: int(s[k]) for k in ("runs", "ok", "failed", "timeout", "running",
                                             "records_in", "records_out", "records_failed")},
                  p50_s=p50, p95_s=p95)


def totals(store: Any, window: Window | float, now: float | None = None,
           jobs: tuple[str, ...] | list[str] | None = None) -> Totals:
    """Totals over the window straight from SQL (one aggregate plus the percentiles)."""
    engine = engine_of(store)
    w = _window(window, now)
    if uses_rollups(w):
        rs = rollup_summary(engine, w, jobs=jobs)
        return totals_from(rs.per_job, rs.total[50], rs.total[95])
    r = t.runs.c
    with engine.connect() as conn:
        row = conn.execute(select(
            func.count(), _count_if(r.status == RunStatus.OK.value),
            _count_if(r.status == RunStatus.FAILED.value),
            _count_if(r.status == RunStatus.TIMEOUT.value),
            _count_if(r.status == RunStatus.RUNNING.value),
            func.coalesce(func.sum(r.records_in), 0), func.coalesce(func.sum(r.records_out), 0),
            func.coalesce(func.sum(r.records_failed), 0),
        ).where(*_run_filter(w, jobs))).one()
    pct = total_percentiles(engine, w, jobs=jobs)
    return Totals(*(int(v or 0) for v in row), p50_s=pct[50], p95_s=pct[95])


def bucket_seconds(window_s: float, target: int = 48) -> int:
    """A round bucket size giving about ``target`` points across the window."""
    raw = window_s / target
    return next((b for b in _NICE_BUCKETS if b >= raw), _NICE_BUCKETS[-1])


def runs_over_time(store: Any, window: Window | float, now: float | None = None,
                   jobs: tuple[str, ...] | list[str] | None = None,
                   bucket_s: int | None = None) -> pd.DataFrame:
    """Runs, ok, failed (incl. timeouts), average and max duration per time bucket:
    columns ``time`` (UTC datetime of the bucket start), ``runs, ok, failed, avg_s,
    max_s``. Empty buckets are filled with zeros so the chart shows the gaps."""
    engine = engine_of(store)
    w = _window(window, now)
    bucket = bucket_s or bucket_seconds(w.seconds)
    r = t.runs.c
    origin = (w.since // bucket) * bucket
    aggs = [func.count().label("runs"), _count_if(r.status == RunStatus.OK.value).label("ok"),
            _count_if(r.status.in_(FAILED)).label("failed"),
            cast(func.avg(r.duration_s), Float).label("avg_s"),
            func.max(r.duration_s).label("max_s")]
    if uses_rollups(w):
        df = _runs_over_time_rollup(engine, w, jobs, bucket, origin)
    elif engine.dialect.name == "sqlite":
        # One range scan per bucket along the started_at covering index: linear in the
        # window's runs, where GROUP BY on a computed bucket would sort them all.
        rows = []
        with engine.connect() as conn:
            edges = [max(origin + i * bucket, w.since)
                     for i in range(int((w.until - origin) // bucket) + 2)]
            for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
                hi = min(hi, w.until)
                if hi <= lo:
                    continue
                row = conn.execute(select(*aggs).where(
                    *_run_filter(Window(lo, hi), jobs))).one()
                if row[0]:
                    rows.append((i, *row))
        df = pd.DataFrame(rows, columns=["b", "runs", "ok", "failed", "avg_s", "max_s"])
    else:
        index = func.floor((r.started_at - literal(origin)) / literal(float(bucket)))
        df = _read(engine, select(cast(index, Integer).label("b"), *aggs)
                   .where(*_run_filter(w, jobs)).group_by("b").order_by("b"))
    n_buckets = int((w.until - origin) // bucket) + 1
    full = pd.DataFrame({"b": range(n_buckets)})
    df = full.merge(df, on="b", how="left")
    for col in ("runs", "ok", "failed"):
        df[col] = df[col].fillna(0).astype(int)
    df["time"] = pd.to_datetime(origin + df["b"] * bucket, unit="s", utc=True)
    return df[["time", "runs", "ok", "failed", "avg_s", "max_s"]]


def status_counts(store: Any, window: Window | float, now: float | None = None,
                  jobs: tuple[str, ...] | list[str] | None = None) -> dict[str, int]:
    """Number of runs per status in the window (every status present, zeros included)."""
    engine = engine_of(store)
    r = t.runs.c
    w = _window(window, now)
    with engine.connect() as conn:
        rows = conn.execute(select(r.status, func.count()).where(*_run_filter(w, jobs))
                            .group_by(r.status)).all()
    counts = {s.value: 0 for s in RunStatus}
    counts.update({s: int(n) for s, n in rows})
    return counts


def running_now(store: Any) -> pd.DataFrame:
    """Runs in state running or queued right now (any age): id, job, status, started_at."""
    engine = engine_of(store)
    r = t.runs.c
    return _read(engine, select(r.id, r.job, r.status, r.trigger, r.started_at, r.attempts,
                                r.requested_by)
                 .where(r.status.in_([RunStatus.RUNNING.value, RunStatus.QUEUED.value]))
                 .order_by(r.started_at.desc()).limit(500))


# -- gauges, queues, outbox, config ----------------------------------------------------
def gauges(store: Any) -> dict[str, tuple[float, float]]:
    """All gauges: name → (value, updated_at)."""
    engine = engine_of(store)
    g = t.gauges.c
    with engine.connect() as conn:
        return {n: (float(v), float(u)) for n, v, u in
                conn.execute(select(g.name, g.value, g.updated_at))}


def queue_depths(store: Any, gauge_values: dict[str, tuple[float, float]] | None = None
                 ) -> pd.DataFrame:
    """Queue depth per pipeline stage from the ``queue_depth:<stage>`` gauges."""
    values = gauges(store) if gauge_values is None else gauge_values
    rows = [(name.split(":", 1)[1], int(v), u) for name, (v, u) in sorted(values.items())
            if name.startswith("queue_depth:")]
    df = pd.DataFrame(rows, columns=["stage", "depth", "updated_at"])
    df["updated_at"] = pd.to_datetime(df["updated_at"], unit="s", utc=True)
    return df


@dataclass(frozen=True)
class SchedulerStatus:
    """Whether a scheduler holds the store's lease, and when one last beat (published
    its gauges). Without a holder, every number on the page is frozen: nothing runs."""

    holder: str
    lease_expires_at: float | None
    last_beat_at: float | None

    @property
    def running(self) -> bool:
        return bool(self.holder)


def scheduler_status(store: Any, now: float | None = None,
                     gauge_values: dict[str, tuple[float, float]] | None = None
                     ) -> SchedulerStatus:
    """The lease holder (an unexpired lease) and the ``scheduler_heartbeat`` gauge."""
    from sheetops.leader import SCHEDULER

    now = time.time() if now is None else now
    values = gauges(store) if gauge_values is None else gauge_values
    lease = t.leases.c
    with engine_of(store).connect() as conn:
        row = conn.execute(select(lease.holder, lease.expires_at).where(
            lease.name == SCHEDULER, lease.expires_at >= now)).first()
    beat = values.get("scheduler_heartbeat")
    return SchedulerStatus(row[0] if row else "", float(row[1]) if row else None,
                           beat[0] if beat else None)


@dataclass(frozen=True)
class OutboxStatus:
    """Pending (undelivered) sheet writes: how many, the oldest one's age, per tab."""

    depth: int = 0
    oldest_age_s: float | None = None
    by_tab: dict[str, int] = field(default_factory=dict)


def outbox_status(store: Any, now: float | None = None) -> OutboxStatus:
    engine = engine_of(store)
    o = t.outbox.c
    now = time.time() if now is None else now
    with engine.connect() as conn:
        rows = conn.execute(select(o.tab, func.count(), func.min(o.created_at))
                            .where(o.delivered_at.is_(None)).group_by(o.tab)).all()
    if not rows:
        return OutboxStatus()
    oldest = min(float(r[2]) for r in rows)
    return OutboxStatus(depth=sum(int(r[1]) for r in rows),
                        oldest_age_s=max(now - oldest, 0.0),
                        by_tab={r[0]: int(r[1]) for r in rows})


def run_requests(store: Any, limit: int = 100, pending_only: bool = False) -> pd.DataFrame:
    """The "Run now" queue, newest first: who asked, when, whether it was picked up."""
    engine = engine_of(store)
    q = t.run_requests.c
    query = select(q.id, q.job, q.dry_run, q.requested_by, q.created_at, q.claimed_at,
                   q.run_id).order_by(q.id.desc()).limit(limit)
    if pending_only:
        query = query.where(q.claimed_at.is_(None))
    return _read(engine, query)


def pending_requests(store: Any) -> int:
    engine = engine_of(store)
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t.run_requests)
                                .where(t.run_requests.c.claimed_at.is_(None))).scalar_one())


@dataclass(frozen=True)
class ConfigStatus:
    """The last config refresh and the current problems found in the sheet."""

    last_refresh_at: float | None = None
    last_refresh_ok: bool | None = None
    errors: int = 0
    warnings: int = 0
    jobs_configured: int = 0


def config_status(store: Any, gauge_values: dict[str, tuple[float, float]] | None = None
                  ) -> ConfigStatus:
    engine = engine_of(store)
    values = gauges(engine) if gauge_values is None else gauge_values
    p = t.config_problems.c
    with engine.connect() as conn:
        sev = dict(conn.execute(select(p.severity, func.count()).group_by(p.severity)).all())
        jobs_n = int(conn.execute(select(func.count()).select_from(job_config)).scalar_one())
        last_event = conn.execute(select(func.max(t.config_events.c.time))
                                  .where(t.config_events.c.kind == "refresh")).scalar()
    at = values.get("last_refresh_at", (None, None))[0] or last_event
    ok = values.get("last_refresh_ok")
    return ConfigStatus(last_refresh_at=at, last_refresh_ok=None if ok is None else bool(ok[0]),
                        errors=int(sev.get("error", 0)), warnings=int(sev.get("warning", 0)),
                        jobs_configured=jobs_n)


def problems(store: Any) -> pd.DataFrame:
    """Current Validation rows: tab, cell, value, problem, severity."""
    engine = engine_of(store)
    p = t.config_problems.c
    return _read(engine, select(p.tab, p.cell, p.value, p.problem, p.severity)
                 .order_by(case((p.severity == "error", 0), else_=1), p.id))


def invalid_jobs(store: Any) -> pd.DataFrame:
    """Jobs-tab rows that the last validation rejected (they are not scheduled and so are
    missing from the published jobs): row, cell, value, problem — one line per problem."""
    df = problems(store)
    df = df[(df["tab"] == "Jobs") & (df["severity"] == "error")].copy()
    df.insert(0, "row", df["cell"].str.extract(r"(\d+)$")[0].astype("Int64"))
    return df.drop(columns=["tab", "severity"]).sort_values(["row", "cell"],
                                                            kind="stable")


def config_events(store: Any, limit: int = 200) -> pd.DataFrame:
    """Config change history, newest first: time, kind, job, detail."""
    engine = engine_of(store)
    e = t.config_events.c
    df = _read(engine, select(e.time, e.kind, e.job, e.detail)
               .order_by(e.time.desc(), e.id.desc()).limit(limit))
    df["time"] = pd.to_datetime(df["time"], unit="s", utc=True)
    return df


# -- alerts (tables and reads owned by sheetops.alerts) ---------------------------------
ALERT_EVENT_COLUMNS = ["time", "kind", "rule", "job", "metric", "value", "threshold",
                       "channel", "subject", "delivered_at", "error", "id"]
FIRING_COLUMNS = ["rule", "job", "metric", "last_value", "threshold", "firing_since",
                  "last_notified_at", "last_sent_at", "undelivered", "channel",
                  "evaluated_at"]


def _epoch_to_utc(df: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for col in columns:
        df[col] = pd.to_datetime(df[col], unit="s", utc=True)
    return df


def alert_events(store: Any, limit: int = 200,
                 kinds: tuple[str, ...] | list[str] | None = None,
                 jobs: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame:
    """The alert history (``alert_events``: fired, reminder, resolved, delivery_failed),
    newest first, through :func:`sheetops.alerts.recent_alert_events`; times as UTC
    datetimes, ``delivered_at`` empty when the message did not reach its channel."""
    engine = engine_of(store)
    if jobs and len(jobs) == 1:
        rows = alerts_mod.recent_alert_events(engine, limit, job=jobs[0], kinds=kinds)
    else:
        rows = alerts_mod.recent_alert_events(engine, limit if not jobs else 10 * limit,
                                              kinds=kinds)
        if jobs:
            rows = [row for row in rows if row["job"] in set(jobs)][:limit]
    df = pd.DataFrame(rows, columns=[*ALERT_EVENT_COLUMNS, "message", "format"])
    return _epoch_to_utc(df[ALERT_EVENT_COLUMNS], "time", "delivered_at")


def alert_event_counts(store: Any) -> dict[str, int]:
    """Number of ``alert_events`` rows per kind (every kind present, zeros included)."""
    engine = engine_of(store)
    alerts_mod.ensure_alert_tables(engine)
    e = alert_events_table.c
    with engine.connect() as conn:
        rows = conn.execute(select(e.kind, func.count()).group_by(e.kind)).all()
    counts = dict.fromkeys(EVENT_KINDS, 0)
    counts.update({k: int(n) for k, n in rows})
    return counts


def alerts_firing(store: Any) -> pd.DataFrame:
    """The (rule, job) pairs firing now (``alert_state``), longest-firing first, through
    :func:`sheetops.alerts.firing_alerts`; ``undelivered`` says a message still waits
    for its channel."""
    df = pd.DataFrame(alerts_mod.firing_alerts(engine_of(store)), columns=FIRING_COLUMNS)
    return _epoch_to_utc(df, "firing_since", "last_notified_at", "last_sent_at",
                         "evaluated_at")


# -- jobs, runs, errors --------------------------------------------------------------
def job_configs(store: Any) -> pd.DataFrame:
    """The job configuration the scheduler published last (see
    :func:`sheetops.store.rollups.publish_job_config`)."""
    engine = engine_of(store)
    c = job_config.c
    return _read(engine, select(c.job, c.automation, c.schedule, c.timezone, c.enabled,
                                c.owner, c.notes, c.published_at).order_by(c.job))


def job_names(store: Any) -> list[str]:
    """Every job the store knows: configured, with state, or with runs (indexed)."""
    engine = engine_of(store)
    with engine.connect() as conn:
        names = set(conn.execute(select(job_config.c.job)).scalars())
        names |= set(conn.execute(select(t.job_state.c.job)).scalars())
        if not names:
            names |= set(conn.execute(select(t.runs.c.job).distinct()).scalars())
    return sorted(names)


def job_states(store: Any) -> pd.DataFrame:
    engine = engine_of(store)
    return _read(engine, select(t.job_state).order_by(t.job_state.c.job))


def jobs_table(store: Any, window: Window | float, now: float | None = None) -> pd.DataFrame:
    """One row per job: configuration (schedule in words, enabled), current state
    (last status, consecutive failures, last success) and the window's aggregates."""
    summary = job_summary(store, window, now)
    states = job_states(store)
    configs = job_configs(store)
    out = pd.DataFrame({"job": pd.Series(job_names(store), dtype=object)})
    if out.empty:
        return out
    if not configs.empty:
        configs = configs.assign(schedule_words=configs["schedule"].map(describe_schedule))
        out = out.merge(configs[["job", "automation", "schedule", "schedule_words",
                                 "timezone", "enabled", "owner"]], on="job", how="left")
    if not states.empty:
        out = out.merge(states[["job", "last_status", "last_start", "last_end",
                                "last_duration_s", "consecutive_failures",
                                "last_success_at"]], on="job", how="left")
    out = out.merge(summary.drop(columns=["last_start"]), on="job", how="left")
    return out


def describe_schedule(text: str) -> str:
    from sheetops.config.schedule import ScheduleError, parse_schedule

    try:
        return parse_schedule(text).describe()
    except (ScheduleError, ValueError):
        return f"invalid schedule: {text}"


def next_runs(schedule: str, timezone: str, now: float | None = None,
              count: int = 3) -> list[datetime]:
    """The next ``count`` fire times of a schedule in its timezone ([] for manual or an
    invalid schedule): the same trigger the scheduler uses."""
    from sheetops.config.schedule import ScheduleError, next_fire_times, parse_schedule

    try:
        tz = ZoneInfo(timezone or "UTC")
        trigger = parse_schedule(schedule).trigger(tz)
    except (ScheduleError, ValueError, KeyError):
        return []
    if trigger is None:
        return []
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
    return next_fire_times(trigger, moment.astimezone(tz), count)


RUN_COLUMNS = ["id", "job", "trigger", "status", "started_at", "finished_at", "duration_s",
               "attempts", "records_in", "records_out", "records_failed", "error_type",
               "error_message", "dry_run", "requested_by"]


def runs_list(store: Any, window: Window | float | None = None, now: float | None = None,
              jobs: tuple[str, ...] | list[str] | None = None,
              statuses: tuple[str, ...] | list[str] | None = None,
              limit: int = 200) -> pd.DataFrame:
    """Recent runs matching the filters, newest first (times as UTC datetimes)."""
    engine = engine_of(store)
    w = None if window is None else _window(window, now)
    r = t.runs.c
    df = _read(engine, select(*(r[c] for c in RUN_COLUMNS))
               .where(*_run_filter(w, jobs, statuses))
               .order_by(r.started_at.desc(), r.id.desc()).limit(limit))
    for col in ("started_at", "finished_at"):
        df[col] = pd.to_datetime(df[col], unit="s", utc=True)
    return df


def attempts_of(store: Any, run_ids: list[str]) -> pd.DataFrame:
    """Attempts of the given runs (with tracebacks), by run then attempt number."""
    engine = engine_of(store)
    a = t.attempts.c
    if not run_ids:
        return pd.DataFrame(columns=["run_id", "attempt", "status", "started_at",
                                     "finished_at", "error_type", "error_message",
                                     "traceback"])
    df = _read(engine, select(a.run_id, a.attempt, a.status, a.started_at, a.finished_at,
                              a.error_type, a.error_message, a.traceback)
               .where(a.run_id.in_(run_ids)).order_by(a.run_id, a.attempt))
    for col in ("started_at", "finished_at"):
        df[col] = pd.to_datetime(df[col], unit="s", utc=True)
    return df


ERROR_COLUMNS = ["id", "time", "job", "run_id", "stage", "attempt", "error_type", "message",
                 "record_key", "traceback"]


def errors_list(store: Any, window: Window | float | None = None, now: float | None = None,
                jobs: tuple[str, ...] | list[str] | None = None,
                run_ids: list[str] | None = None, limit: int = 200) -> pd.DataFrame:
    """Recent errors matching the filters, newest first (with traceback text)."""
    engine = engine_of(store)
    e = t.errors.c
    conds: list[ColumnElement] = []
    if window is not None:
        w = _window(window, now)
        conds += [e.time >= w.since, e.time < w.until]
    if jobs:
        conds.append(e.job.in_(list(jobs)))
    if run_ids is not None:
        conds.append(e.run_id.in_(run_ids))
    df = _read(engine, select(*(e[c] for c in ERROR_COLUMNS)).where(and_(True, *conds))
               .order_by(e.time.desc(), e.id.desc()).limit(limit))
    df["time"] = pd.to_datetime(df["time"], unit="s", utc=True)
    return df


def error_counts(store: Any, window: Window | float, now: float | None = None,
                 jobs: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame:
    """Errors in the window grouped by job, stage and error type, most frequent first."""
    engine = engine_of(store)
    w = _window(window, now)
    e = t.errors.c
    conds = [e.time >= w.since, e.time < w.until]
    if jobs:
        conds.append(e.job.in_(list(jobs)))
    df = _read(engine, select(e.job, e.stage, e.error_type, func.count().label("errors"),
                              func.max(e.time).label("last_seen"))
               .where(*conds).group_by(e.job, e.stage, e.error_type)
               .order_by(func.count().desc(), e.job))
    df["last_seen"] = pd.to_datetime(df["last_seen"], unit="s", utc=True)
    return df


# -- the Overview page, as one call -----------------------------------------------------
@dataclass
class Overview:
    """Everything the Overview page draws, computed by SQL aggregates."""

    window: Window
    totals: Totals
    per_job: pd.DataFrame
    over_time: pd.DataFrame
    running: int
    pending_requests: int
    queues: pd.DataFrame
    outbox: OutboxStatus
    config: ConfigStatus
    alerts_firing: pd.DataFrame
    problems: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def approximate(self) -> bool:
        """Percentiles come from the rollups' histogram (windows longer than 24 h)."""
        return uses_rollups(self.window)


def overview(store: Any, window: Window | float, now: float | None = None,
             jobs: tuple[str, ...] | list[str] | None = None) -> Overview:
    """All the Overview's numbers (the page calls exactly this; so does the bench)."""
    w = _window(window, now)
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        timings[name] = time.perf_counter() - t0
        return value

    engine = engine_of(store)
    if uses_rollups(w):
        rs = timed("job_summary", rollup_summary, engine, w, jobs=jobs)
        per_job, pct = rs.per_job, rs.total
        timings["total_percentiles"] = 0.0
    else:
        per_job = timed("job_summary", job_summary, engine, w, jobs=jobs)
        pct = timed("total_percentiles", total_percentiles, engine, w, jobs=jobs)
    over_time = timed("runs_over_time", runs_over_time, engine, w, jobs=jobs)
    g = timed("gauges", gauges, engine)
    firing = timed("alerts", alerts_firing, engine)
    with engine.connect() as conn:
        t0 = time.perf_counter()
        running = int(conn.execute(select(func.count()).select_from(t.runs).where(
            t.runs.c.status == RunStatus.RUNNING.value)).scalar_one())
        timings["running"] = time.perf_counter() - t0
    return Overview(
        window=w, totals=totals_from(per_job, pct[50], pct[95]), per_job=per_job,
        over_time=over_time, running=running,
        pending_requests=timed("pending_requests", pending_requests, engine),
        queues=queue_depths(engine, g), outbox=timed("outbox", outbox_status, engine,
                                                     now=w.until),
        config=timed("config", config_status, engine, g), alerts_firing=firing,
        problems=timed("problems", problems, engine), timings=timings)
