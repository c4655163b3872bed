"""From run events to store rows: the one place a run's rows are shaped.

The :class:`Recorder` receives :mod:`sheetops.events` (from the runner's threads, and
later from workers elsewhere), folds them into one pending :class:`~sheetops.store.Batch`
— a run queued and started before a flush becomes one inserted row, a run started and
finished between two flushes one update — and writes it with one
:meth:`Store.record` per :meth:`flush`, together with the outbox marks that tell the
status writer which tabs to refresh. A run's hand-off (its ``queued`` row, a fire's
time) is written at once instead, in a transaction of its own (:meth:`Recorder.commit`).
It also keeps each job's state across runs (consecutive failures, last success) for the
Status tab and the alerts.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from sheetops.errors import StoreUnavailable
from sheetops.events import (
    AttemptFinished,
    FireTimes,
    RunEvent,
    RunFinished,
    RunQueued,
    RunStarted,
)
from sheetops.store import Batch, RunStatus, Store, result_summary
from sheetops.store.leases import Fence, Fenced
from sheetops.tabs import ERRORS, RUNS, STATUS

log = logging.getLogger("sheetops.recorder")

_KEPT_STATE = ("consecutive_failures", "last_success_at")
_ERROR_MESSAGE_MAX = 2000
# The status tabs are rendered whole, so their outbox marks carry no key: one mark per
# tab and flush, however many jobs ran.
_STATUS_MARK, _RUNS_MARK, _ERRORS_MARK = (STATUS, ""), (RUNS, ""), (ERRORS, "")
# RunStatus values as plain strings, looked up once (the enum's ``.value`` is a property)
_VALUE = {s: s.value for s in RunStatus}
_QUEUED, _RUNNING = RunStatus.QUEUED.value, RunStatus.RUNNING.value


class Recorder:
    """Collects events since the last flush into one batch; safe to share between
    threads (``record`` from any of them, ``flush`` from any, one at a time)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        # One flush at a time: a flush that returns has everything recorded before it in
        # the store, and an update never commits before the insert of its run.
        self._flush_lock = threading.Lock()
        self._new: dict[str, dict[str, Any]] = {}  # run id → row inserted by this flush
        self._updates: dict[str, dict[str, Any]] = {}  # run id → columns to update
        self._attempts: list[dict[str, Any]] = []
        self._errors: list[dict[str, Any]] = []
        self._job_states: dict[str, dict[str, Any]] = {}
        self._outbox: set[tuple[str, str]] = set()
        self._state: dict[str, dict[str, Any]] = {}  # job → kept across runs
        #: the leader's lease each flush is written under (the engine sets it): a
        #: replaced leader's batches are refused and kept until it leads again
        self.fence: Callable[[], Fence | None] = lambda: None
        self._apply: dict[type[RunEvent], Callable[[Any], None]] = {
            RunQueued: self._queued, RunStarted: self._started,
            AttemptFinished: self._attempt_finished, RunFinished: self._finished,
            FireTimes: self._fire_times}

    def load(self) -> None:
        """Pick up each job's consecutive failures and last success from the store."""
        states = self.store.job_states()
        with self._lock:
            self._state = {job: {k: v for k, v in state.items() if k in _KEPT_STATE}
                           for job, state in states.items()}

    # -- events ------------------------------------------------------------------------
    def record(self, event: RunEvent) -> None:
        """Note ``event`` for the next flush."""
        with self._lock:
            self._apply[type(event)](event)

    def record_many(self, events: Iterable[RunEvent]) -> None:
        with self._lock:
            for event in events:
                self._apply[type(event)](event)

    def _update(self, run_id: str, values: dict[str, Any]) -> None:
        row = self._new.get(run_id)
        if row is not None:
            row.update(values)
        else:
            pending = self._updates.get(run_id)
            if pending is None:
                self._updates[run_id] = values
            else:
                pending.update(values)

    def _queued(self, e: RunQueued) -> None:
        # started_at holds the hand-off time until the run starts: the store orders,
        # rolls up and prunes runs by it
        self._new[e.run_id] = {
            "id": e.run_id, "job": e.job, "trigger": e.trigger,
            "scheduled_for": e.scheduled_for, "started_at": e.queued_at,
            "finished_at": None, "status": _QUEUED, "attempts": 0,
            "records_in": 0, "records_out": 0, "records_failed": 0, "duration_s": None,
            "result": "{}", "error_type": "", "error_message": "", "dry_run": e.dry_run,
            "requested_by": e.requested_by}
        self._outbox.add(_STATUS_MARK)
        self._outbox.add(_RUNS_MARK)

    def _started(self, e: RunStarted) -> None:
        self._update(e.run_id, {"status": _RUNNING, "started_at": e.started_at,
                                "attempts": 1})
        self._outbox.add(_STATUS_MARK)
        self._outbox.add(_RUNS_MARK)

    def _attempt_finished(self, e: AttemptFinished) -> None:
        self._attempts.append({
            "run_id": e.run_id, "attempt": e.attempt, "job": e.job,
            "started_at": e.started_at, "finished_at": e.finished_at,
            "status": _VALUE[e.status], "error_type": e.error_type,
            "error_message": e.error_message, "traceback": e.traceback})
        if e.status is not RunStatus.OK:
            self._errors.append({
                "time": e.finished_at, "job": e.job, "run_id": e.run_id, "stage": "run",
                "attempt": e.attempt, "error_type": e.error_type,
                "message": e.error_message, "record_key": "", "traceback": e.traceback})
        for failure in e.record_errors:
            self._errors.append({
                "time": e.finished_at, "job": e.job, "run_id": e.run_id,
                "stage": failure.stage, "attempt": e.attempt,
                "error_type": failure.error_type, "message": failure.message,
                "record_key": failure.record_key, "traceback": ""})
        if e.status is not RunStatus.OK or e.record_errors:
            self._outbox.add(_ERRORS_MARK)

    def _finished(self, e: RunFinished) -> None:
        job, ok = e.job, e.status is RunStatus.OK
        started = e.finished_at if e.started_at is None else e.started_at
        status = _VALUE[e.status]
        final: dict[str, Any] = {
            "finished_at": e.finished_at, "status": status, "attempts": e.attempts,
            "records_in": e.records_in, "records_out": e.records_out,
            "records_failed": e.records_failed, "duration_s": e.duration_s,
            "result": json.dumps(e.result, default=str, sort_keys=True) if e.result
            else "{}",
            "error_type": e.error_type,
            "error_message": e.error_message[:_ERROR_MESSAGE_MAX]}
        if e.started_at is not None:
            final["started_at"] = e.started_at
        self._update(e.run_id, final)
        state = self._state.setdefault(job, {"consecutive_failures": 0})
        if not e.dry_run:
            if ok:
                state["consecutive_failures"] = 0
                state["last_success_at"] = e.finished_at
            else:
                state["consecutive_failures"] = state.get("consecutive_failures", 0) + 1
        summary = result_summary(e.result) if ok else (
            f"{e.error_type}: {e.error_message}"[:200])
        self._job_states.setdefault(job, {}).update({
            "last_run_id": e.run_id, "last_status": status,
            "last_start": started, "last_end": e.finished_at,
            "last_duration_s": e.duration_s,
            "last_result": ("[dry run] " if e.dry_run else "") + summary,
            "records_in": e.records_in, "records_out": e.records_out,
            "records_failed": e.records_failed,
            "consecutive_failures": state.get("consecutive_failures", 0),
            "last_success_at": state.get("last_success_at")})
        self._outbox.add(_STATUS_MARK)
        self._outbox.add(_RUNS_MARK)
        if not ok:
            self._outbox.add(_ERRORS_MARK)

    def _fire_times(self, e: FireTimes) -> None:
        for job, fired in e.times.items():
            self._job_states.setdefault(job, {})["last_fire_time"] = fired

    # -- flushing ----------------------------------------------------------------------
    def flush(self) -> int:
        """Write everything recorded so far in one transaction; returns the number of
        run rows inserted or updated. On failure everything stays for the next flush
        (and the error is raised)."""
        with self._flush_lock:
            with self._lock:
                batch = self._take()
            if not batch:
                return 0
            batch.fence = self.fence()
            try:
                self.store.record(batch)
            except Fenced:  # the engine steps down and says so, once
                with self._lock:
                    self._put_back(batch)
                raise
            except StoreUnavailable as exc:
                log.warning("could not record %d runs in the store: %s; will retry",
                            len(batch.new_runs) + len(batch.run_updates), exc)
                with self._lock:
                    self._put_back(batch)
                raise
            except Exception:
                log.exception("could not record %d runs in the store; will retry",
                              len(batch.new_runs) + len(batch.run_updates))
                with self._lock:
                    self._put_back(batch)
                raise
            return len(batch.new_runs) + len(batch.run_updates)

    def commit(self, events: Iterable[RunEvent]) -> None:
        """Write ``events`` now, in one transaction of their own under the fence, apart
        from what is pending: the rows a hand-off needs in the store before its runs may
        start — a fire's queued runs with its fire times, so the two commit together or
        not at all. Raises (:class:`~sheetops.store.leases.Fenced`, a store error) having
        kept nothing of them. It waits for no flush: nothing pending can touch runs that
        are not handed to anyone yet."""
        with self._lock:
            pending = (self._new, self._updates, self._attempts, self._errors,
                       self._job_states, self._outbox)
            self._new, self._updates, self._attempts = {}, {}, []
            self._errors, self._job_states, self._outbox = [], {}, set()
            try:
                for event in events:
                    self._apply[type(event)](event)
                batch = self._take()
            finally:
                (self._new, self._updates, self._attempts, self._errors,
                 self._job_states, self._outbox) = pending
        if batch:
            batch.fence = self.fence()
            self.store.record(batch)

    def take(self) -> Batch:
        """Everything recorded so far, as a batch the caller writes in a transaction of
        its own (a Celery worker writes a run's start with its delivery count); the
        recorder forgets it."""
        with self._lock:
            return self._take()

    def _take(self) -> Batch:
        batch = Batch(new_runs=list(self._new.values()),
                      run_updates=[{"id": run_id, **values}
                                   for run_id, values in self._updates.items()],
                      attempts=self._attempts, errors=self._errors,
                      job_states=self._job_states, outbox=sorted(self._outbox))
        self._new, self._updates = {}, {}
        self._attempts, self._errors, self._job_states = [], [], {}
        self._outbox = set()
        return batch

    def _put_back(self, batch: Batch) -> None:
        """Put a batch that failed in front of what came meanwhile: a run inserted by it
        takes the updates recorded since; its updates go under the newer ones."""
        new = {row["id"]: row for row in batch.new_runs}
        for run_id, row in new.items():
            later = self._updates.pop(run_id, None)
            if later:
                row.update(later)
        self._new = {**new, **self._new}
        updates = {row["id"]: {k: v for k, v in row.items() if k != "id"}
                   for row in batch.run_updates}
        for run_id, later in self._updates.items():
            updates[run_id] = {**updates.get(run_id, {}), **later}
        self._updates = updates
        self._attempts[:0] = batch.attempts
        self._errors[:0] = batch.errors
        for job, values in batch.job_states.items():
            self._job_states[job] = {**values, **self._job_states.get(job, {})}
        self._outbox |= set(batch.outbox)
