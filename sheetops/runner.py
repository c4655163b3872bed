"""Runs: from a fire (or a Run now) to a recorded outcome.

The runner owns a run's life: it gives the run an id, holds it while the job's
``concurrency`` is used up, hands attempts to the executor, decides on retries with
the job's :class:`~sheetops.retry.JobPolicy`, and says what happened as typed
:mod:`sheetops.events` (queued, started, attempt finished, finished, fire times). The
:class:`~sheetops.recorder.Recorder` turns those into store rows in batches (one
transaction per flush, so thousands of runs a second are cheap) and leaves outbox
entries for the status writer: the runner builds no row and never writes the sheet.
Only a run's hand-off commits at once, before the run may start: its ``queued`` row,
with its fire's time for a fire, in one transaction under the leader's fence
(:meth:`Recorder.commit`), so a fire is never lost nor run twice and a replaced leader
starts nothing.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sheetops.client_context import carry
from sheetops.config.model import JobSpec, Snapshot
from sheetops.context import AttemptRequest, AttemptResult
from sheetops.events import (
    AttemptFinished,
    FireTimes,
    RunEvent,
    RunFinished,
    RunQueued,
    RunStarted,
    attempt_status,
)
from sheetops.executors.base import Executor
from sheetops.faults import hold_if_asked
from sheetops.hooks import Hooks, RunInfo, RunOutcome
from sheetops.recorder import Recorder
from sheetops.retry import JobPolicy
from sheetops.store import RunStatus, Store

log = logging.getLogger("sheetops.runner")

ExecutorFactory = Callable[..., Executor]


#: Test-only (:mod:`sheetops.faults`): ``before:<path>`` or ``after:<path>`` — a fire
#: holds right before, or right after, the commit of its runs' rows and fire times (its
#: fire time, or its run ids, written to ``<path>``), before any of its runs starts.
HOLD_AT_FIRE_ENV = "SHEETOPS_TEST_HOLD_AT_FIRE"

_PROCESS = random.SystemRandom().getrandbits(24)  # tells processes apart
_sequence = itertools.count()


def new_run_id(now: float | None = None) -> str:
    """Sortable and unique: milliseconds since the epoch, this process's random tag and a
    counter, in hex. (Random bits alone collide: 50,000 runs handed off in the same
    millisecond would share 32 random bits with a probability near 30%.)"""
    return (f"{int((now or time.time()) * 1000):011x}{_PROCESS:06x}"
            f"{next(_sequence) & 0xFFFFFF:06x}")


@dataclass
class _Run:
    run_id: str
    spec: JobSpec
    snapshot: Snapshot
    trigger: str
    scheduled_for: float | None
    dry_run: bool
    requested_by: str
    attempt: int = 0
    started_at: float | None = None
    info: RunInfo | None = None
    done: threading.Event | None = None  # made only when someone waits for the run
    outcome: RunOutcome | None = None


class Runner:
    """Turns run requests into attempts and attempt results into recorded runs."""

    def __init__(self, store: Store, executor_factory: ExecutorFactory,
                 hooks: Hooks | None = None, workers: int = 0,
                 flush_interval_s: float = 0.25, client: str = "") -> None:
        self.store = store
        #: the client (of several one process serves) whose runs these are; it goes
        #: with each attempt, to keep its rate limits apart from other clients'
        self.client = client
        self.hooks = hooks or Hooks()
        self.executor = executor_factory(on_start=self._on_start, on_result=self._on_result,
                                         hooks=self.hooks, workers=workers)
        self.recorder = Recorder(store)
        self.executor.bind_recorder(self.recorder)
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._active: dict[str, int] = defaultdict(int)  # job → runs holding a slot
        self._waiting: dict[str, deque[_Run]] = defaultdict(deque)
        self._started: dict[str, int] = defaultdict(int)  # job → runs past their start
        self._flush_interval = flush_interval_s
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        self._shutting_down = False
        self._idle = threading.Condition(self._lock)
        self.coalesced = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.recorder.load()
        self.executor.start()
        self._flusher = threading.Thread(target=carry(self._flush_loop), name="sheetops-recorder",
                                         daemon=True)
        self._flusher.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish running attempts; runs that had not started (or wait for a retry) end
        as failed with ``Shutdown``, so nothing is left half-recorded."""
        with self._lock:
            self._shutting_down = True
            waiting = [run for q in self._waiting.values() for run in q]
            self._waiting.clear()
        unstarted = {r.run_id: r.attempt for r in self.executor.stop(timeout)}
        now = time.time()
        for run in waiting:
            self._finish(run, RunStatus.FAILED, now, error_type="Shutdown",
                         error_message="sheetops stopped before this run started")
        # Everything still open never got (another) attempt: queued, waiting for a
        # retry, or handed over by a run that finished while we were stopping.
        with self._lock:
            left = list(self._runs.values())
        for run in left:
            if self.executor.records_runs and run.run_id not in unstarted:
                self._forget(run)  # handed to a worker, which records its end
                continue
            attempt = unstarted.get(run.run_id, run.attempt)
            run.attempt = max(0, attempt - 1)  # attempts made; the last one never began
            self._finish(run, RunStatus.FAILED, now, error_type="Shutdown",
                         error_message=f"sheetops stopped before attempt {attempt} "
                                       "started")
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        self.flush()

    def flush(self) -> int:
        return self.recorder.flush()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self._flush_interval):
            try:
                self.recorder.flush()
            except Exception:
                time.sleep(min(5.0, self._flush_interval * 4))

    # -- submitting --------------------------------------------------------------------------
    def submit(self, spec: JobSpec, snapshot: Snapshot, trigger: str = "schedule",
               scheduled_for: float | None = None, dry_run: bool = False,
               requested_by: str = "", run_id: str | None = None) -> str | None:
        """Start a run of ``spec`` (now, or when a concurrency slot frees up), with the id
        ``run_id`` when the caller chose it (a Run now request's, given at its claim).

        Under a leader (a fence), its ``queued`` row commits before the run is handed to
        the executor: a replaced leader's submit raises
        :class:`~sheetops.store.leases.Fenced` and starts nothing. With no leader to be
        replaced by (``run-job``, a runner of its own) the row goes with the recorder's
        next batch, so runs submitted one by one cost no transaction each.

        Returns the run id, or ``None`` when the job already has a run waiting for every
        slot and this one is coalesced into it (a late job does not pile up runs)."""
        now = time.time()
        run = _Run(run_id or new_run_id(now), spec, snapshot, trigger, scheduled_for,
                   dry_run, requested_by)
        with self._lock:  # admitted and recorded under the lock: before stop() ends it
            if self.recorder.fence() is not None:
                admitted = self._hand_off([run], now, {})
            else:
                sent = self._admit(run)
                admitted = [] if sent is None else [(run, sent)]
                if admitted:
                    self.recorder.record(_queued(run, now))
        if not admitted:
            return None
        if admitted[0][1]:
            self.executor.submit(self._next_request(run))
        return run.run_id

    def submit_many(self, specs: list[JobSpec], snapshot: Snapshot, trigger: str,
                    fires: Sequence[float | None], note_fires: bool = False) -> int:
        """:meth:`submit` for many jobs, a run of each per time in ``fires`` (one lock
        and one transaction per chunk of 256 jobs). With ``note_fires`` each job's last
        fire time (the latest of ``fires``, which catch-up reads after downtime) commits
        in the same fenced transaction as its runs' ``queued`` rows, so a leader killed
        at any point either left the fire and its runs in the store (the next leader
        follows the runs) or neither (the next leader catches the fire up). Returns the
        runs asked for (coalesced ones included)."""
        now = time.time()
        last = max((fire for fire in fires if fire is not None), default=None)
        count = 0
        for start in range(0, len(specs), 256):  # workers start on the first while
            chunk = specs[start:start + 256]  # the rest are still being handed off
            runs = [_Run(new_run_id(now), spec, snapshot, trigger, fire, False, "")
                    for fire in fires for spec in chunk]
            times = {spec.job: last for spec in chunk} if note_fires and last is not None else {}
            if times:
                hold_if_asked(HOLD_AT_FIRE_ENV, [repr(last)], "before")
            with self._lock:
                admitted = self._hand_off(runs, now, times)
            if times:
                hold_if_asked(HOLD_AT_FIRE_ENV, [run.run_id for run, _ in admitted], "after")
            self.executor.submit_many([self._next_request(run) for run, ok in admitted
                                       if ok])
            count += len(runs)
        return count

    def _hand_off(self, runs: list[_Run], now: float,
                  fire_times: dict[str, float]) -> list[tuple[_Run, bool]]:
        """Under the lock: admit ``runs`` and commit their ``queued`` rows with
        ``fire_times`` in one transaction (the recorder's, under the leader's fence);
        ``(run, send now)`` per run admitted (not coalesced). If the commit fails the
        runs are forgotten again and the error raised: nothing of them starts."""
        admitted = [(run, ok) for run in runs if (ok := self._admit(run)) is not None]
        events: list[RunEvent] = [_queued(run, now) for run, _ in admitted]
        if fire_times:
            events.append(FireTimes(dict(fire_times)))
        try:
            self.recorder.commit(events)
        except BaseException:
            for run, sent in admitted:
                self._runs.pop(run.run_id, None)
                if sent:
                    self._active[run.spec.job] = max(0, self._active[run.spec.job] - 1)
                else:
                    self._waiting[run.spec.job].remove(run)
            if not self._runs:
                self._idle.notify_all()
            raise
        return admitted

    def _admit(self, run: _Run) -> bool | None:
        """Under the lock: True = send now, False = wait for a slot, None = coalesced."""
        job = run.spec.job
        if self._shutting_down:
            return None
        if self._active[job] >= run.spec.concurrency:
            if len(self._waiting[job]) >= run.spec.concurrency and run.trigger == "schedule":
                self.coalesced += 1
                return None
            self._waiting[job].append(run)
            self._runs[run.run_id] = run
            return False
        self._active[job] += 1
        self._runs[run.run_id] = run
        return True

    def adopt(self, rows: list[dict[str, Any]], snapshot: Snapshot, sent: set[str]) -> int:
        """Take over the runs in flight another process handed off (a previous leader, a
        ``run-job``; with an executor whose workers record runs): ``rows`` as
        :meth:`~sheetops.store.task_deliveries.TaskDeliveryStore.runs_in_flight` gives
        them, ``sent`` the queued ones whose task is known to be in the broker.

        Each run followed here holds a slot of its job's ``concurrency`` until it ends,
        as if this runner had fired it: the running and sent ones at once (even past the
        limit: they run anyway), then those that may never have been sent, oldest first,
        each sent when a slot is free. Runs of jobs no longer on the sheet are left to
        the workers. Returns how many runs were adopted."""
        with self._lock:
            known = set(self._runs)
        rows = [r for r in rows if r["id"] not in known and r["job"] in snapshot.jobs]
        unsent = {r["id"] for r in rows if r["status"] == RunStatus.QUEUED.value
                  and r["id"] not in sent}
        for row in sorted(rows, key=lambda r: r["id"] in unsent):  # holders first
            spec = snapshot.jobs[row["job"]]
            run = _Run(row["id"], spec, snapshot, row["trigger"], row["scheduled_for"],
                       bool(row["dry_run"]), row["requested_by"] or "")
            with self._lock:
                self._runs[run.run_id] = run
                if row["id"] in unsent and self._active[spec.job] >= spec.concurrency:
                    self._waiting[spec.job].append(run)  # sent when a slot frees
                    continue
                self._active[spec.job] += 1
            if row["id"] in unsent:  # a queued run's started_at is its queue time
                self.executor.adopt(self._next_request(run), row["started_at"])
            else:
                run.attempt = max(1, int(row["attempts"] or 0))
                if self.executor.records_runs:  # a lost retry is published again by it
                    self.executor.set_policy(run.run_id, _policy(spec))
                self.executor.adopt(self._request(run))
        if rows:
            log.info("following %d run(s) in flight handed off by another process "
                     "(%d possibly never sent)", len(rows), len(unsent))
        return len(rows)

    def _next_request(self, run: _Run) -> AttemptRequest:
        run.attempt += 1
        spec = run.spec
        if self.executor.records_runs and run.attempt == 1:
            self.executor.set_policy(run.run_id, _policy(spec))
        return self._request(run)

    def _request(self, run: _Run) -> AttemptRequest:
        spec = run.spec
        return AttemptRequest(
            run_id=run.run_id, job=spec.job, automation=spec.automation,
            attempt=run.attempt, params=spec.params, timeout_s=spec.timeout_s,
            dry_run=run.dry_run,
            template=run.snapshot.templates.get(spec.template) if spec.template else None,
            rate_limit=run.snapshot.rate_limits.get(spec.rate_limit)
            if spec.rate_limit else None,
            trigger=run.trigger, memory_mb=run.snapshot.settings.worker_memory_mb,
            store_url=self.store.url, stages=run.snapshot.stages.get(spec.job, {}),
            client=self.client)

    def _send(self, run: _Run, eta: float | None = None) -> None:
        self.executor.submit(self._next_request(run), eta)

    def wait(self, run_id: str, timeout: float | None = None) -> RunOutcome | None:
        """Block until the run ends; ``None`` if it is unknown or already gone."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                return None
            if run.done is None:
                run.done = threading.Event()
        run.done.wait(timeout)
        return run.outcome

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.time() + timeout
        with self._idle:
            while self._runs:
                remaining = None if deadline is None else deadline - time.time()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    @property
    def in_flight(self) -> int:
        return len(self._runs)

    def in_flight_ids(self) -> set[str]:
        """Ids of the runs this runner has not finished yet."""
        with self._lock:
            return set(self._runs)

    def live_state(self, job: str) -> RunStatus | None:
        """``running`` while a run of the job has started and not finished, ``queued``
        while its runs in flight all wait (for a slot or a worker), else ``None``."""
        with self._lock:
            if self._started.get(job):
                return RunStatus.RUNNING
            if self._active.get(job) or self._waiting.get(job):
                return RunStatus.QUEUED
        return None

    def waiting_count(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._waiting.values())

    # -- executor callbacks (dispatcher thread) ---------------------------------------
    def _on_start(self, request: AttemptRequest, now: float) -> None:
        run = self._runs.get(request.run_id)
        if run is None or run.started_at is not None:
            return
        run.started_at = now
        run.info = RunInfo(run.run_id, run.spec.job, run.spec.automation, run.trigger,
                           run.scheduled_for, now, run.dry_run)
        with self._lock:
            self._started[run.spec.job] += 1
        if not self.executor.records_runs:
            self.recorder.record(RunStarted(run.run_id, run.spec.job, now))
        self.hooks.emit("on_run_start", run.info)

    def _on_result(self, result: AttemptResult) -> None:
        run = self._runs.get(result.run_id)
        if run is None:
            return
        if run.info is None:  # a worker died before we saw the start
            self._on_start(AttemptRequest(run.run_id, run.spec.job, run.spec.automation,
                                          result.attempt, {}, run.spec.timeout_s),
                           result.started_at)
        if self.executor.recorded(result):  # a worker recorded it and the run's end
            run.attempt = result.attempt
            self.hooks.emit("on_attempt_end", run.info, result)
            self._finish(run, attempt_status(result), result.finished_at, result.result,
                         result.error_type, result.error_message, recorded=True)
            return
        if result.attempt == 1 and run.started_at is not None and (
                result.started_at > run.started_at):
            # the worker began later than the dispatch (a batch, a busy pipe): keep the
            # worker's own start time
            run.started_at = result.started_at
            self.recorder.record(RunStarted(run.run_id, run.spec.job, result.started_at))
        attempt = AttemptFinished.of(result)
        self.recorder.record(attempt)
        self.hooks.emit("on_attempt_end", run.info, result)
        if result.ok:
            self._finish(run, RunStatus.OK, result.finished_at, result.result)
            return
        policy = _policy(run.spec)
        delay = None if self._shutting_down else policy.delay_after(
            result.attempt, result.permanent)
        if delay is None:
            self._finish(run, attempt.status, result.finished_at, result.result,
                         result.error_type, result.error_message)
        else:
            log.info("job %s run %s attempt %d failed (%s: %s); retrying in %.1fs",
                     run.spec.job, run.run_id, result.attempt, result.error_type,
                     result.error_message, delay,
                     extra={"job": run.spec.job, "run_id": run.run_id,
                            "attempt": result.attempt, "stage": "run"})
            self._send(run, time.time() + delay)

    def _finish(self, run: _Run, status: RunStatus, finished_at: float,
                result: dict[str, Any] | None = None, error_type: str = "",
                error_message: str = "", recorded: bool = False) -> None:
        result = result or {}
        job = run.spec.job
        event = RunFinished(
            run.run_id, job, status, run.attempt, run.started_at, finished_at, run.dry_run,
            int(result.get("records_in", 0)), int(result.get("records_out", 0)),
            int(result.get("records_failed", 0)), result, error_type, error_message)
        if not recorded:
            self.recorder.record(event)
        outcome = RunOutcome(status, event.attempts, finished_at, event.duration_s,
                             event.records_in, event.records_out, event.records_failed,
                             error_type, error_message)
        run.outcome = outcome
        if run.info is not None:
            self.hooks.emit("on_run_end", run.info, outcome)
        next_run = None
        with self._lock:
            self._runs.pop(run.run_id, None)
            if run.started_at is not None:
                self._started[job] = max(0, self._started[job] - 1)
            waiting = self._waiting.get(job)
            if waiting and not self._shutting_down:
                next_run = waiting.popleft()
            else:
                self._active[job] = max(0, self._active[job] - 1)
            if not self._runs:
                self._idle.notify_all()
            if run.done is not None:
                run.done.set()
        if next_run is not None:
            self._send(next_run)

    def _forget(self, run: _Run) -> None:
        """Drop a run this runner no longer follows (its end is recorded elsewhere)."""
        with self._lock:
            self._runs.pop(run.run_id, None)
            if not self._runs:
                self._idle.notify_all()


def _policy(spec: JobSpec) -> JobPolicy:
    """The retry policy of ``spec``'s runs."""
    return JobPolicy(spec.max_attempts, spec.backoff_initial_s, spec.backoff_max_s)


def _queued(run: _Run, now: float) -> RunQueued:
    return RunQueued(run.run_id, run.spec.job, run.spec.automation, run.trigger, now,
                     run.scheduled_for, run.dry_run, run.requested_by)
