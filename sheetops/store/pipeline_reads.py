"""Read queries for pipeline monitoring: each pipeline's stages with their queue's depth,
lag, dead letters and counts, and the other durable queues.

One answer serves the dashboard's Queues page, Prometheus, the alert metrics
(``queue_depth``, ``dead_letters``, ``stage_lag_s``) and the terminal progress, so they
agree. A pipeline is a job with a source checkpoint (``pipeline_checkpoints``); its
stages are its queues ``<job>.<stage>``, in ``order`` when the caller gives it, else
in the order of its last run's result (``result["stage_order"]``), else (a first
run) by records taken, most first — upstream stages take at least as many.
Counts are the current pass's (``pipeline_counts``); the queue's numbers are read now.
Throughput is records taken by the stage per second between two samples
(:func:`with_rates`), or over the pass so far for a first sample.

Never writes; a store without the pipeline tables has no pipelines.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import DBAPIError

from sheetops.store import schema as t
from sheetops.store.outbox import QUEUE as OUTBOX_QUEUE
from sheetops.store.schema import CHECKPOINT_FINISHED, LIVE

if TYPE_CHECKING:
    from sheetops.store.store import Store


@dataclass(frozen=True)
class QueueStats:
    """One durable queue now: items ready, delayed, claimed and dead, and its lag (age
    of the oldest item not done; ``None`` when it holds none)."""

    queue: str
    ready: int = 0
    delayed: int = 0
    claimed: int = 0
    dead: int = 0
    lag_s: float | None = None

    @property
    def waiting(self) -> int:
        """Items not yet done (ready, delayed or claimed): the queue's depth."""
        return self.ready + self.delayed + self.claimed


@dataclass(frozen=True)
class StageStats:
    """One stage of one pipeline job: its queue now and its counts in the current pass.

    ``dead`` is the dead letters its queue holds now (any pass, until replayed);
    ``dead_letters`` those the current pass made. ``rate`` is records per second the
    stage took over the last ``rate_window_s`` seconds."""

    job: str
    stage: str
    index: int
    queue: QueueStats
    generation: int = 0
    pass_state: str = ""
    pass_s: float = 0.0
    records_in: int = 0
    records_out: int = 0
    records_failed: int = 0
    dead_letters: int = 0
    rate: float = 0.0
    rate_window_s: float = 0.0

    @property
    def depth(self) -> int:
        return self.queue.waiting

    @property
    def dead(self) -> int:
        return self.queue.dead

    @property
    def lag_s(self) -> float | None:
        return self.queue.lag_s


@dataclass(frozen=True)
class PipelineStats:
    """A pipeline job's pass and its stages, source first, sink last."""

    job: str
    generation: int
    state: str            # reading, read (source done, queues draining) or finished
    records_read: int
    started_at: float
    updated_at: float
    stages: tuple[StageStats, ...]

    @property
    def bottleneck(self) -> StageStats | None:
        """The stage holding the others up: the one furthest downstream whose queue is at
        least half as deep as the deepest — under backpressure the queues above a slow
        stage fill as well, so the deepest is not always the culprit. ``None`` when
        every queue is empty."""
        deepest = max((s.depth for s in self.stages), default=0)
        if deepest == 0:
            return None
        return [s for s in self.stages if s.depth * 2 >= deepest][-1]


def queue_stats(store: Store, names: Sequence[str] | None = None,
                now: float | None = None) -> dict[str, QueueStats]:
    """Every durable queue with an item (or only ``names``): two grouped queries. The
    sheet outbox is left out unless named: it has gauges of its own (``outbox_depth``,
    ``outbox_age_s``) and its own place on the pages."""
    queues = store.queues
    now = queues.now() if now is None else now
    depths = queues.depths(names)
    q = t.queue_items.c
    query = (select(q.queue, func.min(q.created_at)).where(q.state == LIVE)
             .group_by(q.queue))
    if names is not None:
        query = query.where(q.queue.in_(list(names)))
    with store.engine.connect() as conn:
        oldest = dict(conn.execute(query).all())
    out = {}
    for name, d in depths.items():
        if names is None and name == OUTBOX_QUEUE:
            continue
        first = oldest.get(name)
        out[name] = QueueStats(name, d.ready, d.delayed, d.claimed, d.dead,
                               None if first is None else max(0.0, now - float(first)))
    return out


def _stage_orders(conn: Connection, jobs: Sequence[str]) -> dict[str, list[str]]:
    """Stage order per job from its last run's ``result["stage_order"]``."""
    s, r = t.job_state.c, t.runs.c
    orders = {}
    rows = conn.execute(select(s.job, r.result).join(t.runs, r.id == s.last_run_id)
                        .where(s.job.in_(list(jobs))))
    for job, result in rows:
        try:
            stages = json.loads(result or "{}").get("stage_order")
        except (ValueError, AttributeError):
            continue
        if isinstance(stages, list):
            orders[job] = [str(stage) for stage in stages]
    return orders


