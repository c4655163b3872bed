"""The store: one façade over the focused stores, chosen by URL.

``sqlite:///file.db`` by default, ``postgresql+psycopg://…`` for scale. Each concern has
its own small store — :attr:`Store.runs` (runs, attempts, errors, job state),
:attr:`Store.leases`, :attr:`Store.requests` (Run now, on the durable queue
:attr:`Store.queues`), :attr:`Store.outbox` (the sheet outbox, on the same queue),
:attr:`Store.config` (problems, config events, gauges, extents, published jobs),
:attr:`Store.alerts`, :attr:`Store.rollups`, :attr:`Store.task_deliveries` (the Celery
tier's redelivery counts) — over one engine. The methods on
:class:`Store` itself are the same calls, kept for the code that was written against
the single class.

Opening a store brings its schema to this code's revision (:mod:`sheetops.store.migrate`)
unless ``migrate=False`` (the dashboard), which only checks it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from sheetops.store import migrate as migrations
from sheetops.store.alerts import AlertStore
from sheetops.store.config import ConfigStore
from sheetops.store.db import Database, safe_url
from sheetops.store.leases import Fence, LeaseStore
from sheetops.store.outbox import QUEUE as OUTBOX_QUEUE
from sheetops.store.outbox import OutboxPending, OutboxStore
from sheetops.store.queue_sql import Queues
from sheetops.store.requests import RunRequestStore
from sheetops.store.rollups import RollupStore
from sheetops.store.runs import Batch, RunStore
from sheetops.store.task_deliveries import TaskDeliveryStore

if TYPE_CHECKING:
    from sheetops.config.model import JobSpec, Problem

__all__ = ["Batch", "Store", "open_store", "result_summary"]


class Store:
    """Durable state of sheetops. Safe to share between threads of one process."""

    def __init__(self, url: str, engine: Engine | None = None, *,
                 migrate: bool = True) -> None:
        self.db = Database(url, engine)
        self.url = url
        self.engine = self.db.engine
        if migrate and not self.db.read_only:
            migrations.migrate(self.db)
        else:
            migrations.check(self.db)
        self.outbox = OutboxStore(lambda: self.queues)
        self.runs = RunStore(self.db, self.outbox)
        self.leases = LeaseStore(self.db)
        self.requests = RunRequestStore(self.db, lambda: self.queues)
        self.config = ConfigStore(self.db, self.outbox)
        self.alerts = AlertStore(self.db)
        self.rollups = RollupStore(self.db)
        self.task_deliveries = TaskDeliveryStore(self.db, self.runs)

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for messages and the dashboard."""
        return safe_url(self.url)

    @functools.cached_property
    def queues(self) -> Queues:
        """The durable queues of this store (docs/queue.md), opened on first use."""
        return Queues(self.engine)

    def queue_depths(self) -> dict[str, int]:
        """Items not yet done (ready, delayed or claimed) per durable queue that has any:
        what the ``queue_depth:<queue>`` gauges, the Queues page and Prometheus show. The
        sheet outbox is left out: it has its own (:meth:`pending_outbox`, the
        ``outbox_depth`` and ``outbox_age_s`` gauges)."""
        return {name: d.waiting for name, d in self.queues.depths().items()
                if d.waiting and name != OUTBOX_QUEUE}

    def dispose(self) -> None:
        if "queues" in self.__dict__:
            self.queues.dispose()
        self.db.dispose()

    def analyze(self) -> None:
        """Refresh the query planner's statistics, so the dashboard's covering indexes
        are chosen on a large store (SQLite ``ANALYZE``; PostgreSQL's autovacuum keeps
        its own). The engine calls it on its hourly housekeeping."""
        if self.db.dialect == "sqlite":
            with self.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")

    # -- runs --------------------------------------------------------------------------
    def record(self, batch: Batch) -> None:
        self.runs.record(batch)

    def interrupt_unfinished(self, keep: Iterable[str] = ()) -> list[str]:
        return self.runs.interrupt_unfinished(keep)

    def set_fire_times(self, times: dict[str, float], fence: Fence | None = None) -> None:
        self.runs.set_fire_times(times, fence)

    def prune(self, older_than: float) -> int:
        return self.runs.prune(older_than)

    def job_states(self) -> dict[str, dict[str, Any]]:
        return self.runs.job_states()

    def recent_runs(self, limit: int, job: str | None = None) -> list[dict[str, Any]]:
        return self.runs.recent_runs(limit, job)

    def recent_errors(self, limit: int, job: str | None = None) -> list[dict[str, Any]]:
        return self.runs.recent_errors(limit, job)

    def run(self, run_id: str) -> dict[str, Any] | None:
        return self.runs.run(run_id)

    def attempts_of(self, run_id: str) -> list[dict[str, Any]]:
        return self.runs.attempts_of(run_id)

    def count_runs(self, job: str | None = None, status: str | None = None) -> int:
        return self.runs.count_runs(job, status)

    # -- leases ------------------------------------------------------------------------
    def try_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        return self.leases.try_lease(name, holder, ttl_s)

    def steal_lease(self, name: str, dead_holder: str, holder: str, ttl_s: float) -> bool:
        return self.leases.steal_lease(name, dead_holder, holder, ttl_s)

    def release_lease(self, name: str, holder: str) -> None:
        self.leases.release_lease(name, holder)

    def lease_holder(self, name: str) -> tuple[str, float] | None:
        return self.leases.lease_holder(name)

    # -- run requests ------------------------------------------------------------------
    def request_run(self, job: str, requested_by: str, dry_run: bool = False) -> int:
        return self.requests.request_run(job, requested_by, dry_run)

    def claim_run_requests(self, consumer: str = "", lease_s: float | None = None, *,
                           new_run_id: Callable[[], str] | None = None,
                           fence: Fence | None = None) -> list[dict[str, Any]]:
        return self.requests.claim_run_requests(consumer, lease_s, new_run_id=new_run_id,
                                                fence=fence)

    def link_request(self, request_id: int, run_id: str | None) -> None:
        self.requests.link_request(request_id, run_id)

    # -- outbox ------------------------------------------------------------------------
    def pending_outbox(self) -> OutboxPending:
        return self.outbox.pending()

    # -- config ------------------------------------------------------------------------
    def replace_problems(self, problems: Sequence[Problem]) -> bool:
        return self.config.replace_problems(problems)

    def problems(self) -> list[dict[str, Any]]:
        return self.config.problems()

    def add_config_events(self, events: Iterable[tuple[str, str, str]]) -> None:
        self.config.add_config_events(events)

    def set_gauges(self, values: Mapping[str, float]) -> None:
        self.config.set_gauges(values)

    def gauges(self) -> dict[str, tuple[float, float]]:
        return self.config.gauges()

    def set_extent(self, tab: str, rows: int) -> None:
        self.config.set_extent(tab, rows)

    def extents(self) -> dict[str, int]:
        return self.config.extents()

    def publish_job_config(self, jobs: Mapping[str, JobSpec] | Iterable[JobSpec]) -> int:
        return self.config.publish_job_config(jobs)


