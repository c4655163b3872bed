"""The dashboard's read queries: every number a page shows, as SQL over the store.

Plain functions over a :class:`~sheetops.store.Store`, a time window and filters,
returning dataclasses or pandas DataFrames; they never write (no DDL, no rollup refresh:
the engine keeps the rollups), so they run on a read-only store. Rates and percentiles
come from :mod:`sheetops.store.aggregates`, the implementation the alert metrics use:
**dry runs are left out of every aggregate and counted apart** (``dry_runs``).
Percentiles are nearest-rank. Times are UTC epoch seconds, like the store.

Windows up to ``exact_max_window_s`` (24 h by default) are exact SQL over ``runs``.
Longer windows (7 d, 30 d) read the hourly/daily rollups of :mod:`sheetops.store.rollups`
for the whole hours inside the window and the runs themselves for the partial hours at
its edges (and for anything newer than the last rollup refresh): counts, rates, records
and averages stay exact; **p50/p95 over long windows are approximate** — read from a
log-bucket histogram whose buckets are 26% wide, so within about ±12% of the exact
nearest-rank value (clamped to the window's real minimum and maximum).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
)
from sqlalchemy.sql import ColumnElement

from sheetops.store import aggregates as agg
from sheetops.store import rollups
from sheetops.store import schema as t
from sheetops.store.aggregates import LARGE_WINDOW_ROWS, Window, counted, run_filter
from sheetops.store.requests import QUEUE as RUN_REQUESTS_QUEUE
from sheetops.store.schema import FAILURES, UNFINISHED, RunStatus, job_config
from sheetops.store.store import run_output

if TYPE_CHECKING:
    from sheetops.store.store import Store

Jobs = Sequence[str] | None

_NICE_BUCKETS = (60, 300, 600, 900, 1800, 3600, 2 * 3600, 3 * 3600, 4 * 3600, 6 * 3600,
                 12 * 3600, 86400)


def engine_of(store: Store) -> Engine:
    """The Engine of a Store."""
    return store.engine


def _read(engine: Engine, query: Any, columns: list[str] | None = None) -> pd.DataFrame:
    with engine.connect() as conn:
        result = conn.execute(query)
        rows = result.fetchall()
        cols = columns or list(result.keys())
    return pd.DataFrame([tuple(r) for r in rows], columns=cols)


def _window(window: Window | float, now: float | None) -> Window:
    """A :class:`Window`, or the last ``window`` seconds before ``now``."""
    return window if isinstance(window, Window) else Window.last(float(window), now)


# -- run aggregates ------------------------------------------------------------------
SUMMARY_COLUMNS = ["job", "runs", "ok", "failed", "timeout", "running", "success_rate",
                   "failure_rate", "avg_s", "p50_s", "p95_s", "records_in", "records_out",
                   "records_failed", "dry_runs", "last_start"]


def job_summary(store: Store, window: Window | float, now: float | None = None,
                jobs: Jobs = None, *, exact_max_window_s: float | None = None,
                large_window_rows: int = LARGE_WINDOW_ROWS) -> pd.DataFrame:
    """Per job over the window: runs, ok, failed, timeout, running, success and failure
    rates (of finished runs), average/p50/p95 duration, records in/out/failed — dry runs
    left out of all of them and counted in ``dry_runs``."""
    engine = engine_of(store)
    w = _window(window, now)
    if uses_rollups(w, exact_max_window_s):
        return rollup_summary(store, w, jobs=jobs).per_job
    counts = agg.job_counts(engine, w, jobs)
    if counts.empty:
        return _empty_summary()
    pct = agg.duration_percentiles(
        engine, w, jobs, counts=dict(zip(counts["job"], counts["timed"], strict=True)),
        large_window_rows=large_window_rows)
    out = agg.with_rates(counts.merge(pct, on="job", how="left"))
    return out[SUMMARY_COLUMNS]


def _empty_summary() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object" if c == "job" else "float")
                         for c in SUMMARY_COLUMNS})


def duration_percentiles(store: Store, window: Window | float, now: float | None = None,
                         jobs: Jobs = None, percentiles: tuple[int, ...] = (50, 95),
                         counts: dict[str, int] | None = None, *,
                         large_window_rows: int = LARGE_WINDOW_ROWS) -> pd.DataFrame:
    """Nearest-rank duration percentiles per job (columns ``job, p50_s, p95_s``): see
    :func:`sheetops.store.aggregates.duration_percentiles`."""
    return agg.duration_percentiles(engine_of(store), _window(window, now), jobs,
                                    percentiles, counts, large_window_rows)


def total_percentiles(store: Store, window: Window | float, now: float | None = None,
                      jobs: Jobs = None, percentiles: tuple[int, ...] = (50, 95), *,
                      exact_max_window_s: float | None = None,
                      large_window_rows: int = LARGE_WINDOW_ROWS) -> dict[int, float | None]:
    """Nearest-rank duration percentiles over all (filtered, non-dry) runs in the
    window (from the rollups' histogram over long windows)."""
    w = _window(window, now)
    if uses_rollups(w, exact_max_window_s):
        return rollup_summary(store, w, jobs=jobs, percentiles=percentiles).total
    return agg.total_percentiles(engine_of(store), w, jobs, percentiles, large_window_rows)


# -- long windows: the hourly/daily rollups -------------------------------------------
#: Windows up to this long are exact SQL over ``runs``; longer ones read the rollups.
EXACT_MAX_WINDOW_S = 86400.0


def uses_rollups(window: Window | float, exact_max_window_s: float | None = None) -> bool:
    """Whether a window reads the rollups (and so has approximate percentiles)."""
    seconds = window.seconds if isinstance(window, Window) else float(window)
    limit = EXACT_MAX_WINDOW_S if exact_max_window_s is None else exact_max_window_s
    return seconds > limit


def _rollups_refreshed_at(engine: Engine) -> float:
    """Runs started before this are in the rollups; later ones are read raw (0: none)."""
    return float(rollups.rollup_refreshed_at(engine) or 0.0)


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
    refreshed = _rollups_refreshed_at(engine)
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


def rollup_summary(store: Store, window: Window | float, now: float | None = None,
                   jobs: Jobs = None,
                   percentiles: tuple[int, ...] = (50, 95)) -> RollupSummary:
    """Per job and in total over a (long) window from the rollups: exact counts, rates,
    records and averages; approximate percentiles (see the module docstring)."""
    engine = engine_of(store)
    w = _window(window, now)
    df = _rollup_aggregate(engine, w, jobs, "job", hist=True)
    df = df[(df["runs"] > 0) | (df["dry_runs"] > 0)].sort_values("job").reset_index(drop=True)
    hcols = list(rollups.HIST_COLUMNS)
    if df.empty:
        return RollupSummary(_empty_summary(), {p: None for p in percentiles})
    out = df[["job", "runs", "ok", "failed", "timeout", "running", "records_in",
              "records_out", "records_failed", "dry_runs", "last_start"]].copy()
    for col in ("runs", "ok", "failed", "timeout", "running", "records_in", "records_out",
                "records_failed", "dry_runs"):
        out[col] = out[col].astype(int)
    timed = df["timed"].astype(float)
    out["avg_s"] = (df["duration_sum"].astype(float) / timed.where(timed > 0)).astype(float)
    hist = df[hcols].to_numpy(dtype=float)
    for p in percentiles:
        out[f"p{p}_s"] = hist_percentiles(hist, df["duration_min"].fillna(0),
                                          df["duration_max"].fillna(0), p)
    out = agg.with_rates(out)
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
    dry_runs: int = 0
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
                                             "records_in", "records_out", "records_failed",
                                             "dry_runs")},
                  p50_s=p50, p95_s=p95)


