"""When jobs run: APScheduler 3 triggers, reconciled with each config snapshot.

APScheduler decides *when*; sheetops decides *what happens then*. Its executor here
only hands the fire to the :class:`~sheetops.runner.Runner` (microseconds), so tens of
thousands of jobs due in the same second are all queued, none dropped: misfire grace
is unlimited and the real work happens in the runner's worker pool.

Reconcile touches only jobs whose schedule changed; other edits (params, retries,
template…) take effect at the next run without rescheduling. Runs missed while
sheetops was down follow the row's ``catch_up`` policy, using the last fire time kept
in the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from apscheduler.executors.base import BaseExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from sheetops.config.model import JobSpec, Snapshot
from sheetops.config.schedule import fire_times_between, next_fire_times
from sheetops.runner import Runner

log = logging.getLogger("sheetops.scheduler")


class _HandOff(BaseExecutor):
    """An APScheduler executor that passes fires on instead of running them."""

    def __init__(self, fire: Callable[[str, list[datetime]], None]) -> None:
        super().__init__()
        self._fire = fire

    def _do_submit_job(self, job, run_times) -> None:
        try:
            self._fire(job.id, run_times)
        finally:
            self._run_job_success(job.id, [])


@dataclass
class ReconcileReport:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rescheduled: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    caught_up: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.rescheduled or self.updated)

    def events(self) -> list[tuple[str, str, str]]:
        return ([("added", j, "") for j in self.added] +
                [("removed", j, "") for j in self.removed] +
                [("rescheduled", j, "") for j in self.rescheduled] +
                [("changed", j, "") for j in self.updated] +
                [("catch_up", j, f"{n} missed run(s) started") for j, n in
                 self.caught_up.items()])


class Scheduler:
    """Keeps APScheduler's jobs in line with the latest snapshot and fires runs."""

    def __init__(self, runner: Runner, last_fire_times: dict[str, float] | None = None,
                 scheduler: BackgroundScheduler | None = None) -> None:
        self.runner = runner
        self.snapshot = Snapshot()
        self._last_fire = dict(last_fire_times or {})
        self._lock = threading.RLock()
        self.aps = scheduler or BackgroundScheduler(timezone=UTC)
        self.aps.add_executor(_HandOff(self._fire), alias="sheetops")
        self.fired = 0
        # Catch-up is for runs missed while sheetops was down, so only the first apply
        # (startup) catches up; a job enabled again or rescheduled later does not run
        # the fires it skipped on purpose.
        self._startup = True

    def start(self) -> None:
        self.aps.start()

    def stop(self) -> None:
        if self.aps.running:
            self.aps.shutdown(wait=False)

    # -- reconcile --------------------------------------------------------------------
    def apply(self, snapshot: Snapshot, now: datetime | None = None) -> ReconcileReport:
        """Make the schedule match ``snapshot``; only changed jobs are touched."""
        now = now or datetime.now(UTC)
        report = ReconcileReport()
        self._upcoming: dict[tuple[str, str], list[datetime]] = {}
        with self._lock:
            old = self.snapshot.jobs
            new = snapshot.jobs
            self.snapshot = snapshot
            for job_id in old.keys() - new.keys():
                self._unschedule(job_id)
                report.removed.append(job_id)
            for job_id, spec in new.items():
                before = old.get(job_id)
                if before is None:
                    report.added.append(job_id)
                    self._schedule(spec, now, report)
                elif before.schedule_key() != spec.schedule_key() or (
                        before.catch_up != spec.catch_up):
                    report.rescheduled.append(job_id)
                    self._unschedule(job_id)
                    self._schedule(spec, now, report)
                elif before != spec:
                    report.updated.append(job_id)
        self._startup = False
        return report

    def _unschedule(self, job_id: str) -> None:
        if self.aps.get_job(job_id) is not None:
            self.aps.remove_job(job_id)

    def _schedule(self, spec: JobSpec, now: datetime, report: ReconcileReport) -> None:
        if not spec.enabled or spec.parsed_schedule.is_manual:
            return
        trigger = spec.trigger()
        last = self._last_fire.get(spec.job)
        if last is not None and self._startup:
            self._catch_up(spec, trigger, datetime.fromtimestamp(last, UTC), now, report)
        key = (spec.schedule, spec.timezone)
        upcoming = self._upcoming.get(key)
        if upcoming is None or last is not None:
            upcoming = self._upcoming[key] = next_fire_times(trigger, now, 1)
        if not upcoming:
            return
        self.aps.add_job(
            _never_called, trigger=trigger, id=spec.job, name=spec.job,
            executor="sheetops", next_run_time=upcoming[0], misfire_grace_time=None,
            coalesce=spec.catch_up != "all", max_instances=1_000_000,
            replace_existing=True)

    def _catch_up(self, spec: JobSpec, trigger, last: datetime, now: datetime,
                  report: ReconcileReport) -> None:
        if spec.catch_up == "skip":
            return
        limit = 1 if spec.catch_up == "once" else self.snapshot.settings.catch_up_max_runs
        missed = fire_times_between(trigger, last, now, limit)
        if not missed:
            return
        for fire in missed:
            self.runner.submit(spec, self.snapshot, "catch_up", fire.timestamp())
        report.caught_up[spec.job] = len(missed)
        self._note(spec.job, missed[-1].timestamp())
        log.info("job %s: %d run(s) missed while sheetops was down started (catch_up=%s)",
                 spec.job, len(missed), spec.catch_up)

    # -- firing -------------------------------------------------------------------------
    def _fire(self, job_id: str, run_times: list[datetime]) -> None:
        spec = self.snapshot.jobs.get(job_id)
        if spec is None or not spec.enabled:
            return
        for fire in run_times:
            self.runner.submit(spec, self.snapshot, "schedule", fire.timestamp())
            self.fired += 1
        self._note(job_id, run_times[-1].timestamp())

    def _note(self, job_id: str, fired: float) -> None:
        self._last_fire[job_id] = fired
        self.runner.note_fire_times({job_id: fired})

    def run_now(self, job_id: str, trigger: str = "manual", dry_run: bool = False,
                requested_by: str = "") -> str | None:
        spec = self.snapshot.jobs.get(job_id)
        if spec is None:
            return None
        return self.runner.submit(spec, self.snapshot, trigger, time.time(), dry_run,
                                  requested_by)

    def next_run_times(self, spec: JobSpec, count: int = 3,
                       now: datetime | None = None) -> list[datetime]:
        """The next fire times in the job's timezone, from the same trigger that fires."""
        if not spec.enabled or spec.parsed_schedule.is_manual:
            return []
        return [t.astimezone(spec.tz) for t in
                next_fire_times(spec.trigger(), now or datetime.now(UTC), count)]


def _never_called() -> None:  # pragma: no cover - the hand-off executor never calls it
    raise AssertionError("sheetops jobs are fired through the hand-off executor")
