"""The value of each alert rule's metric, per job (or queue), at one instant.

Rates and percentiles come from :mod:`sheetops.store.aggregates`, the implementation the
dashboard's pages read too, so a page and the alert that fires on it agree (one rule for
dry runs: left out). ``window`` below is the rule's window column.

``failure_rate``
    (failed + timed out) / finished runs that started in the window, dry runs left out;
    only judged with at least ``min_runs`` (default 3) finished runs, so one failed run
    out of one is not a 100% failure rate.
``consecutive_failures``
    failed runs in a row (the Status tab's column); the window is not used.
``duration_p95_s``
    95th percentile (nearest rank) of the durations of runs finished in the window.
``queue_depth``
    items not yet done in a durable queue, or attempts waiting for a worker (the
    ``(runner)`` target, from the ``attempts_waiting`` gauge the scheduler publishes). ``*``
    watches every queue on its own and the runner; a named job watches each of its
    pipeline stages' queues (``<job>.<stage>``) when it has any, else a queue named like
    the job, else the runner.
``no_success_for_s``
    seconds since the job's last successful run (or, when it never succeeded, since its
    first run or since the rule first looked at it); the window is not used.
``dead_letters``
    dead letters a pipeline job's stages made in the window and still hold (replayed
    ones leave the count). ``*``: each enabled pipeline job.
``stage_lag_s``
    seconds the oldest item has waited in each stage's queue of a pipeline job (0 when
    empty), one target per queue (``<job>.<stage>``); the window is not used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sheetops.config.model import AlertSpec, Snapshot
from sheetops.store import Store, aggregates, pipeline_reads
from sheetops.store.aggregates import Window
from sheetops.tabs import ALERT_METRICS

log = logging.getLogger("sheetops.alerts")

FAILURE_RATE_MIN_RUNS = 3
METRICS = ALERT_METRICS
#: The ``queue_depth`` target of attempts waiting for a worker (no queue has this name:
#: parentheses never appear in a pipeline's ``<job>.<stage>``).
RUNNER = "(runner)"


@dataclass
class Target:
    """One (rule, job-or-queue) pair to judge, with its metric's value now (None: not
    enough data to say)."""

    rule: AlertSpec
    key: str               # job (or queue) name
    value: float | None


def targets(store: Store, snapshot: Snapshot, now: float,
            min_runs: int = FAILURE_RATE_MIN_RUNS) -> list[Target]:
    """Every enabled rule of ``snapshot`` expanded to its jobs (``*``: each enabled job)
    or queues, with the metric's value at ``now``."""
    jobs = sorted(j.job for j in snapshot.jobs.values() if j.enabled)
    gauges = {name: value for name, (value, _at) in store.gauges().items()}
    found: list[Target] = []
    queues: dict[str, pipeline_reads.QueueStats] | None = None
    stages: dict[str, dict[str, float | None]] | None = None
    for rule in snapshot.alerts:
        if not rule.enabled:
            continue
        if rule.metric in ("queue_depth", "stage_lag_s"):
            if stages is None:
                pipes = pipeline_reads.pipeline_stats(store, now)
                stages = {p.job: {s.queue.queue: s for s in p.stages} for p in pipes}
                queues = pipeline_reads.queue_stats(store, now=now)
            found += (queue_targets(rule, gauges, queues, stages)
                      if rule.metric == "queue_depth" else lag_targets(rule, jobs, stages))
            continue
        keys = jobs if rule.job == "*" else [rule.job] if rule.job in jobs else []
        if not keys:
            continue
        if rule.metric == "dead_letters":
            found += dead_letter_targets(store, rule, keys, now)
            continue
        values = job_values(store, rule, keys, now, min_runs)
        found += [Target(rule, key, values.get(key)) for key in keys]
    return found


Stages = dict[str, dict[str, pipeline_reads.StageStats]]  # job → stage queue → stats


def queue_targets(rule: AlertSpec, gauges: dict[str, float],
                  queues: dict[str, pipeline_reads.QueueStats], stages: Stages
                  ) -> list[Target]:
    """The queues a ``queue_depth`` rule watches, with their depths: each durable
    queue's read now, a queue only a gauge publishes (``queue_depth:<queue>``) by its
    gauge, and the runner's attempts waiting."""
    depths = {name.partition(":")[2]: value for name, value in gauges.items()
              if name.startswith("queue_depth:")}
    depths.update({name: float(q.waiting) for name, q in queues.items()})
    runner = gauges.get("attempts_waiting")
    if rule.job == "*":
        return ([Target(rule, q, v) for q, v in sorted(depths.items())]
                + [Target(rule, RUNNER, runner)])
    if stages.get(rule.job):
        return [Target(rule, q, float(s.depth)) for q, s in stages[rule.job].items()]
    if rule.job in depths:
        return [Target(rule, rule.job, depths[rule.job])]
    return [Target(rule, RUNNER, runner)]


def lag_targets(rule: AlertSpec, jobs: list[str], stages: Stages) -> list[Target]:
    """Each stage queue of the rule's pipeline job(s), with its lag (0 when empty)."""
    watched = jobs if rule.job == "*" else [rule.job] if rule.job in jobs else []
    return [Target(rule, name, s.lag_s or 0.0)
            for job in watched for name, s in stages.get(job, {}).items()]


def dead_letter_targets(store: Store, rule: AlertSpec, jobs: list[str], now: float
                        ) -> list[Target]:
    """Dead letters made in the window per pipeline job (``*``: jobs that are
    pipelines; a named job is judged even before its first dead letter)."""
    pipelines = {p.job for p in pipeline_reads.pipeline_stats(store, now, jobs=jobs)}
    watched = [j for j in jobs if j in pipelines] if rule.job == "*" else jobs
    counts = pipeline_reads.dead_letters_since(store, watched, now - rule.window_s)
    return [Target(rule, job, float(counts.get(job, 0))) for job in watched]


def job_values(store: Store, rule: AlertSpec, jobs: list[str], now: float,
               min_runs: int = FAILURE_RATE_MIN_RUNS) -> dict[str, float]:
    """The metric of ``rule`` per job; a job without enough data is left out."""
    window = Window(now - rule.window_s, now)
    if rule.metric == "failure_rate":
        return aggregates.failure_rates(store.engine, window, jobs, min_runs)
    if rule.metric == "duration_p95_s":
        df = aggregates.duration_percentiles(store.engine, window, jobs, (95,))
        return {job: float(v) for job, v in zip(df["job"], df["p95_s"], strict=True)
                if v is not None}
    health = store.alerts.job_health(jobs)
    if rule.metric == "consecutive_failures":
        return {job: float(health[job][0] if job in health else 0) for job in jobs}
    if rule.metric == "no_success_for_s":
        missing = [j for j in jobs if j not in health or health[j][1] is None]
        first_run = store.alerts.first_runs(missing)
        first_seen = store.alerts.first_seen(rule.name)
        values = {}
        for job in jobs:
            success = health[job][1] if job in health else None
            base = (success if success is not None else
                    first_run.get(job) or first_seen.get(job) or now)
            values[job] = max(0.0, now - base)
        return values
    log.warning("alert %r: unknown metric %r", rule.name, rule.metric)
    return {}
