"""When jobs run: APScheduler 3 triggers, reconciled with each config snapshot.

APScheduler decides *when*; sheetops decides *what happens then*. Jobs that share a
schedule, timezone and catch-up mode share one APScheduler job (a *group*): when it
fires, every member is handed to the :class:`~sheetops.runner.Runner` in one tight
loop. So 50,000 jobs due in the same second cost APScheduler one job, not 50,000, and
none is dropped: misfire grace is unlimited and the work happens in the runner's
worker pool. The trigger that fires a group is the one the Status tab's next run times
come from.

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

from sheetops.client_context import carry
from sheetops.config.model import JobSpec, Snapshot
from sheetops.config.schedule import fire_times_between, next_fire_times
from sheetops.runner import Runner

log = logging.getLogger("sheetops.scheduler")


class _HandOff(BaseExecutor):
    """An APScheduler executor that passes fires on instead of running them."""

    def __init__(self, fire: Callable[[str, list[datetime]], None]) -> None:
        super().__init__()
        self._fire = carry(fire)  # called in APScheduler's thread: name the client

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
                 scheduler: BackgroundScheduler | None = None,
                 refused: Callable[[Exception, list[str]], None] | None = None) -> None:
        self.runner = runner
        # A fire's time per job commits with its runs' rows (the runner's hand-off, under
        # the leader's fence); told here when that commit fails (a replaced leader, the
        # store down), and then nothing of the fire runs. The engine steps down.
        self._refused = refused or log_refused
        self.snapshot = Snapshot()
        self._last_fire = dict(last_fire_times or {})
        self._groups: dict[str, dict[str, JobSpec]] = {}  # APScheduler job id → members
        self._group_of: dict[str, str] = {}  # job → APScheduler job id
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
                    group_id = self._group_of.get(job_id)
                    if group_id is not None:
                        self._groups[group_id][job_id] = spec
        self._startup = False
        return report

    def _unschedule(self, job_id: str) -> None:
        group_id = self._group_of.pop(job_id, None)
        if group_id is None:
            return
        members = self._groups[group_id]
        members.pop(job_id, None)
        if not members:
            del self._groups[group_id]
            self.aps.remove_job(group_id)

    def reset(self, last_fire_times: dict[str, float]) -> None:
        """Forget every scheduled job and start over from the store's fire times: the
        next :meth:`apply` schedules everything and catches up (a new leader's start)."""
        with self._lock:
            for group_id in list(self._groups):
                self.aps.remove_job(group_id)
            self._groups.clear()
            self._group_of.clear()
            self.snapshot = Snapshot()
            self._last_fire.update(last_fire_times)
            self._startup = True

    def aps_job(self, job_id: str):
        """The APScheduler job whose trigger fires ``job_id`` (``None`` if unscheduled)."""
        group_id = self._group_of.get(job_id)
        return self.aps.get_job(group_id) if group_id else None

    def _schedule(self, spec: JobSpec, now: datetime, report: ReconcileReport) -> None:
        if not spec.enabled or spec.parsed_schedule.is_manual:
            return
        trigger = spec.trigger()
        last = self._last_fire.get(spec.job)
        if last is not None and self._startup:
            self._catch_up(spec, trigger, datetime.fromtimestamp(last, UTC), now, report)
        group_id = f"{spec.parsed_schedule.text}|{spec.timezone}|{spec.catch_up == 'all'}"
        members = self._groups.get(group_id)
        if members is None:
            upcoming = next_fire_times(trigger, now, 1)
            if not upcoming:
                return
            members = self._groups[group_id] = {}
            self.aps.add_job(
                _never_called, trigger=trigger, id=group_id, name=group_id,
                executor="sheetops", next_run_time=upcoming[0], misfire_grace_time=None,
                coalesce=spec.catch_up != "all", max_instances=1_000_000,
                replace_existing=True)
        members[spec.job] = spec
        self._group_of[spec.job] = group_id

    def _catch_up(self, spec: JobSpec, trigger, last: datetime, now: datetime,
                  report: ReconcileReport) -> None:
        if spec.catch_up == "skip":
            return
        limit = 1 if spec.catch_up == "once" else self.snapshot.settings.catch_up_max_runs
        missed = fire_times_between(trigger, last, now, limit)
        if not missed:
            return
        try:
            self.runner.submit_many([spec], self.snapshot, "catch_up",
                                    [fire.timestamp() for fire in missed], note_fires=True)
        except Exception as exc:
            self._refused(exc, [spec.job])
            return
        report.caught_up[spec.job] = len(missed)
        self._last_fire[spec.job] = missed[-1].timestamp()
        log.info("job %s: %d run(s) missed while sheetops was down started (catch_up=%s)",
                 spec.job, len(missed), spec.catch_up)

    # -- firing -------------------------------------------------------------------------
    def _fire(self, group_id: str, run_times: list[datetime]) -> None:
        with self._lock:
            members = sorted(self._groups.get(group_id, {}).values(), key=lambda s: s.row)
            snapshot = self.snapshot
        if not members:
            return
        try:
            self.fired += self.runner.submit_many(
                members, snapshot, "schedule", [fire.timestamp() for fire in run_times],
                note_fires=True)
        except Exception as exc:
            self._refused(exc, [spec.job for spec in members])
            return
        for spec in members:
            self._last_fire[spec.job] = run_times[-1].timestamp()

    def run_now(self, job_id: str, trigger: str = "manual", dry_run: bool = False,
                requested_by: str = "", run_id: str | None = None) -> str | None:
        """Run ``job_id`` now (under ``run_id`` when given); ``None``: no such job."""
        spec = self.snapshot.jobs.get(job_id)
        if spec is None:
            return None
        return self.runner.submit(spec, self.snapshot, trigger, time.time(), dry_run,
                                  requested_by, run_id)

    def next_run_times(self, spec: JobSpec, count: int = 3,
                       now: datetime | None = None) -> list[datetime]:
        """The next fire times in the job's timezone, from the same trigger that fires."""
        if not spec.enabled or spec.parsed_schedule.is_manual:
            return []
        # through UTC: astimezone() to the same zone would keep a wall time that a
        # spring-forward gap skipped (02:30 CET) instead of the one it fires at (03:30 CEST)
        return [t.astimezone(UTC).astimezone(spec.tz) for t in
                next_fire_times(spec.trigger(), now or datetime.now(UTC), count)]


def log_refused(exc: Exception, jobs: list[str]) -> None:
    """Say that a fire of ``jobs`` did not commit and so does not run (one line)."""
    log.warning("a fire of %s was not recorded, so it does not run (%s: %s)",
                ", ".join(sorted(jobs)), type(exc).__name__, exc)


def _never_called() -> None:  # pragma: no cover - the hand-off executor never calls it
    raise AssertionError("sheetops jobs are fired through the hand-off executor")
