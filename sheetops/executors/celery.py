"""The ``celery`` executor: attempts run as Celery tasks on ``sheetops worker`` processes,
on this machine or many (``SHEETOPS_EXECUTOR=celery``, ``SHEETOPS_BROKER_URL``).

The scheduler's side only hands off and follows:

* a run's hand-off (its ``queued`` row, written by the runner's recorder) is committed
  *before* its task is published, so a worker always finds the run it is given and a
  scheduler that dies after publishing leaves nothing unrecorded;
* the queued row is the outbox of the publish: each publish sends a new *copy* of the
  attempt (its own id in the task; many first attempts due at once travel several to a
  task, :func:`pack_size`, each with its own copy id) and then marks it sent in the
  store; a run still queued with no mark nor delivery
  ``SHEETOPS_CELERY_REPUBLISH_AFTER_S`` after its last try (the broker was down, the mark
  did not commit, or a dead leader committed it and never published it —
  :meth:`CeleryExecutor.adopt`) is published again, and the first copy to reach the
  store owns the attempt while every other is dropped by the worker
  (:mod:`sheetops.store.task_deliveries`): sent at least once, run at most once;
* a retry is the workers' to publish (and mark), but a ``running`` run whose last
  attempt failed and whose retry has no mark nor delivery once it is overdue — its
  backoff at the longest plus ``SHEETOPS_CELERY_REPUBLISH_AFTER_S`` after that attempt
  ended — is published again here, the same way (:meth:`CeleryExecutor._sweep_retries`);
* the workers record everything after that themselves — start, attempts, retries, the
  outcome (:mod:`.celery_worker`) — so the scheduler's memory holds nothing a crash
  could lose; a new leader reads the runs in flight from the store;
* this executor reads its runs' rows every ``SHEETOPS_CELERY_POLL_INTERVAL_S`` and
  reports each start and end to the runner (concurrency slots, hooks, ``run-job``'s
  wait). No Celery result backend is involved.

An attempt that cannot be sent safely (its ``timeout_s`` plus retry delay reaches the
broker's redelivery timeout) is failed here, with the reason; one the broker refuses
waits queued and is sent again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sheetops.client_context import carry
from sheetops.context import AttemptRequest, AttemptResult
from sheetops.executors.base import Executor, OnResult, OnStart
from sheetops.executors.celery_config import CeleryConfig, CeleryConfigError, pack_timeout_s
from sheetops.executors.celery_worker import build_app
from sheetops.faults import hold_if_asked
from sheetops.hooks import Hooks
from sheetops.recorder import Recorder
from sheetops.retry import JobPolicy
from sheetops.settings import get_settings
from sheetops.store import RunStatus
from sheetops.wire import store_ref

log = logging.getLogger("sheetops.celery")

_FINISHED = {s.value for s in (RunStatus.OK, RunStatus.FAILED, RunStatus.TIMEOUT)}

#: The policy of a run this scheduler was not told about: one attempt, no retry.
_ONCE = JobPolicy(1, 1.0, 1.0)

#: Test-only: ``before:<path>`` or ``after:<path>``. The scheduler writes the ids of the
#: runs it is about to publish (their rows committed) — or has just published, before
#: marking them sent — to ``<path>`` and blocks, so a test can kill it right there.
HOLD_AT_PUBLISH_ENV = "SHEETOPS_TEST_HOLD_AT_PUBLISH"


#: Attempts published in one round trip to the broker (kombu's publish batch, on a
#: transport that has one — Redis; on the others each goes on its own): one LPUSH each
#: and a client per publish otherwise, most of the scheduler's CPU per no-op run. Small
#: enough that workers start on the first while the next are being built.
PUBLISH_BATCH = 64


#: A publish packs attempts only into at least this many tasks: a pack is
#: ``due // PACK_SPREAD`` attempts (:func:`pack_size`).
PACK_SPREAD = 32


def pack_size(due: int, pack_max: int) -> int:
    """How many attempts one task carries when ``due`` packable attempts are published
    together: ``due // PACK_SPREAD``, at most ``pack_max``; 1 (no packing) below
    ``2 × PACK_SPREAD``. A pack saves Celery's per-task work and the delivery count's
    round trip for all its attempts but one — most of a no-op run's cost on a worker —
    but its attempts run one after the other on one process. Keeping at least
    :data:`PACK_SPREAD` tasks per publish keeps every process of a fleet of up to 32
    busy as before, and the publish's tail (its last task finishing while other
    processes are idle) at a thirty-second of the publish's work: 160 runs of 50 ms on 4
    processes go as 32 packs of 5, 8 per process. A burst of a few runs is not packed."""
    return max(1, min(pack_max, due // PACK_SPREAD))


def _packable(request: AttemptRequest, delay: float) -> bool:
    """Whether an attempt may go in a pack: a first attempt due now, with no rate limit
    (its waits would hold the pack's other attempts); the others go as single tasks. A
    memory limit is set and lifted around each attempt of a pack as for a single one."""
    return request.attempt == 1 and not delay and request.rate_limit is None


#: Mean seconds an automation's attempts take from which they are no longer packed:
#: a pack saves a few milliseconds of Celery's work per attempt, which only counts for
#: attempts about that short, and runs its attempts one after the other on one process,
#: which costs longer ones their parallelism.
PACK_SLOW_S = 0.01
#: Finished attempts of an automation the leader has seen before it trusts their mean.
PACK_SAMPLES = 5


class _Durations:
    """Each automation's mean attempt time, learned from the runs the leader follows
    (an automation not seen yet counts as quick)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, float]] = {}

    def learn(self, automation: str, seconds: float) -> None:
        samples, mean = self._seen.get(automation, (0, 0.0))
        weight = 1 / min(samples + 1, 50)
        self._seen[automation] = (samples + 1, mean + (max(0.0, seconds) - mean) * weight)

    def slow(self, automation: str) -> bool:
        samples, mean = self._seen.get(automation, (0, 0.0))
        return samples >= PACK_SAMPLES and mean >= PACK_SLOW_S


