"""What the dashboard pages show: the store's read queries (:mod:`sheetops.store.reads`,
re-exported here so pages import only this module) shaped for the pages — windows by
name, schedules in words, next fire times, the Jobs table and the Overview in one call.

No SQL here and no writes: the store is opened read-only in spirit
(:func:`open_store` never migrates; a store that needs it says so in one sentence).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pandas as pd

from sheetops.store import RunStatus, Store
from sheetops.store.aggregates import Jobs
from sheetops.store.pipeline_reads import (  # pipeline stages and durable queues
    PipelineStats,
    QueueStats,
    StageStats,
    other_queues,
    pipeline_stats,
    with_rates,
)
from sheetops.store.reads import (  # the store's read queries, re-exported for pages
    ALERT_EVENT_COLUMNS,
    DRY_RUNS,
    ERROR_COLUMNS,
    EXACT_MAX_WINDOW_S,
    FIRING_COLUMNS,
    LARGE_WINDOW_ROWS,
    RUN_COLUMNS,
    SUMMARY_COLUMNS,
    ConfigStatus,
    OutboxStatus,
    RollupSummary,
    SchedulerStatus,
    Totals,
    Window,
    alert_event_counts,
    alert_events,
    alerts_firing,
    attempts_of,
    bucket_seconds,
    config_events,
    config_status,
    duration_percentiles,
    error_counts,
    errors_list,
    gauges,
    hist_percentiles,
    job_configs,
    job_names,
    job_states,
    job_summary,
    outbox_status,
    pending_requests,
    problems,
    queue_depths,
    rollup_summary,
    run_requests,
    running_now,
    runs_list,
    runs_over_time,
    scheduler_status,
    status_counts,
    total_percentiles,
    totals,
    totals_from,
    uses_rollups,
)

__all__ = [
    "ALERT_EVENT_COLUMNS",
    "DRY_RUNS",
    "ERROR_COLUMNS",
    "EXACT_MAX_WINDOW_S",
    "FAILED",
    "FINISHED",
    "FIRING_COLUMNS",
    "LARGE_WINDOW_ROWS",
    "RUN_COLUMNS",
    "SUMMARY_COLUMNS",
    "WINDOWS",
    "ConfigStatus",
    "OutboxStatus",
    "Overview",
    "PipelineStats",
    "QueueStats",
    "RollupSummary",
    "SchedulerStatus",
    "StageStats",
    "Totals",
    "Window",
    "alert_event_counts",
    "alert_events",
    "alerts_firing",
    "attempts_of",
    "bucket_seconds",
    "config_events",
    "config_status",
    "describe_schedule",
    "duration_percentiles",
    "error_counts",
    "errors_list",
    "gauges",
    "hist_percentiles",
    "invalid_jobs",
    "job_configs",
    "job_names",
    "job_states",
    "job_summary",
    "jobs_table",
    "next_runs",
    "open_store",
    "other_queues",
    "outbox_status",
    "overview",
    "parse_window",
    "pending_requests",
    "pipeline_stats",
    "problems",
    "queue_depths",
    "rollup_summary",
    "run_requests",
    "running_now",
    "runs_list",
    "runs_over_time",
    "scheduler_status",
    "stage_table",
    "status_counts",
    "total_percentiles",
    "totals",
    "totals_from",
    "uses_rollups",
    "with_rates",
]

FINISHED = tuple(s.value for s in (RunStatus.OK, RunStatus.FAILED, RunStatus.TIMEOUT))
FAILED = (RunStatus.FAILED.value, RunStatus.TIMEOUT.value)
WINDOWS = {"1h": 3600.0, "6h": 6 * 3600.0, "24h": 86400.0, "7d": 7 * 86400.0,
           "30d": 30 * 86400.0}
_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def open_store(url: str) -> Store:
    """The store at ``url`` for reading: never migrated here (raises
    :class:`~sheetops.store.StoreNeedsMigration` when it needs ``sheetops migrate``)."""
    return Store(url, migrate=False)


def parse_window(text: str) -> float:
    """``"24h"`` → 86400.0; accepts s/m/h/d suffixes (raises ValueError otherwise)."""
    m = _WINDOW.match(str(text).lower())
    if not m:
        raise ValueError(f"{text!r} is not a window; write e.g. 1h, 24h, 7d")
    return float(m.group(1)) * _UNIT[m.group(2)]


def invalid_jobs(store: Store) -> pd.DataFrame:
    """Jobs-tab rows that the last validation rejected (they are not scheduled and so are
    missing from the published jobs): row, cell, value, problem — one line per problem."""
    df = problems(store)
    df = df[(df["tab"] == "Jobs") & (df["severity"] == "error")].copy()
    df.insert(0, "row", df["cell"].str.extract(r"(\d+)$")[0].astype("Int64"))
    return df.drop(columns=["tab", "severity"]).sort_values(["row", "cell"],
                                                            kind="stable")


def jobs_table(store: Store, window: Window | float, now: float | None = None) -> pd.DataFrame:
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
    exact_max_window_s: float | None = None

    @property
    def approximate(self) -> bool:
        """Percentiles come from the rollups' histogram (windows longer than 24 h)."""
        return uses_rollups(self.window, self.exact_max_window_s)