def totals(store: Store, window: Window | float, now: float | None = None,
           jobs: Jobs = None, *, exact_max_window_s: float | None = None) -> Totals:
    """Totals over the window: the per-job aggregates summed, plus the percentiles."""
    w = _window(window, now)
    if uses_rollups(w, exact_max_window_s):
        rs = rollup_summary(store, w, jobs=jobs)
        return totals_from(rs.per_job, rs.total[50], rs.total[95])
    pct = total_percentiles(store, w, jobs=jobs)
    return totals_from(agg.job_counts(engine_of(store), w, jobs), pct[50], pct[95])


def bucket_seconds(window_s: float, target: int = 48) -> int:
    """A round bucket size giving about ``target`` points across the window."""
    raw = window_s / target
    return next((b for b in _NICE_BUCKETS if b >= raw), _NICE_BUCKETS[-1])


def runs_over_time(store: Store, window: Window | float, now: float | None = None,
                   jobs: Jobs = None,
                   bucket_s: int | None = None, *,
                   exact_max_window_s: float | None = None) -> pd.DataFrame:
    """Runs, ok, failed (incl. timeouts), average and max duration per time bucket:
    columns ``time`` (UTC datetime of the bucket start), ``runs, ok, failed, avg_s,
    max_s``. Empty buckets are filled with zeros so the chart shows the gaps."""
    engine = engine_of(store)
    w = _window(window, now)
    bucket = bucket_s or bucket_seconds(w.seconds)
    r = t.runs.c
    origin = (w.since // bucket) * bucket
    aggs = [func.count().label("runs"), agg.count_if(r.status == RunStatus.OK.value).label("ok"),
            agg.count_if(r.status.in_([f.value for f in FAILURES])).label("failed"),
            cast(func.avg(r.duration_s), Float).label("avg_s"),
            func.max(r.duration_s).label("max_s")]
    if uses_rollups(w, exact_max_window_s):
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
                    *counted(Window(lo, hi), jobs))).one()
                if row[0]:
                    rows.append((i, *row))
        df = pd.DataFrame(rows, columns=["b", "runs", "ok", "failed", "avg_s", "max_s"])
    else:
        index = func.floor((r.started_at - literal(origin)) / literal(float(bucket)))
        df = _read(engine, select(cast(index, Integer).label("b"), *aggs)
                   .where(*counted(w, jobs)).group_by("b").order_by("b"))
    n_buckets = int((w.until - origin) // bucket) + 1
    full = pd.DataFrame({"b": range(n_buckets)})
    df = full.merge(df, on="b", how="left")
    for col in ("runs", "ok", "failed"):
        df[col] = df[col].fillna(0).astype(int)
    df["time"] = pd.to_datetime(origin + df["b"] * bucket, unit="s", utc=True)
    return df[["time", "runs", "ok", "failed", "avg_s", "max_s"]]


def status_counts(store: Store, window: Window | float, now: float | None = None,
                  jobs: Jobs = None) -> dict[str, int]:
    """Number of runs per status in the window (every status present, zeros included),
    dry runs left out and counted under ``dry runs``."""
    engine = engine_of(store)
    r = t.runs.c
    w = _window(window, now)
    with engine.connect() as conn:
        rows = conn.execute(select(r.status, r.dry_run, func.count())
                            .where(*run_filter(w, jobs)).group_by(r.status, r.dry_run)).all()
    counts = {s.value: 0 for s in RunStatus}
    counts[DRY_RUNS] = 0
    for status, dry, n in rows:
        key = DRY_RUNS if dry else status
        counts[key] = counts.get(key, 0) + int(n)
    return counts


#: The key of :func:`status_counts` that counts dry runs.
DRY_RUNS = "dry runs"


def running_now(store: Store) -> pd.DataFrame:
    """Runs in state running or queued right now (any age): id, job, status, started_at."""
    engine = engine_of(store)
    r = t.runs.c
    return _read(engine, select(r.id, r.job, r.status, r.trigger, r.started_at, r.attempts,
                                r.requested_by)
                 .where(r.status.in_([u.value for u in UNFINISHED]))
                 .order_by(r.started_at.desc()).limit(500))


# -- gauges, queues, outbox, config ----------------------------------------------------
def gauges(store: Store) -> dict[str, tuple[float, float]]:
    """All gauges: name → (value, updated_at)."""
    return store.config.gauges()


def queue_depths(store: Store, gauge_values: dict[str, tuple[float, float]] | None = None
                 ) -> pd.DataFrame:
    """Queue depth per stage: the ``queue_depth:<stage>`` gauges the scheduler published,
    with every durable queue's own depth read now in place of its gauge (right even
    while no scheduler runs). The Run now queue is left out: the pages list its requests
    on their own (:func:`run_requests`)."""
    values = dict(gauges(store) if gauge_values is None else gauge_values)
    now = time.time()
    values.update({f"queue_depth:{name}": (float(n), now)
                   for name, n in store.queue_depths().items()})
    rows = [(stage, int(v), u) for name, (v, u) in sorted(values.items())
            if name.startswith("queue_depth:")
            and (stage := name.split(":", 1)[1]) != RUN_REQUESTS_QUEUE]
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


def scheduler_status(store: Store, now: float | None = None,
                     gauge_values: dict[str, tuple[float, float]] | None = None
                     ) -> SchedulerStatus:
    """The lease holder (an unexpired lease) and the ``scheduler_heartbeat`` gauge."""
    from sheetops.leader import SCHEDULER

    now = time.time() if now is None else now
    values = gauges(store) if gauge_values is None else gauge_values
    row = store.leases.lease_holder(SCHEDULER, now)
    beat = values.get("scheduler_heartbeat")
    return SchedulerStatus(row[0] if row else "", float(row[1]) if row else None,
                           beat[0] if beat else None)


@dataclass(frozen=True)
class OutboxStatus:
    """Pending (undelivered) sheet writes: how many, the oldest one's age, per tab."""

    depth: int = 0
    oldest_age_s: float | None = None
    by_tab: dict[str, int] = field(default_factory=dict)


def outbox_status(store: Store, now: float | None = None) -> OutboxStatus:
    now = time.time() if now is None else now
    pending = store.outbox.pending()
    if not pending.count:
        return OutboxStatus()
    return OutboxStatus(depth=pending.count, oldest_age_s=pending.age_s(now),
                        by_tab=pending.by_tab)


def run_requests(store: Store, limit: int = 100, pending_only: bool = False) -> pd.DataFrame:
    """The "Run now" queue, newest first: who asked, when, whether it was picked up."""
    engine = engine_of(store)
    q = t.run_requests.c
    query = select(q.id, q.job, q.dry_run, q.requested_by, q.created_at, q.claimed_at,
                   q.run_id).order_by(q.id.desc()).limit(limit)
    if pending_only:
        query = query.where(q.claimed_at.is_(None))
    return _read(engine, query)


def pending_requests(store: Store) -> int:
    return store.requests.pending_count()


@dataclass(frozen=True)
class ConfigStatus:
    """The last config refresh and the current problems found in the sheet."""

    last_refresh_at: float | None = None
    last_refresh_ok: bool | None = None
    errors: int = 0
    warnings: int = 0
    jobs_configured: int = 0


def config_status(store: Store, gauge_values: dict[str, tuple[float, float]] | None = None
                  ) -> ConfigStatus:
    engine = engine_of(store)
    values = gauges(store) if gauge_values is None else gauge_values
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


def problems(store: Store) -> pd.DataFrame:
    """Current Validation rows: tab, cell, value, problem, severity."""
    engine = engine_of(store)
    p = t.config_problems.c
    return _read(engine, select(p.tab, p.cell, p.value, p.problem, p.severity)
                 .order_by(case((p.severity == "error", 0), else_=1), p.id))


def config_events(store: Store, limit: int = 200) -> pd.DataFrame:
    """Config change history, newest first: time, kind, job, detail."""
    engine = engine_of(store)
    e = t.config_events.c
    df = _read(engine, select(e.time, e.kind, e.job, e.detail)
               .order_by(e.time.desc(), e.id.desc()).limit(limit))
    df["time"] = pd.to_datetime(df["time"], unit="s", utc=True)
    return df


# -- alerts -----------------------------------------------------------------------------
ALERT_EVENT_COLUMNS = ["time", "kind", "rule", "job", "metric", "value", "threshold",
                       "channel", "subject", "delivered_at", "error", "id"]
FIRING_COLUMNS = ["rule", "job", "metric", "last_value", "threshold", "firing_since",
                  "last_notified_at", "last_sent_at", "undelivered", "channel",
                  "evaluated_at"]


def _epoch_to_utc(df: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for col in columns:
        df[col] = pd.to_datetime(df[col], unit="s", utc=True)
    return df


def alert_events(store: Store, limit: int = 200, kinds: Sequence[str] | None = None,
                 jobs: Jobs = None) -> pd.DataFrame:
    """The alert history (fired, reminder, resolved, delivery_failed), newest first;
    times as UTC datetimes, ``delivered_at`` empty when the message did not reach its
    channel."""
    if jobs and len(jobs) == 1:
        rows = store.alerts.recent_events(limit, job=jobs[0], kinds=kinds)
    else:
        rows = store.alerts.recent_events(limit if not jobs else 10 * limit, kinds=kinds)
        if jobs:
            rows = [row for row in rows if row["job"] in set(jobs)][:limit]
    df = pd.DataFrame(rows, columns=[*ALERT_EVENT_COLUMNS, "message", "format"])
    return _epoch_to_utc(df[ALERT_EVENT_COLUMNS], "time", "delivered_at")


def alert_event_counts(store: Store) -> dict[str, int]:
    """Number of alert events per kind (every kind present, zeros included)."""
    return store.alerts.event_counts()


def alerts_firing(store: Store) -> pd.DataFrame:
    """The (rule, job) pairs firing now, longest-firing first; ``undelivered`` says a
    message still waits for its channel."""
    df = pd.DataFrame(store.alerts.firing(), columns=FIRING_COLUMNS)
    return _epoch_to_utc(df, "firing_since", "last_notified_at", "last_sent_at",
                         "evaluated_at")


# -- jobs, runs, errors --------------------------------------------------------------
def job_configs(store: Store) -> pd.DataFrame:
    """The job configuration the scheduler published last (see
    :meth:`sheetops.store.config.ConfigStore.publish_job_config`)."""
    engine = engine_of(store)
    c = job_config.c
    return _read(engine, select(c.job, c.automation, c.schedule, c.timezone, c.enabled,
                                c.owner, c.notes, c.published_at).order_by(c.job))


def job_names(store: Store) -> list[str]:
    """Every job the store knows: configured, with state, or with runs (indexed)."""
    engine = engine_of(store)
    with engine.connect() as conn:
        names = set(conn.execute(select(job_config.c.job)).scalars())
        names |= set(conn.execute(select(t.job_state.c.job)).scalars())
        if not names:
            names |= set(conn.execute(select(t.runs.c.job).distinct()).scalars())
    return sorted(names)


def job_states(store: Store) -> pd.DataFrame:
    engine = engine_of(store)
    return _read(engine, select(t.job_state).order_by(t.job_state.c.job))


RUN_COLUMNS = ["id", "job", "trigger", "status", "started_at", "finished_at", "duration_s",
               "attempts", "records_in", "records_out", "records_failed", "error_type",
               "error_message", "dry_run", "requested_by"]


def runs_list(store: Store, window: Window | float | None = None, now: float | None = None,
              jobs: Jobs = None,
              statuses: Jobs = None,
              limit: int = 200) -> pd.DataFrame:
    """Recent runs matching the filters, newest first (times as UTC datetimes), with the
    ``output`` each one kept for people to open (a report notebook's HTML), if any."""
    engine = engine_of(store)
    w = None if window is None else _window(window, now)
    r = t.runs.c
    df = _read(engine, select(*(r[c] for c in RUN_COLUMNS), r.result)
               .where(*run_filter(w, jobs, statuses))
               .order_by(r.started_at.desc(), r.id.desc()).limit(limit))
    for col in ("started_at", "finished_at"):
        df[col] = pd.to_datetime(df[col], unit="s", utc=True)
    df["output"] = df.pop("result").map(run_output).astype(object)
    return df


def attempts_of(store: Store, run_ids: list[str]) -> pd.DataFrame:
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


def errors_list(store: Store, window: Window | float | None = None, now: float | None = None,
                jobs: Jobs = None,
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


def error_counts(store: Store, window: Window | float, now: float | None = None,
                 jobs: Jobs = None) -> pd.DataFrame:
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
