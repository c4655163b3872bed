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
    attempts waiting in a queue (``queue_depth:<queue>`` gauges the scheduler publishes;
    ``run`` is the queue in front of the workers). ``*`` watches every queue on its own;
    a named job watches its own queue when one is published, else the ``run`` queue.
``no_success_for_s``
    seconds since the job's last successful run (or, when it never succeeded, since its
    first run or since the rule first looked at it); the window is not used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sheetops.config.model import AlertSpec, Snapshot
from sheetops.store import Store, aggregates
from sheetops.store.aggregates import Window

log = logging.getLogger("sheetops.alerts")

FAILURE_RATE_MIN_RUNS = 3
METRICS = ("failure_rate", "consecutive_failures", "duration_p95_s", "queue_depth",
           "no_success_for_s")


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
    for rule in snapshot.alerts:
        if not rule.enabled:
            continue
        if rule.metric == "queue_depth":
            found += queue_targets(rule, gauges)
            continue
        keys = jobs if rule.job == "*" else [rule.job] if rule.job in jobs else []
        if not keys:
            continue
        values = job_values(store, rule, keys, now, min_runs)
        found += [Target(rule, key, values.get(key)) for key in keys]
    return found


def queue_targets(rule: AlertSpec, gauges: dict[str, float]) -> list[Target]:
    """The queues a ``queue_depth`` rule watches, with their published depths."""
    queues = {name.partition(":")[2]: value for name, value in gauges.items()
              if name.startswith("queue_depth:")}
    if rule.job == "*":
        return [Target(rule, q, v) for q, v in sorted(queues.items())]
    if rule.job in queues:
        return [Target(rule, rule.job, queues[rule.job])]
    return [Target(rule, rule.job, queues.get("run"))]


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
