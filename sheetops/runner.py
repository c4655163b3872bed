"""Runs: from a fire (or a Run now) to a recorded outcome.

The runner owns a run's life: it gives the run an id, holds it while the job's
``concurrency`` is used up, hands attempts to the executor, decides on retries with
the job's :class:`~sheetops.retry.JobPolicy`, and records everything in the store in
batches (one transaction per flush, so thousands of runs a second are cheap). It never
writes the sheet: it leaves outbox entries for the status writer.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sheetops.config.model import JobSpec, Snapshot
from sheetops.context import AttemptRequest, AttemptResult
from sheetops.executors.base import Executor
from sheetops.hooks import Hooks, RunInfo, RunOutcome
from sheetops.retry import JobPolicy
from sheetops.store import Batch, RunStatus, Store, result_summary
from sheetops.tabs import ERRORS, RUNS, STATUS

log = logging.getLogger("sheetops.runner")

ExecutorFactory = Callable[..., Executor]


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


class _Recorder:
    """Collects what happened since the last flush into one :class:`Batch`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.Lock()
        # One flush at a time: a flush that returns has everything recorded before it in
        # the store, and an update never commits before the insert of its run.
        self.flush_lock = threading.Lock()
        self.batch = Batch()
        self.new_by_id: dict[str, dict[str, Any]] = {}
        self.outbox: set[tuple[str, str]] = set()

    def flush(self) -> int:
        with self.flush_lock:
            return self._flush()

    def _flush(self) -> int:
        with self.lock:
            batch, self.batch = self.batch, Batch()
            outbox, self.outbox = self.outbox, set()
            self.new_by_id = {}
        batch.outbox = sorted(outbox)
        if not batch:
            return 0
        try:
            self.store.record(batch)
        except Exception:
            log.exception("could not record %d runs in the store; will retry",
                          len(batch.new_runs) + len(batch.run_updates))
            with self.lock:  # put it back in front of what came meanwhile
                self.batch.new_runs[:0] = batch.new_runs
                self.batch.run_updates[:0] = batch.run_updates
                self.batch.attempts[:0] = batch.attempts
                self.batch.errors[:0] = batch.errors
                for job, values in batch.job_states.items():
                    self.batch.job_states[job] = {**values,
                                                  **self.batch.job_states.get(job, {})}
                self.outbox |= set(batch.outbox)
            raise
        return len(batch.new_runs) + len(batch.run_updates)