def _publish_batch(producer: Any) -> contextlib.AbstractContextManager[Any]:
    """``producer``'s publishes in the block sent at its end, in one batch (with a kombu
    that has ``Producer.batch``; an older one sends each at once)."""
    batch = getattr(producer, "batch", None)
    # room for every command of a batch (a queue with an expiry adds some per task), so
    # none is flushed on its own midway
    return batch(8 * PUBLISH_BATCH) if batch is not None else contextlib.nullcontext()


@dataclass
class _Unsent:
    """A run queued in the store whose task may not be in the broker."""

    request: AttemptRequest
    policy: JobPolicy
    since: float  # the last try to publish it (an adopted run: when it was queued)


class CeleryExecutor(Executor):
    """Publishes attempts to the broker and follows their runs in the store."""

    records_runs = True

    def __init__(self, on_start: OnStart, on_result: OnResult, hooks: Hooks | None = None,
                 workers: int = 0, config: CeleryConfig | None = None) -> None:
        super().__init__(on_start, on_result, hooks, workers)
        self.config = config or CeleryConfig.from_settings(get_settings())
        self.app, self._worker = build_app(self.config)  # the worker's app: sends only
        self._recorder: Recorder | None = None
        self._pending: deque[tuple[AttemptRequest, float | None]] = deque()
        self._policies: dict[str, JobPolicy] = {}
        self._inflight: dict[str, AttemptRequest] = {}
        self._started: set[str] = set()
        self._failed_here: set[str] = set()
        self._unsent: dict[str, _Unsent] = {}
        self._run_policies: dict[str, JobPolicy] = {}  # of the runs in flight
        self._retry_checked: dict[str, float] = {}  # a run's last check for a lost retry
        self._lost_checked_at = 0.0  # the last look for sent tasks the broker lost
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.sent = 0  # attempts published
        self.packs_sent = 0  # of which in packs: tasks of several attempts
        self.durations = _Durations()

    def bind_recorder(self, recorder: Recorder) -> None:
        """The runner's recorder: flushed before each publish (the run rows first)."""
        self._recorder = recorder

    def set_policy(self, run_id: str, policy: JobPolicy) -> None:
        """The retry policy the workers apply to ``run_id`` (its job's)."""
        with self._lock:
            self._policies[run_id] = policy

    # -- Executor ----------------------------------------------------------------------
    def start(self) -> None:
        if self._recorder is None:
            raise CeleryConfigError("the celery executor records through the runner's "
                                    "recorder; it was not bound (Runner does this)")
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=2, interval_start=0.2, interval_step=0.5)
        except Exception as exc:
            raise CeleryConfigError(f"cannot reach the Celery broker "
                                    f"{store_ref(self.config.broker_url)} ({exc})") from None
        self._stopping.clear()
        for target, name in ((self._send_loop, "sheetops-celery-send"),
                             (self._poll_loop, "sheetops-celery-poll")):
            thread = threading.Thread(target=carry(target), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, request: AttemptRequest, eta: float | None = None) -> None:
        with self._lock:
            self._pending.append((request, eta))
        self._wake.set()

    def submit_many(self, requests: list[AttemptRequest]) -> None:
        with self._lock:
            self._pending.extend((r, None) for r in requests)
        self._wake.set()

    def adopt(self, request: AttemptRequest, queued_at: float | None = None) -> None:
        """Follow a run another scheduler handed off (this one took over as leader).
        With ``queued_at`` it is queued with no sign it was ever published and is
        published ``SHEETOPS_CELERY_REPUBLISH_AFTER_S`` after ``queued_at`` unless a
        worker takes it up first."""
        with self._lock:
            self._inflight[request.run_id] = request
            policy = self._policies.pop(request.run_id, _ONCE)
            self._run_policies[request.run_id] = policy
            if queued_at is not None:
                self._unsent[request.run_id] = _Unsent(request, policy, queued_at)

    def stop(self, timeout: float | None = None) -> list[AttemptRequest]:
        """Stop sending and following. Runs already sent go on on the workers, which
        record them; the requests never handed to the sending thread are returned. A run
        committed whose publish failed stays queued in the store for the next leader."""
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        with self._lock:
            unsent = [request for request, _ in self._pending]
            self._pending.clear()
        return unsent

    def recorded(self, result: AttemptResult) -> bool:
        with self._lock:
            if result.run_id in self._failed_here:
                self._failed_here.discard(result.run_id)
                return False
        return True

    @property
    def queue_depth(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._inflight) - len(self._started)

    @property
    def running(self) -> int:
        return len(self._started)

    # -- sending -----------------------------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            if self._stopping.is_set():
                return
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
            if batch:
                try:
                    self._publish(batch)
                except Exception:
                    log.exception("could not hand %d attempt(s) to Celery", len(batch))

    def _publish(self, batch: list[tuple[AttemptRequest, float | None]]) -> None:
        assert self._recorder is not None
        while True:  # the runs' rows must be committed before any worker sees a task
            try:
                self._recorder.flush()
                break
            except Exception:
                if self._stopping.wait(0.5):
                    with self._lock:
                        self._pending.extendleft(reversed(batch))
                    return
        hold_if_asked(HOLD_AT_PUBLISH_ENV, [request.run_id for request, _ in batch], "before")
        now = time.time()
        ready: list[tuple[AttemptRequest, JobPolicy, float]] = []
        for request, eta in batch:
            delay = max(0.0, eta - now) if eta else 0.0
            problem = self.config.task_problem(request.timeout_s, delay)
            if problem:
                self._fail(request, problem, "ConfigError")
                continue
            with self._lock:
                policy = self._policies.pop(request.run_id, _ONCE)
                self._run_policies[request.run_id] = policy
                self._inflight[request.run_id] = request
            ready.append((request, policy, delay))
        self._send_copies(ready)

    def _send_copies(self, ready: Sequence[tuple[AttemptRequest, JobPolicy, float]]) -> None:
        """Publish a new copy of each attempt — several first attempts in one pack task
        when many are due (:meth:`_tasks`) — :data:`PUBLISH_BATCH` tasks at a time, then
        mark the copies sent in one transaction. A run the broker refused (with the rest of
        its batch, which may or may not have gone out), or whose mark did not commit,
        waits in ``_unsent`` for :meth:`_sweep` (a copy that went out unmarked is dropped
        by the worker if a later copy reaches the store first)."""
        sent: list[tuple[AttemptRequest, JobPolicy, str]] = []
        refused: list[tuple[AttemptRequest, JobPolicy]] = []
        error: Exception | None = None
        tasks = self._tasks(ready)
        try:
            with self.app.producer_or_acquire() as producer:
                for start in range(0, len(tasks), PUBLISH_BATCH):
                    chunk: list[tuple[AttemptRequest, JobPolicy, str]] = []
                    with _publish_batch(producer):  # sent when the block ends
                        for task in tasks[start:start + PUBLISH_BATCH]:
                            copies = [(r, p, uuid.uuid4().hex) for r, p, _ in task]
                            if len(copies) > 1:
                                self._worker.send_pack(copies, producer)
                                self.packs_sent += 1
                            else:
                                request, policy, copy_id = copies[0]
                                self._worker.send_attempt(request, policy, None,
                                                          task[0][2], producer, copy_id)
                            chunk += copies
                    sent += chunk
        except Exception as exc:  # the broker is down: the rest waits (no retry storm)
            error = exc
            done = {request.run_id for request, _, _ in sent}
            refused = [(r, p) for r, p, _ in ready if r.run_id not in done]
        self.sent += len(sent)
        hold_if_asked(HOLD_AT_PUBLISH_ENV, [request.run_id for request, _, _ in sent],
                      "after")
        try:
            self._recorder.store.task_deliveries.mark_sent(  # type: ignore[union-attr]
                [(request.run_id, request.attempt, copy_id) for request, _, copy_id in sent])
        except Exception:
            log.exception("could not mark %d published task(s) sent; they are checked "
                          "again in %gs", len(sent), self.config.republish_after_s)
            refused += [(request, policy) for request, policy, _ in sent]
        if error is not None:
            log.warning("the Celery broker refused %d task(s) (%s: %s); their runs stay "
                        "queued and are sent again in %gs", len(refused),
                        type(error).__name__, error, self.config.republish_after_s)
        now = time.time()
        with self._lock:
            for request, policy in refused:
                self._unsent[request.run_id] = _Unsent(request, policy, now)

    def _tasks(self, ready: Sequence[tuple[AttemptRequest, JobPolicy, float]]
               ) -> list[list[tuple[AttemptRequest, JobPolicy, float]]]:
        """``ready`` as the tasks to publish: the packable attempts (:meth:`_packs`)
        in packs of :func:`pack_size`, each closed early when one more attempt would make
        its time limits reach the broker's redelivery timeout
        (:meth:`~sheetops.executors.celery_config.CeleryConfig.task_problem` of
        :func:`~sheetops.executors.celery_config.pack_timeout_s`), then the others one
        per task. A pack of one is sent as a single attempt task."""
        packable = [item for item in ready if self._packs(item)]
        size = pack_size(len(packable), self.config.pack_max)
        if size < 2:
            return [[item] for item in ready]
        tasks: list[list[tuple[AttemptRequest, JobPolicy, float]]] = []
        pack: list[tuple[AttemptRequest, JobPolicy, float]] = []
        for item in packable:
            timeouts = [r.timeout_s for r, _, _ in pack] + [item[0].timeout_s]
            if pack and (len(pack) >= size
                         or self.config.task_problem(pack_timeout_s(timeouts))):
                tasks.append(pack)
                pack = []
            pack.append(item)
        tasks.append(pack)
        return tasks + [[item] for item in ready if not self._packs(item)]

    def _packs(self, item: tuple[AttemptRequest, JobPolicy, float]) -> bool:
        """Whether the attempt may go in a pack: :func:`_packable`, and of an
        automation whose attempts are quick (:data:`PACK_SLOW_S`)."""
        return _packable(item[0], item[2]) and not self.durations.slow(item[0].automation)

    def _sweep(self) -> None:
        """Publish again the runs in ``_unsent`` whose last try is older than
        ``republish_after_s`` and that are still queued with no copy marked sent or
        delivered; forget those a worker took up or that ended. Their rows are read here,
        queued ones included (the poll reads only the runs that left the queue)."""
        now = time.time()
        with self._lock:
            due = {run_id: u for run_id, u in self._unsent.items()
                   if now - u.since >= self.config.republish_after_s}
        if not due:
            return
        store = self._recorder.store  # type: ignore[union-attr]
        try:
            rows = store.runs.statuses(list(due))
            queued = [run_id for run_id in due if run_id in rows
                      and rows[run_id]["status"] == RunStatus.QUEUED.value]
            taken = store.task_deliveries.sent(queued)
        except Exception:
            log.exception("could not read which queued runs were sent; trying again")
            return
        again = [run_id for run_id in queued if run_id not in taken]
        with self._lock:
            for run_id in due:
                if run_id in rows:  # a row not read yet keeps waiting
                    self._unsent.pop(run_id, None)
        if again:
            log.warning("%d run(s) still queued with no task delivered after %gs; "
                        "publishing them again", len(again), self.config.republish_after_s)
            self._send_copies([(due[run_id].request, due[run_id].policy, 0.0)
                               for run_id in again])

    def _sweep_retries(self, rows: dict[str, dict[str, Any]]) -> None:
        """Publish again the retries of ``running`` runs that workers never published
        (a worker's publish lost with no redelivery of its attempt to publish it again):
        the last recorded attempt's successor has no mark nor delivery once overdue, its
        backoff at the longest plus ``republish_after_s`` after that attempt ended. Each
        run is checked at most every ``republish_after_s``; the first copy of a retry to
        reach the store owns it, so a retry a worker publishes too runs once."""
        now = time.time()
        grace = self.config.republish_after_s
        with self._lock:
            check = [run_id for run_id, row in rows.items()
                     if row["status"] == RunStatus.RUNNING.value
                     and self._run_policies.get(run_id, _ONCE).max_attempts > 1
                     and now - self._retry_checked.get(run_id, 0.0) >= grace]
            self._retry_checked.update((run_id, now) for run_id in check)
        if not check:
            return
        store = self._recorder.store  # type: ignore[union-attr]
        again: list[tuple[AttemptRequest, JobPolicy, float | None]] = []
        for run_id, (attempt, ended) in store.task_deliveries.retries_owed(check).items():
            with self._lock:
                request, policy = self._inflight.get(run_id), self._run_policies[run_id]
            latest = policy.latest_delay_after(attempt)
            if request is None or latest is None or now < ended + latest + grace:
                continue
            again.append((replace(request, attempt=attempt + 1), policy,
                          rows[run_id]["started_at"]))
        if not again:
            return
        log.warning("%d running run(s) whose retry was never published by their worker; "
                    "publishing them", len(again))
        sent: list[tuple[str, int, str]] = []
        try:
            with self.app.producer_or_acquire() as producer:
                for request, policy, started in again:
                    copy_id = uuid.uuid4().hex
                    self._worker.send_attempt(request, policy, started, None, producer,
                                              copy_id)
                    sent.append((request.run_id, request.attempt, copy_id))
        except Exception as exc:
            log.warning("the Celery broker refused a retry (%s: %s); tried again in %gs",
                        type(exc).__name__, exc, grace)
        store.task_deliveries.mark_sent(sent)

    def _sweep_lost(self, ids: list[str], rows: dict[str, dict[str, Any]]) -> None:
        """Publish again the runs still queued whose task was marked sent but that no
        worker took up within :meth:`CeleryConfig.lost_after_s` of the mark — the
        broker lost it (Redis restarted without persistence, a queue purged). Their
        attempt is released in the store first (no copy owns it), so the new copy and
        the old one, if it was only waiting, compete: the first to reach the store runs,
        the other is dropped. Checked every ``republish_after_s`` at most."""
        now = time.time()
        if now - self._lost_checked_at < self.config.republish_after_s:
            return
        self._lost_checked_at = now
        by_timeout: dict[float, list[str]] = {}
        with self._lock:
            for run_id in ids:
                request = self._inflight.get(run_id)
                if request is not None and run_id not in rows and run_id not in self._unsent:
                    by_timeout.setdefault(request.timeout_s, []).append(run_id)
        if not by_timeout:
            return
        deliveries = self._recorder.store.task_deliveries  # type: ignore[union-attr]
        lost = [run_id for timeout_s, run_ids in by_timeout.items()
                for run_id in deliveries.release_undelivered(
                    run_ids, now - self.config.lost_after_s(timeout_s))]
        if not lost:
            return
        log.warning("%d run(s) still queued whose task no worker took up since it was "
                    "sent (lost by the broker?); publishing another copy", len(lost))
        with self._lock:
            again = [(self._inflight[run_id], self._run_policies.get(run_id, _ONCE), 0.0)
                     for run_id in lost if run_id in self._inflight]
        self._send_copies(again)

    def _fail(self, request: AttemptRequest, message: str, error_type: str) -> None:
        now = time.time()
        with self._lock:
            self._failed_here.add(request.run_id)
        log.error("run %s of %s not sent: %s", request.run_id, request.job, message)
        self.on_start(request, now)
        self.on_result(AttemptResult(request.run_id, request.job, request.attempt, now, now,
                                     False, error_type=error_type, error_message=message,
                                     permanent=True))

    # -- following ---------------------------------------------------------------------
    def _poll_loop(self) -> None:
        while not self._stopping.wait(self.config.poll_interval_s):
            with self._lock:
                ids = list(self._inflight)
            if not ids:
                continue
            try:
                rows = self._recorder.store.runs.statuses(  # type: ignore[union-attr]
                    ids, queued=False)
            except Exception:
                log.exception("could not read the runs in flight; trying again")
                continue
            for run_id, row in rows.items():
                self._follow(run_id, row)
            try:
                self._sweep()
                self._sweep_retries(rows)
                self._sweep_lost(ids, rows)
            except Exception:
                log.exception("could not publish the unsent runs again; trying again")

    def _follow(self, run_id: str, row: dict[str, Any]) -> None:
        request = self._inflight.get(run_id)
        if request is None:
            return
        status = row["status"]
        if status != RunStatus.QUEUED.value and run_id not in self._started:
            self._started.add(run_id)
            self.on_start(request, row["started_at"] or time.time())
        if status not in _FINISHED:
            return
        with self._lock:
            self._inflight.pop(run_id, None)
            self._started.discard(run_id)
            self._run_policies.pop(run_id, None)
            self._retry_checked.pop(run_id, None)
        try:
            result = json.loads(row["result"] or "{}")
        except ValueError:
            result = {}
        finished = row["finished_at"] or time.time()
        if row["started_at"]:
            self.durations.learn(request.automation, finished - row["started_at"])
        self.on_result(AttemptResult(
            run_id, request.job, int(row["attempts"] or 1), row["started_at"] or finished,
            finished, status == RunStatus.OK.value, result,
            error_type=row["error_type"] or "", error_message=row["error_message"] or "",
            timed_out=status == RunStatus.TIMEOUT.value))