def open_store(url: str, *, migrate: bool = True) -> Store:
    return Store(url, migrate=migrate)


#: The result key naming what a run produced for people to open (a report notebook's
#: executed HTML): the Runs tab's ``output`` column and the dashboard's run tables show it.
OUTPUT_KEY = "output"


def run_output(result: str | dict[str, Any] | None) -> str:
    """The ``output`` a run's result names (its stored JSON or the dict), or ``""``."""
    if isinstance(result, str):
        try:
            result = json.loads(result) if result else {}
        except ValueError:
            return ""
    value = result.get(OUTPUT_KEY) if isinstance(result, dict) else None
    return str(value) if value else ""


def result_summary(result: dict[str, Any], limit: int = 200) -> str:
    """The free keys of a run's result, as one short line for the sheet; a pipeline's
    ``stages`` first, as each stage's records done, failed and dead in pipeline order
    (``validate: 23 done, 2 dead → deliver: 23 done · pass=3``)."""
    free = {k: v for k, v in result.items()
            if k not in ("records_in", "records_out", "records_failed")}
    stages = free.pop("stages") if isinstance(free.get("stages"), dict) else None
    if stages is not None:
        free.pop("dead_letters", None)  # the stages' dead, summed
        free.pop("stage_order", None)   # the stages' order, for the dashboard
    text = ", ".join(f"{k}={v}" if not isinstance(v, (dict, list)) else
                     f"{k}={json.dumps(v, default=str)}" for k, v in free.items())
    if stages is not None:
        text = " · ".join(filter(None, (stages_summary(stages), text)))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def stages_summary(stages: dict[str, Any]) -> str:
    """``stage: N done[, F failed][, D dead]`` per stage, joined by arrows."""
    out = []
    for name, counts in stages.items():
        counts = counts if isinstance(counts, dict) else {}
        dead, failed = int(counts.get("dead_letters", 0)), int(counts.get("records_failed", 0))
        text = f"{name}: {int(counts.get('records_out', 0))} done"
        if failed > dead:
            text += f", {failed - dead} failed"
        if dead:
            text += f", {dead} dead"
        out.append(text)
    return " → ".join(out)