class Runner:
    """Turns run requests into attempts and attempt results into recorded runs."""

    def __init__(self, store: Store, executor_factory: ExecutorFactory,
                 hooks: Hooks | None = None, workers: int = 0,
                 flush_interval_s: float = 0.25) -> None:
        self.store = store
        self.hooks = hooks or Hooks()
        self.executor = executor_factory(on_start=self._on_start, on_result=self._on_result,
                                         hooks=self.hooks, workers=workers)
        self._recorder = _Recorder(store)
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._active: dict[str, int] = defaultdict(int)  # job → runs holding a slot
        self._waiting: dict[str, deque[_Run]] = defaultdict(deque)
        self._job_state: dict[str, dict[str, Any]] = {}
        self._flush_interval = flush_interval_s
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        self._shutting_down = False
        self._idle = threading.Condition(self._lock)
        self.coalesced = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._job_state = {job: {k: v for k, v in state.items() if k in (
            "consecutive_failures", "last_success_at")}
            for job, state in self.store.job_states().items()}
        self.executor.start()
        self._flusher = threading.Thread(target=self._flush_loop, name="sheetops-recorder",
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
        return self._recorder.flush()

    def _flush_loop(self) -> None:
        while not self._stop.wait(self._flush_interval):
            try:
                self._recorder.flush()
            except Exception:
                time.sleep(min(5.0, self._flush_interval * 4))

    # -- submitting --------------------------------------------------------------------------
    def submit(self, spec: JobSpec, snapshot: Snapshot, trigger: str = "schedule",
               scheduled_for: float | None = None, dry_run: bool = False,
               requested_by: str = "") -> str | None:
        """Start a run of ``spec`` (now, or when a concurrency slot frees up).

        Returns the run id, or ``None`` when the job already has a run waiting for every
        slot and this one is coalesced into it (a late job does not pile up runs)."""
        run = _Run(new_run_id(), spec, snapshot, trigger, scheduled_for, dry_run,
                   requested_by)
        with self._lock:
            admitted = self._admit(run)
        if admitted:
            self.executor.submit(self._next_request(run))
        return run.run_id if admitted is not None else None

    def submit_many(self, specs: list[JobSpec], snapshot: Snapshot, trigger: str,
                    scheduled_for: float | None) -> int:
        """:meth:`submit` for many jobs due at the same time (one lock, one hand-off)."""
        now = time.time()
        runs = [_Run(new_run_id(now), spec, snapshot, trigger, scheduled_for, False, "")
                for spec in specs]
        for start in range(0, len(runs), 256):  # workers start on the first while
            chunk = runs[start:start + 256]  # the rest are still being handed off
            with self._lock:
                ready = [run for run in chunk if self._admit(run)]
            self.executor.submit_many([self._next_request(run) for run in ready])
        return len(runs)

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

    def _next_request(self, run: _Run) -> AttemptRequest:
        run.attempt += 1
        spec = run.spec
        return AttemptRequest(
            run_id=run.run_id, job=spec.job, automation=spec.automation,
            attempt=run.attempt, params=spec.params, timeout_s=spec.timeout_s,
            dry_run=run.dry_run,
            template=run.snapshot.templates.get(spec.template) if spec.template else None,
            rate_limit=run.snapshot.rate_limits.get(spec.rate_limit)
            if spec.rate_limit else None,
            trigger=run.trigger, memory_mb=run.snapshot.settings.worker_memory_mb,
            store_url=self.store.url, stages=run.snapshot.stages.get(spec.job, {}))

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

    def live_state(self, job: str) -> str | None:
        """``running`` or ``queued`` while the job has a run in flight, else ``None``."""
        with self._lock:
            if self._waiting.get(job):
                return "queued" if not self._active.get(job) else "running"
            if self._active.get(job):
                return "running"
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
        row = {"id": run.run_id, "job": run.spec.job, "trigger": run.trigger,
               "scheduled_for": run.scheduled_for, "started_at": now, "finished_at": None,
               "status": RunStatus.RUNNING.value, "attempts": 1, "records_in": 0,
               "records_out": 0, "records_failed": 0, "duration_s": None, "result": "{}",
               "error_type": "", "error_message": "", "dry_run": run.dry_run,
               "requested_by": run.requested_by}
        rec = self._recorder
        with rec.lock:
            rec.batch.new_runs.append(row)
            rec.new_by_id[run.run_id] = row
            rec.outbox.add((STATUS, run.spec.job))
            rec.outbox.add((RUNS, ""))
        self.hooks.emit("on_run_start", run.info)

    def _on_result(self, result: AttemptResult) -> None:
        run = self._runs.get(result.run_id)
        if run is None:
            return
        if run.info is None:  # a worker died before we saw the start
            self._on_start(AttemptRequest(run.run_id, run.spec.job, run.spec.automation,
                                          result.attempt, {}, run.spec.timeout_s),
                           result.started_at)
        if result.attempt == 1 and run.started_at is not None and (
                result.started_at > run.started_at):
            self._started_late(run, result.started_at)
        status = (RunStatus.OK if result.ok else
                  RunStatus.TIMEOUT if result.timed_out else RunStatus.FAILED)
        rec = self._recorder
        with rec.lock:
            rec.batch.attempts.append({
                "run_id": run.run_id, "attempt": result.attempt, "job": run.spec.job,
                "started_at": result.started_at, "finished_at": result.finished_at,
                "status": status.value, "error_type": result.error_type,
                "error_message": result.error_message, "traceback": result.traceback})
            if not result.ok:
                rec.batch.errors.append({
                    "time": result.finished_at, "job": run.spec.job, "run_id": run.run_id,
                    "stage": "run", "attempt": result.attempt, "error_type": result.error_type,
                    "message": result.error_message, "record_key": "",
                    "traceback": result.traceback})
            for failure in result.record_failures:
                rec.batch.errors.append({
                    "time": result.finished_at, "job": run.spec.job, "run_id": run.run_id,
                    "stage": failure.stage, "attempt": result.attempt,
                    "error_type": failure.error_type, "message": failure.message,
                    "record_key": failure.record_key, "traceback": ""})
            if not result.ok or result.record_failures:
                rec.outbox.add((ERRORS, ""))
        self.hooks.emit("on_attempt_end", run.info, result)
        if result.ok:
            self._finish(run, RunStatus.OK, result.finished_at, result.result)
            return
        policy = JobPolicy(run.spec.max_attempts, run.spec.backoff_initial_s,
                           run.spec.backoff_max_s)
        delay = None if self._shutting_down else policy.delay_after(
            result.attempt, result.permanent)
        if delay is None:
            self._finish(run, status, result.finished_at, result.result,
                         result.error_type, result.error_message)
        else:
            log.info("job %s run %s attempt %d failed (%s: %s); retrying in %.1fs",
                     run.spec.job, run.run_id, result.attempt, result.error_type,
                     result.error_message, delay,
                     extra={"job": run.spec.job, "run_id": run.run_id,
                            "attempt": result.attempt, "stage": "run"})
            self._send(run, time.time() + delay)

    def _started_late(self, run: _Run, started_at: float) -> None:
        """The worker began later than the dispatch (a batch, a busy pipe): keep the
        worker's own start time."""
        run.started_at = started_at
        rec = self._recorder
        with rec.lock:
            row = rec.new_by_id.get(run.run_id)
            if row is not None:
                row["started_at"] = started_at
            else:
                rec.batch.run_updates.append({"id": run.run_id, "started_at": started_at})

    def _finish(self, run: _Run, status: RunStatus, finished_at: float,
                result: dict[str, Any] | None = None, error_type: str = "",
                error_message: str = "") -> None:
        result = result or {}
        started = run.started_at or finished_at
        duration = max(0.0, finished_at - started)
        outcome = RunOutcome(
            status.value, run.attempt, finished_at, duration,
            int(result.get("records_in", 0)), int(result.get("records_out", 0)),
            int(result.get("records_failed", 0)), error_type, error_message)
        job = run.spec.job
        final = {"finished_at": finished_at, "status": status.value,
                 "attempts": run.attempt, "records_in": outcome.records_in,
                 "records_out": outcome.records_out, "records_failed": outcome.records_failed,
                 "duration_s": duration,
                 "result": json.dumps(result, default=str, sort_keys=True),
                 "error_type": error_type, "error_message": error_message[:2000]}
        state = self._job_state.setdefault(job, {"consecutive_failures": 0})
        if not run.dry_run:
            if status is RunStatus.OK:
                state["consecutive_failures"] = 0
                state["last_success_at"] = finished_at
            else:
                state["consecutive_failures"] = state.get("consecutive_failures", 0) + 1
        summary = result_summary(result) if status is RunStatus.OK else (
            f"{error_type}: {error_message}"[:200])
        rec = self._recorder
        with rec.lock:
            row = rec.new_by_id.get(run.run_id)
            if row is not None:
                row.update(final)
            else:
                if run.started_at is None:  # never started (shutdown): insert whole
                    rec.batch.new_runs.append({
                        "id": run.run_id, "job": job, "trigger": run.trigger,
                        "scheduled_for": run.scheduled_for, "started_at": finished_at,
                        "dry_run": run.dry_run, "requested_by": run.requested_by, **final})
                else:
                    rec.batch.run_updates.append({"id": run.run_id, **final})
            rec.batch.job_states[job] = {
                **rec.batch.job_states.get(job, {}),
                "last_run_id": run.run_id, "last_status": status.value,
                "last_start": started, "last_end": finished_at, "last_duration_s": duration,
                "last_result": ("[dry run] " if run.dry_run else "") + summary,
                "records_in": outcome.records_in, "records_out": outcome.records_out,
                "records_failed": outcome.records_failed,
                "consecutive_failures": state["consecutive_failures"],
                "last_success_at": state.get("last_success_at")}
            rec.outbox.add((STATUS, job))
            rec.outbox.add((RUNS, ""))
            if status is not RunStatus.OK:
                rec.outbox.add((ERRORS, ""))
        run.outcome = outcome
        if run.info is not None:
            self.hooks.emit("on_run_end", run.info, outcome)
        next_run = None
        with self._lock:
            self._runs.pop(run.run_id, None)
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

    def note_fire_times(self, times: dict[str, float]) -> None:
        """Remember the latest fire time handled per job (for catch-up after downtime)."""
        rec = self._recorder
        with rec.lock:
            for job, fired in times.items():
                rec.batch.job_states[job] = {**rec.batch.job_states.get(job, {}),
                                             "last_fire_time": fired}