def pipeline_stats(store: Store, now: float | None = None,
                   order: Mapping[str, Sequence[str]] | None = None,
                   jobs: Sequence[str] | None = None) -> list[PipelineStats]:
    """Each pipeline job (or those in ``jobs``), by name, with its stages in pipeline
    order. ``order`` maps job → stage names when the caller knows the pipeline (the
    terminal progress does); otherwise the last run's order is used."""
    now = time.time() if now is None else now
    cp, pc = t.pipeline_checkpoints.c, t.pipeline_counts.c
    try:
        with store.engine.connect() as conn:
            query = select(t.pipeline_checkpoints).order_by(cp.pipeline)
            if jobs is not None:
                query = query.where(cp.pipeline.in_(list(jobs)))
            checkpoints = conn.execute(query).all()
            if not checkpoints:
                return []
            names = [c.pipeline for c in checkpoints]
            counts = conn.execute(  # a stage's shards (threads that counted) summed
                select(pc.pipeline, pc.stage,
                       *(func.sum(pc[n]).label(n) for n in t.PIPELINE_COUNTS)).join(
                    t.pipeline_checkpoints,
                    (cp.pipeline == pc.pipeline) & (cp.generation == pc.generation))
                .where(pc.pipeline.in_(names)).group_by(pc.pipeline, pc.stage)).all()
            orders = _stage_orders(conn, names)
    except DBAPIError:  # a store older than the pipeline tables
        return []
    orders.update({job: list(stages) for job, stages in (order or {}).items()})
    by_job: dict[str, dict[str, Any]] = {}
    for row in counts:
        by_job.setdefault(row.pipeline, {})[row.stage] = row
    queues = queue_stats(store, now=now)
    out = []
    for c in checkpoints:
        prefix = f"{c.pipeline}."
        found = {name[len(prefix):] for name in queues if name.startswith(prefix)}
        found |= set(by_job.get(c.pipeline, {}))
        known = [s for s in orders.get(c.pipeline, []) if s]
        taken = {stage: int(n.records_in) for stage, n in by_job.get(c.pipeline, {}).items()}
        # not known (a first run): upstream stages have taken at least as many records
        stages = known + sorted(found - set(known), key=lambda s: (-taken.get(s, 0), s))
        end = c.updated_at if c.state == CHECKPOINT_FINISHED else now
        pass_s = max(0.0, end - c.started_at)
        rows = []
        for index, stage in enumerate(stages):
            name = f"{prefix}{stage}"
            n = by_job.get(c.pipeline, {}).get(stage)
            records_in = int(n.records_in) if n is not None else 0
            running = c.state != CHECKPOINT_FINISHED and pass_s > 0
            rows.append(StageStats(
                c.pipeline, stage, index, queues.get(name, QueueStats(name)), c.generation,
                c.state, pass_s, records_in,
                int(n.records_out) if n is not None else 0,
                int(n.records_failed) if n is not None else 0,
                int(n.dead_letters) if n is not None else 0,
                records_in / pass_s if running else 0.0, pass_s if running else 0.0))
        out.append(PipelineStats(c.pipeline, c.generation, c.state, int(c.records),
                                 c.started_at, c.updated_at, tuple(rows)))
    return out


def with_rates(current: Sequence[PipelineStats], previous: Sequence[PipelineStats],
               elapsed_s: float) -> list[PipelineStats]:
    """``current`` with each stage's rate taken over the ``elapsed_s`` seconds since
    ``previous`` (the same pass's counts a moment before): the throughput now, not the
    pass's average. A stage new since ``previous`` keeps its pass average."""
    if elapsed_s <= 0:
        return list(current)
    before = {(s.job, s.generation, s.stage): s.records_in
              for p in previous for s in p.stages}
    out = []
    for p in current:
        stages = []
        for s in p.stages:
            taken = before.get((s.job, s.generation, s.stage))
            stages.append(s if taken is None else replace(
                s, rate=max(0, s.records_in - taken) / elapsed_s, rate_window_s=elapsed_s))
        out.append(replace(p, stages=tuple(stages)))
    return out


def other_queues(store: Store, pipelines: Sequence[PipelineStats] | None = None,
                 now: float | None = None) -> list[QueueStats]:
    """Durable queues that are no pipeline's stage (``run_requests``: the Run now
    requests not yet handed to the runner; any queue of your own), by name."""
    pipelines = pipeline_stats(store, now) if pipelines is None else pipelines
    staged = {s.queue.queue for p in pipelines for s in p.stages}
    return [q for name, q in sorted(queue_stats(store, now=now).items())
            if name not in staged]


#: ``stage_totals`` outcomes, in the order of ``pipeline_counts``' columns.
OUTCOMES = ("in", "out", "failed", "dead")


def stage_totals(store: Store) -> dict[tuple[str, str], dict[str, int]]:
    """(job, stage) → records in, out, failed and dead over every pass: counters that
    only grow, for Prometheus' ``rate()``."""
    c = t.pipeline_counts.c
    query = (select(c.pipeline, c.stage, func.sum(c.records_in), func.sum(c.records_out),
                    func.sum(c.records_failed), func.sum(c.dead_letters))
             .group_by(c.pipeline, c.stage).order_by(c.pipeline, c.stage))
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(query).all()
    except DBAPIError:  # a store older than the pipeline tables
        return {}
    return {(r[0], r[1]): dict(zip(OUTCOMES, (int(v or 0) for v in r[2:]), strict=True))
            for r in rows}


def dead_letters_since(store: Store, jobs: Sequence[str], since: float
                       ) -> dict[str, int]:
    """Dead letters each pipeline job's queues made since ``since`` and still hold (a
    replayed one no longer counts): the ``dead_letters`` alert metric."""
    from sheetops.store import ledger

    names = {name: job for name in store.queues.names() for job in jobs
             if name.startswith(f"{job}.")}
    if not names:
        return {job: 0 for job in jobs}
    with store.engine.connect() as conn:
        per_queue = ledger.dead_since(conn, list(names), since)
    out = {job: 0 for job in jobs}
    for name, n in per_queue.items():
        out[names[name]] += n
    return out
