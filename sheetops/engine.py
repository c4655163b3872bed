"""The running system: sheet → config → scheduler → runner → store → status → sheet.

:class:`Engine` wires the parts together and runs two loops: *control* (re-read the
sheet every ``refresh_interval_s``, pick up Run now requests, publish gauges) and
*status* (drain the outbox into the sheet every ``status_flush_interval_s``). Each
command of the CLI is one method here.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from sheetops import tabs
from sheetops.alerts import AlertEvaluator
from sheetops.client_context import carry
from sheetops.config.model import Problem, Snapshot
from sheetops.config.parse import parse_config
from sheetops.errors import SheetError, StoreUnavailable
from sheetops.executors.base import executor_class
from sheetops.faults import hold_if_asked
from sheetops.hooks import Hooks, RunHook
from sheetops.leader import Lease
from sheetops.registry import registry
from sheetops.runner import Runner, new_run_id
from sheetops.scheduler import Scheduler, log_refused
from sheetops.sheets import InitReport, SheetBackend
from sheetops.status import StatusWriter, validation_rows, with_clearing
from sheetops.store import Batch, RunStatus, Store
from sheetops.store.leases import Fenced
from sheetops.store.queue import StaleClaim, lease_for
from sheetops.store.requests import SUBMIT_TIMEOUT_S

T = TypeVar("T")
log = logging.getLogger("sheetops.engine")
#: The dashboard reads runs newer than the last rollup refresh raw; a one-shot run
#: refreshes the rollups when they are older than this.
ROLLUP_MAX_AGE_S = 600.0


def read_config(sheet: SheetBackend, previous: Snapshot | None = None) -> Snapshot:
    """One read of every config tab (and of the Validation tab, to know how many rows it
    shows), parsed; raises :class:`SheetError` if the sheet is unreadable."""
    rows = sheet.read_tabs((*tabs.CONFIG_TABS, tabs.VALIDATION))
    snapshot = parse_config(rows, frozenset(registry.names()), previous)
    return replace(snapshot, validation_rows=len(rows.get(tabs.VALIDATION, [])))


def init_sheet(sheet: SheetBackend, examples: bool = True) -> InitReport:
    """Create the missing tabs with headers, notes, validations and examples."""
    return sheet.ensure_tabs(tabs.config_tab_specs(examples))


def validate_sheet(sheet: SheetBackend) -> Snapshot:
    """Parse the config and write its problems to the Validation tab (one write)."""
    snapshot = read_config(sheet)
    tabs.keep_dropdowns(sheet)  # e.g. a newly registered automation joins its dropdown
    sheet.write_batch([with_clearing(tabs.VALIDATION, validation_rows(snapshot.problems),
                                     snapshot.validation_rows)])
    return snapshot


@dataclass
class EngineOptions:
    executor: str = "local"
    workers: int = 0
    control_interval_s: float = 0.5
    lease_ttl_s: float = 15.0
    #: How long handing a Run now request to the runner may take; a request is claimed
    #: for ``lease_for`` this, and a scheduler that dies with it claimed leaves it to the
    #: next leader once that lease runs out.
    run_request_timeout_s: float = SUBMIT_TIMEOUT_S
    #: the client's name when one process serves several (sheetops.clients): its rate
    #: limits are its own, not shared with another client's row of the same name
    client: str = ""


#: Test-only fault points (:mod:`sheetops.faults`: a file path, ``stop:`` before it to
#: SIGSTOP instead of blocking). After claiming Run now requests the engine writes their
#: ids there and blocks, so a test can kill it between claim and submit.
HOLD_AFTER_CLAIM_ENV = "SHEETOPS_TEST_HOLD_AFTER_REQUEST_CLAIM"
#: ... right before submitting a claimed request's run (found in no store row), its run
#: id: a leader paused there past the claim's lease is the one the fence must stop.
HOLD_BEFORE_SUBMIT_ENV = "SHEETOPS_TEST_HOLD_BEFORE_REQUEST_SUBMIT"
#: ... once Run now requests' runs are in the store, their run ids, before acking, so a
#: test can kill it between.
HOLD_BEFORE_ACK_ENV = "SHEETOPS_TEST_HOLD_BEFORE_REQUEST_ACK"


class Engine:
    """Scheduler, runner and status writer over one sheet and one store."""

    def __init__(self, sheet: SheetBackend, store: Store,
                 options: EngineOptions | None = None,
                 hooks: Sequence[RunHook] = ()) -> None:
        self.sheet = sheet
        self.store = store
        self.options = options or EngineOptions()
        self.hooks = Hooks(hooks)
        factory = functools.partial(executor_class(self.options.executor))
        self.runner = Runner(store, factory, self.hooks, workers=self.options.workers,
                             client=self.options.client)
        last_fire = {job: s["last_fire_time"] for job, s in store.job_states().items()
                     if s.get("last_fire_time") is not None}
        self.lease = Lease(store, ttl_s=self.options.lease_ttl_s)
        # the leader's fires and recorded batches are fenced by its lease's epoch
        self.runner.recorder.fence = lambda: self.lease.fence
        self._stepped_down_at_epoch = 0
        self.scheduler = Scheduler(self.runner, last_fire, refused=self._fire_refused)
        self.status = StatusWriter(store, sheet, lambda: self.scheduler.snapshot,
                                   self.scheduler.next_run_times, self.runner.live_state)
        # alerts: rules from the Alerts tab, evaluated every alert_interval_s (own thread)
        self.alerts = AlertEvaluator(store, lambda: self.scheduler.snapshot)
        self._published_queues: set[str] = set()  # durable queues with a depth gauge > 0
        self._requested: dict[str, int] = {}  # run id -> its Run now request, not acked
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.last_refresh_ok: bool | None = None
        self.last_refresh_error = ""
        self.refreshes = 0
        self._logged_problems: set[Problem] = set()
        self._loop_failures: dict[str, str] = {}

    @property
    def snapshot(self) -> Snapshot:
        return self.scheduler.snapshot

    # -- config ----------------------------------------------------------------------
    def refresh(self) -> Snapshot | None:
        """Re-read the sheet and reconcile; on failure keep the last good config."""
        previous = self.scheduler.snapshot if self.refreshes else None
        try:
            snapshot = read_config(self.sheet, previous)
        except Exception as exc:  # a sheet error, or a cell no check foresaw
            message = str(exc) if isinstance(exc, SheetError) else (
                f"the config could not be parsed ({type(exc).__name__}: {exc})")
            repeated = self.last_refresh_ok is False and self.last_refresh_error == message
            self.last_refresh_ok = False
            self.last_refresh_error = message
            if not repeated:  # reported once, not at every refresh
                if self.refreshes:  # before the first good read, start() reports it
                    log.warning("could not read the config sheet (%s); the last good "
                                "config keeps running", message)
                self.store.add_config_events([("failed", "", message[:500])])
            self.store.set_gauges({"last_refresh_ok": 0})
            return None
        if snapshot.validation_rows > self.store.extents().get(tabs.VALIDATION, 0):
            # e.g. written by `validate`: the next Validation write must blank them all
            self.store.set_extent(tabs.VALIDATION, snapshot.validation_rows)
        self.refreshes += 1
        self.last_refresh_ok = True
        self.store.replace_problems(snapshot.problems)
        if not self.lease.held:  # a standby reads and checks the sheet, fires nothing
            self.scheduler.snapshot = snapshot
            return snapshot
        if self.runner.executor.records_runs:  # before anything fires: they hold slots
            self._adopt(snapshot)
        report = self.scheduler.apply(snapshot)
        tabs.keep_dropdowns(self.sheet)  # a write only when the registry changed
        if report.changed or report.caught_up:
            self.store.add_config_events(report.events())
            self.store.record(Batch(outbox=[(tabs.STATUS, "")]))
            log.info("config: %d added, %d removed, %d rescheduled, %d changed",
                     len(report.added), len(report.removed), len(report.rescheduled),
                     len(report.updated))
        self._publish_job_config(snapshot)
        self.store.set_gauges({"last_refresh_ok": 1, "last_refresh_at": time.time(),
                               "config_problems": len(snapshot.problems),
                               "config_errors": len(snapshot.errors)})
        for problem in snapshot.errors:
            if problem not in self._logged_problems:  # once, not at every refresh
                log.warning("config problem: %s", problem)
        self._logged_problems = set(snapshot.errors)
        return snapshot

    def _publish_job_config(self, snapshot: Snapshot) -> None:
        self.store.publish_job_config(snapshot.jobs)

    # -- running ----------------------------------------------------------------------
    def start(self) -> None:
        """Read the config, start workers, the loops, and (as leader) the scheduler."""
        self.runner.start()
        if self.lease.acquire():
            self._take_over()
        elif self.refresh() is None:
            self.runner.stop()
            raise SheetError(self.last_refresh_error or
                             f"cannot read the config sheet {self.sheet.location}")
        else:
            log.warning("standby: another scheduler (%s) is active on this store; this one "
                        "takes over if it stops", self.lease.current_holder())
        for target, name in ((self._control_loop, "sheetops-control"),
                             (self._status_loop, "sheetops-status")):
            thread = threading.Thread(target=carry(target), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _take_over(self) -> None:
        """Become the active scheduler: close what a dead predecessor left open, load
        its fire times (for catch-up) and start firing."""
        # runs in flight here are alive (this process may be taking the lease *back*);
        # with workers that record runs themselves (Celery) every unfinished run is
        # theirs, and they end it
        interrupted = [] if self.runner.executor.records_runs else (
            self.store.interrupt_unfinished(keep=self.runner.in_flight_ids()))
        if interrupted:
            log.warning("%d run(s) were left running by a scheduler that stopped without "
                        "shutting down; recorded as failed (Interrupted)", len(interrupted))
        self.scheduler.reset(
            {job: s["last_fire_time"] for job, s in self.store.job_states().items()
             if s.get("last_fire_time") is not None})
        if self.refresh() is None:
            self.lease.release()
            self.runner.stop()
            raise SheetError(self.last_refresh_error or
                             f"cannot read the config sheet {self.sheet.location}")
        if not self.scheduler.aps.running:
            self.scheduler.start()
        self.store.record(Batch(outbox=[(tabs.STATUS, ""), (tabs.RUNS, "")]))

    def _adopt(self, snapshot: Snapshot) -> None:
        """Follow the runs in flight that another process handed to the workers — a
        previous leader (at a takeover's first refresh), a ``run-job`` (at any refresh):
        they hold their jobs' ``concurrency`` here, and the queued ones that may never
        have been published are published (:meth:`Runner.adopt`)."""
        ours = self.runner.in_flight_ids()
        self.runner.flush()  # what this runner ended is in the store before it is read
        deliveries = self.store.task_deliveries
        rows = [r for r in deliveries.runs_in_flight() if r["id"] not in ours]
        sent = deliveries.sent([r["id"] for r in rows if r["status"] == RunStatus.QUEUED.value])
        self.runner.adopt(rows, snapshot, sent)

    @property
    def is_leader(self) -> bool:
        return self.lease.held

    def run(self, seconds: float | None = None) -> None:
        """Run until ``seconds`` pass (or forever), then stop cleanly."""
        self.start()
        try:
            self._stop.wait(seconds)
        finally:
            self.stop()

    def stop(self, timeout: float | None = None) -> None:
        """Stop firing, let running attempts finish, record them and flush the sheet."""
        self._stop.set()
        self.scheduler.stop()
        for thread in self._threads:
            thread.join()
        self.alerts.join(30)  # an evaluation under way finishes (its deliveries are bounded)
        try:
            self.runner.stop(timeout)
            self.runner.flush()
        except Fenced:  # replaced while paused: what it ran is not its to record
            self._step_down("recording runs at stop")
        if self.lease.held:
            self.status.flush()  # one try (with the sheet's retries); the outbox keeps the rest
            self._publish_gauges()
            self.lease.release()

    def _control_loop(self) -> None:
        next_refresh = time.time() + self.snapshot.settings.refresh_interval_s
        while not self._stop.wait(self.options.control_interval_s):
            if not self._guarded("leadership", self._keep_leadership):
                continue
            if time.time() >= next_refresh:
                self._guarded("config refresh", self.refresh)
                # even after a failure: the next try waits a full interval
                next_refresh = time.time() + self.snapshot.settings.refresh_interval_s
            # each part on its own: one failing never skips the others
            self._guarded("Run now requests", self.take_run_requests)
            self._guarded("gauges", self._publish_gauges)
            self._guarded("alerts", self.alerts.tick)  # starts a due evaluation; never blocks

    def _guarded(self, part: str, step: Callable[[], T]) -> T | None:
        """Run one part of the control loop; log its failure once (again only when
        the failure changes), and return ``None`` instead of raising."""
        try:
            result = step()
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
            if self._loop_failures.get(part) != failure:
                if isinstance(exc, StoreUnavailable):  # one line: expected, and retried
                    log.warning("%s failed: %s; the rest of the loop goes on", part, exc)
                else:
                    log.exception("%s failed; the rest of the loop goes on", part)
            self._loop_failures[part] = failure
            return None
        self._loop_failures.pop(part, None)
        return result

    def _fire_refused(self, exc: Exception, jobs: list[str]) -> None:
        """A fire whose runs and fire time did not commit (one transaction, fenced by
        the lease's epoch): nothing of it runs. A replaced leader steps down."""
        if isinstance(exc, Fenced):
            self._step_down("a fire")
        else:
            log_refused(exc, jobs)

    def _step_down(self, refused: str) -> None:
        """Stop acting as the leader after losing the lease; one log line per loss."""
        self.lease.step_down()
        if self.scheduler.aps.running:
            self.scheduler.aps.pause()
        if self._stepped_down_at_epoch != self.lease.epoch:
            self._stepped_down_at_epoch = self.lease.epoch
            log.error("fenced: another scheduler took the lease while this one was paused "
                      "(%s refused, epoch %d is stale); standing by", refused,
                      self.lease.epoch)

    def _keep_leadership(self) -> bool:
        """Renew the lease, or take it over when the active scheduler is gone."""
        if self.lease.held:
            if self.lease.keep():
                return True
            self._step_down("renewing the lease")
            return False
        if not self.lease.acquire():
            return False
        log.warning("taking over as the active scheduler")
        # reschedule from the store's fire times first: resuming the paused jobs would
        # replay the fires the other scheduler ran meanwhile
        self._take_over()
        if self.scheduler.aps.running:
            self.scheduler.aps.resume()
        return True

    def _status_loop(self) -> None:
        next_prune = 0.0
        while not self._stop.wait(self.snapshot.settings.status_flush_interval_s):
            if not self.lease.held:
                continue
            try:
                self.runner.flush()
                if not self.lease.still_ours():  # the sheet write cannot be fenced
                    self._step_down("the status write")
                    continue
                self.status.flush()
                if time.time() >= next_prune:  # Settings run_history_days, hourly
                    self.prune_history()
                    self.store.analyze()  # keeps the dashboard's plans on its indexes
                    next_prune = time.time() + 3600
                # the dashboard's hourly/daily run rollups: kept here, only read there
                self.store.rollups.refresh()
            except Fenced:
                self._step_down("recording runs")
            except StoreUnavailable as exc:
                log.warning("status loop: %s; continuing", exc)
            except Exception:
                log.exception("status loop error; continuing")

    def prune_history(self) -> int:
        """Delete runs, attempts and errors older than Settings ``run_history_days``."""
        days = self.snapshot.settings.run_history_days
        removed = self.store.prune(time.time() - days * 86400)
        if removed:
            log.info("removed %d run(s) older than %d day(s) from the store", removed, days)
        return removed

    def take_run_requests(self) -> list[str]:
        """Start the runs asked for from the dashboard (recorded with who asked).

        Each request is claimed with a lease, under this leader's fence, and given its
        run's id in the same transaction; it is acked only once that run's row is in the
        store (:meth:`_settle_requests`). A scheduler killed before the row commits
        leaves the request to the next leader, which runs it under the same id; killed
        after, the next leader finds the run and only acks. A leader paused past the
        claim's lease before the submit is refused at the fenced commit of its run's row
        (:meth:`Runner.submit`) and starts nothing. Returns the run ids started."""
        started = []
        try:
            requests = self.store.claim_run_requests(
                self.lease.holder, lease_for(self.options.run_request_timeout_s),
                new_run_id=new_run_id, fence=self.lease.fence)
        except Fenced:
            self._step_down("a Run now request's claim")
            return []
        if not requests:
            self._settle_requests()
            return []
        hold_if_asked(HOLD_AFTER_CLAIM_ENV, [str(r["id"]) for r in requests])
        known = self.store.runs.statuses(
            [r["run_id"] for r in requests if r["run_id"] not in self._requested])
        for request in requests:
            run_id = request["run_id"]
            if run_id in self._requested or run_id in known:
                # ours, waiting for its row; or run by a scheduler that died before acking
                self._requested[run_id] = request["id"]
                continue
            hold_if_asked(HOLD_BEFORE_SUBMIT_ENV, [run_id])
            try:  # the run's row commits under this leader's fence before it starts
                run_id = self.scheduler.run_now(request["job"], "dashboard",
                                                request["dry_run"], request["requested_by"],
                                                run_id)
            except Fenced:  # replaced while paused since the claim: the new leader runs it
                self._step_down("a Run now request's run")
                return started
            if run_id is None and request["job"] in self.scheduler.snapshot.jobs:
                # the runner is shutting down: left claimed, for the next leader to run
                log.warning("Run now request %d left to the next scheduler: this one is "
                            "stopping", request["id"])
                continue
            if run_id is None:
                log.warning("Run now for unknown or invalid job %r ignored", request["job"])
                self._link_request(request["id"], None)
                continue
            self._requested[run_id] = request["id"]
            started.append(run_id)
        self._settle_requests()
        return started

    def _settle_requests(self) -> None:
        """Ack the requests whose runs' rows are in the store (after a flush of the
        recorder: at once, as a rule); the others wait for the next pass."""
        if not self._requested:
            return
        self.runner.flush()
        recorded = self.store.runs.statuses(list(self._requested))
        if recorded:
            hold_if_asked(HOLD_BEFORE_ACK_ENV, sorted(recorded))
        for run_id in recorded:
            self._link_request(self._requested.pop(run_id), run_id)

    def _link_request(self, request_id: int, run_id: str | None) -> None:
        try:
            self.store.link_request(request_id, run_id)
        except StaleClaim:  # whoever claims it again finds its run and only acks
            log.warning("Run now request %d was held past its lease; it is acked when "
                        "claimed again", request_id)

    def _publish_gauges(self) -> None:
        outbox = self.store.pending_outbox()
        now = time.time()
        executor = self.runner.executor
        # every durable queue's depth; one that emptied is published once more, as 0
        queues = self.store.queue_depths()
        for gone in self._published_queues - queues.keys():
            queues[gone] = 0
        self._published_queues = {name for name, n in queues.items() if n}
        self.store.set_gauges({
            **{f"queue_depth:{name}": n for name, n in queues.items()},
            # not a queue_depth:<queue> gauge: a durable queue may be named "run"
            "attempts_waiting": executor.queue_depth + self.runner.waiting_count(),
            "running": executor.running,
            "outbox_depth": outbox.count,
            "outbox_age_s": outbox.age_s(now),
            "scheduler_heartbeat": now,
        })

    # -- one-shot ------------------------------------------------------------------------
    def run_job(self, job: str, dry_run: bool = False, trigger: str = "cli"
                ) -> tuple[str | None, tuple[Problem, ...]]:
        """Run one job now and wait for it; the sheet's status tabs are updated.

        A job that cannot run returns every problem of its row (none is hidden behind
        another)."""
        self.runner.start()
        try:
            snapshot = self.refresh_without_scheduling()
            if job not in snapshot.jobs:
                return None, snapshot.invalid.get(job) or (
                    Problem(tabs.JOBS, "A1", job, f"no job {job!r} on the Jobs tab"),)
            run_id = self.runner.submit(snapshot.jobs[job], snapshot, trigger, time.time(),
                                        dry_run)
            if run_id is not None:
                self.runner.wait(run_id)
            return run_id, ()
        finally:
            self.runner.stop()
            self.runner.flush()
            self.status.flush()
            # no status loop here: keep the rollups as fresh as the dashboard expects
            self.store.rollups.refresh_if_older(ROLLUP_MAX_AGE_S)

    def refresh_without_scheduling(self) -> Snapshot:
        snapshot = read_config(self.sheet)
        self.scheduler.snapshot = snapshot
        self.store.replace_problems(snapshot.problems)
        return snapshot