def overview(store: Store, window: Window | float, now: float | None = None,
             jobs: Jobs = None, *, exact_max_window_s: float | None = None) -> Overview:
    """All the Overview's numbers (the page calls exactly this; so does the bench).
    ``exact_max_window_s`` moves the line between exact SQL and the rollups."""
    w = window if isinstance(window, Window) else Window.last(float(window), now)
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        timings[name] = time.perf_counter() - t0
        return value

    if uses_rollups(w, exact_max_window_s):
        rs = timed("job_summary", rollup_summary, store, w, jobs=jobs)
        per_job, pct = rs.per_job, rs.total
        timings["total_percentiles"] = 0.0
    else:
        per_job = timed("job_summary", job_summary, store, w, jobs=jobs,
                        exact_max_window_s=exact_max_window_s)
        pct = timed("total_percentiles", total_percentiles, store, w, jobs=jobs,
                    exact_max_window_s=exact_max_window_s)
    over_time = timed("runs_over_time", runs_over_time, store, w, jobs=jobs,
                      exact_max_window_s=exact_max_window_s)
    g = timed("gauges", gauges, store)
    firing = timed("alerts", alerts_firing, store)
    running = timed("running", store.count_runs, status=RunStatus.RUNNING.value)
    return Overview(
        window=w, totals=totals_from(per_job, pct[50], pct[95]), per_job=per_job,
        over_time=over_time, running=running,
        pending_requests=timed("pending_requests", pending_requests, store),
        queues=queue_depths(store, g), outbox=timed("outbox", outbox_status, store,
                                                    now=w.until),
        config=timed("config", config_status, store, g), alerts_firing=firing,
        problems=timed("problems", problems, store), timings=timings,
        exact_max_window_s=exact_max_window_s)


# -- pipelines: the Queues and Dead letters pages --------------------------------------
STAGE_COLUMNS = ["job", "stage", "depth", "ready", "claimed", "delayed", "rate_per_s",
                 "records_in", "records_out", "failed", "dead_letters", "lag_s"]


def stage_table(pipelines: list[PipelineStats]) -> pd.DataFrame:
    """One row per stage of every pipeline, in pipeline order: the Queues page's table.
    ``dead_letters`` counts what the stage's queue holds now (until replayed)."""
    rows = [[s.job, s.stage, s.depth, s.queue.ready, s.queue.claimed, s.queue.delayed,
             round(s.rate, 1), s.records_in, s.records_out, s.records_failed, s.dead,
             s.lag_s] for p in pipelines for s in p.stages]
    return pd.DataFrame(rows, columns=STAGE_COLUMNS)


LETTER_COLUMNS = ["id", "dead_at", "stage", "key", "error_type", "message", "attempts",
                  "record"]


def dead_letters(store: Store, job: str, *, stage: str | None = None,
                 error_type: str | None = None, since: float | None = None,
                 limit: int = 1000) -> pd.DataFrame:
    """A pipeline job's dead letters, oldest first, filtered like ``sheetops
    dead-letters``; the record as JSON text, the time as a UTC datetime."""
    import json

    from sheetops.pipelines import deadletters

    found = deadletters.letters(store.queues, job, stage=stage, error_type=error_type,
                                since=since, limit=limit)
    df = pd.DataFrame([[d.id, d.dead_at, d.stage, d.key, d.error_type, d.message,
                        d.attempts, json.dumps(d.record, ensure_ascii=False, default=str)]
                       for d in found], columns=LETTER_COLUMNS)
    df["dead_at"] = pd.to_datetime(df["dead_at"], unit="s", utc=True)
    return df
