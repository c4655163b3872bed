"""What a ``sheetops worker`` does with a task: run it and record it in the store itself.

Three tasks, all carrying JSON only (:mod:`sheetops.wire`, no secret, the store as a
reference):

* ``sheetops.attempt`` — one attempt of one run. The worker counts the delivery and reads
  the run (:meth:`~sheetops.store.task_deliveries.TaskDeliveryStore.begin_attempt`, one
  transaction, one round trip), runs the automation with the same
  :func:`~sheetops.attempt.run_attempt` the local executor uses, and records the attempt
  and — when it was the last — the run's outcome through a
  :class:`~sheetops.recorder.Recorder` (one transaction, one round trip), before the task
  returns and Celery acks it; a failed attempt with attempts left is sent again with its
  backoff as ETA. The run's start is written on its own only when the first attempt
  outlasts :data:`~sheetops.executors.late_start.LATE_START_S`, with the end otherwise
  (:mod:`~sheetops.executors.late_start`). Nothing waits in the scheduler's memory: a
  scheduler that dies loses no result, and a new one reads every run from the store.
  A delivery of an attempt already recorded is dropped (it was redelivered after its
  result was committed), and so is a copy of an attempt that another published copy owns
  (a leader published it again, :mod:`sheetops.executors.celery`); one delivered more
  than ``SHEETOPS_CELERY_MAX_DELIVERIES`` times (its worker died each time) ends the run
  as failed. A retry is published as a copy and marked sent after its publish; a
  redelivery of an attempt whose result is recorded publishes the retry when it has no
  mark (the worker died, or the broker refused the publish, after the commit), so a
  retry is published at least once and, the first copy owning it, run at most once.
* ``sheetops.attempts`` — a pack of first attempts a leader published together (each
  with its own copy id, :meth:`Worker.run_pack_task`): every delivery is counted in one
  statement (:meth:`~sheetops.store.task_deliveries.TaskDeliveryStore.begin_attempts`),
  then each attempt runs and is recorded as above, one after the other, stopped at its
  own ``timeout_s`` (:func:`attempt_deadline`), its result committed before the next
  starts; the pack is acked after the last. A pack delivered again (its worker died in
  it) is sent on as single attempt tasks, its recorded attempts dropped.
* ``sheetops.stage`` — batches of one pipeline stage (:mod:`sheetops.pipelines.celery`).

The hard deadline is Celery's: a soft time limit at ``timeout_s`` raises inside the
attempt (recorded as a timeout), a hard one a few seconds later kills the worker process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from sheetops import wire
from sheetops.attempt import run_attempt
from sheetops.context import AttemptRequest, AttemptResult
from sheetops.errors import RunTimeout, WorkerLost
from sheetops.events import AttemptFinished, RunFinished, RunStarted, attempt_status
from sheetops.executors.celery_config import (
    ATTEMPT_TASK,
    HARD_LIMIT_GRACE_S,
    PACK_TASK,
    CeleryConfig,
    make_app,
    pack_timeout_s,
)
from sheetops.executors.late_start import LateStart
from sheetops.executors.memory import explain_memory_error, limit_memory
from sheetops.ratelimit import RateLimiter, RateLimitSpec
from sheetops.recorder import Recorder
from sheetops.retry import JobPolicy
from sheetops.store import Batch, RunStatus, Store
from sheetops.store.task_deliveries import AttemptStart

log = logging.getLogger("sheetops.celery")

_SOFT_LIMIT = "SoftTimeLimitExceeded"

#: Test-only: ``kill:<path>``, ``refuse:<path>`` or ``drop:<path>``. Once per ``<path>``,
#: a worker about to publish a retry (its failed attempt committed) writes the run id to
#: ``<path>`` and then blocks, so a test can kill it right there (``kill``), fails the
#: publish as a broker refusing it would (``refuse``), or skips it as a broker losing the
#: message it took would (``drop``).
RETRY_FAULT_ENV = "SHEETOPS_TEST_RETRY_FAULT"


class RetryPublishRefused(ConnectionError):
    """The test hook of :data:`RETRY_FAULT_ENV` refused a retry's publish."""


def attempt_message(request: AttemptRequest, policy: JobPolicy,
                    run_started_at: float | None = None, copy_id: str | None = None) -> str:
    """The JSON body of an attempt task: the request, the job's retry policy and, for an
    attempt that may be published more than once, the id of this published copy."""
    return wire.dumps({"request": wire.request_to_dict(request),
                       "policy": dataclasses.asdict(policy),
                       "run_started_at": run_started_at, "copy": copy_id})


def send_options(config: CeleryConfig, request: AttemptRequest,
                 countdown: float | None = None) -> dict[str, Any]:
    """``apply_async`` options of an attempt: its queue, ETA and time limits."""
    options: dict[str, Any] = {
        "queue": config.queue, "soft_time_limit": request.timeout_s,
        "time_limit": request.timeout_s + HARD_LIMIT_GRACE_S,
        "task_id": f"{request.run_id}-{request.attempt}"}
    if countdown:
        options["countdown"] = countdown
    return options


def pack_message(messages: Sequence[str]) -> str:
    """The JSON body of a pack task: the attempt messages (:func:`attempt_message`, each
    with its own copy id), in the order they run."""
    return '{"pack":[' + ",".join(messages) + "]}"


def pack_options(config: CeleryConfig, requests: Sequence[AttemptRequest]
                 ) -> dict[str, Any]:
    """``apply_async`` options of a pack: its queue and time limits covering every
    attempt in turn (:func:`~sheetops.executors.celery_config.pack_timeout_s`; each
    attempt is stopped at its own ``timeout_s`` by :func:`attempt_deadline`)."""
    timeout = pack_timeout_s([r.timeout_s for r in requests])
    return {"queue": config.queue, "soft_time_limit": timeout,
            "time_limit": timeout + HARD_LIMIT_GRACE_S,
            "task_id": f"pack-{requests[0].run_id}-{len(requests)}-{uuid.uuid4().hex[:8]}"}


@dataclasses.dataclass(frozen=True)
class Delivered:
    """One attempt as a task message carries it."""

    request: AttemptRequest
    policy: JobPolicy
    run_started: float | None
    copy: str | None

    @classmethod
    def of(cls, data: dict[str, Any]) -> Delivered:
        """The attempt of :func:`attempt_message`'s JSON (already parsed)."""
        return cls(wire.request_from_dict(data["request"]), JobPolicy(**data["policy"]),
                   data.get("run_started_at"), data.get("copy"))


def _pack_of(data: dict[str, Any]) -> list[Delivered]:
    """The attempts of :func:`pack_message`'s JSON (already parsed), all of one store."""
    items = data.get("pack")
    if not isinstance(items, list) or not items:
        raise wire.WireFormatError("a pack task with no attempts")
    pack = [Delivered.of(item) for item in items]
    if len({d.request.store_url for d in pack}) != 1:
        raise wire.WireFormatError("a pack task whose attempts are in several stores")
    return pack


@contextlib.contextmanager
def attempt_deadline(seconds: float) -> Iterator[None]:
    """Raise Celery's ``SoftTimeLimitExceeded`` in the block after ``seconds`` (an
    interval timer, ``SIGALRM``): the soft time limit of one attempt in a pack, whose
    Celery limits are the whole pack's. A pool process runs its task on its main thread;
    elsewhere (no signals there) the block runs with the pack's limits only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from billiard.exceptions import SoftTimeLimitExceeded

    armed = [True]

    def expire(signum: int, frame: Any) -> None:
        if armed[0]:
            raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Worker:
    """The state one worker process keeps between tasks: stores by URL (one engine
    each), a recorder per store, a rate limiter. Built lazily in each pool process."""

    def __init__(self, config: CeleryConfig) -> None:
        self.config = config
        self.app = None  # set by build_app
        self._stores: dict[str, tuple[Store, Recorder]] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.limiter = RateLimiter()
        self.late_start = LateStart()

    def store(self, url: str) -> tuple[Store, Recorder]:
        with self._lock:
            if self._pid != os.getpid():  # forked: engines must not cross processes
                self._stores, self._pid = {}, os.getpid()
            if url not in self._stores:
                store = Store(url)
                self._stores[url] = (store, Recorder(store))
            return self._stores[url]

    # -- attempts ----------------------------------------------------------------------
    def run_attempt_task(self, message: str) -> str:
        """Run one delivered attempt task; returns what happened, for the worker's log."""
        delivered = Delivered.of(wire.loads(message))
        request = delivered.request
        store, recorder = self.store(request.store_url)
        begin = store.task_deliveries.begin_attempt(
            request.run_id, request.attempt, self.config.max_deliveries,
            copy_id=delivered.copy)
        return self._run_begun(store, recorder, delivered, begin)

    def run_pack_task(self, message: str) -> str:
        """Run a delivered pack of attempts: count every delivery in one statement, then
        run and record each attempt in turn (its result committed before the next
        starts; the task acked after the last). A pack delivered again — its worker died
        in it — is not run as a pack: its attempts not recorded are sent on one by one
        (:meth:`_unpack`), so one that kills its worker is capped on its own deliveries
        and takes no other attempt with it. Returns what happened, for the worker's log."""
        pack = _pack_of(wire.loads(message))
        store, recorder = self.store(pack[0].request.store_url)
        begins = store.task_deliveries.begin_attempts(
            [(d.request.run_id, d.request.attempt, d.copy) for d in pack],
            self.config.max_deliveries)
        if any(begin.deliveries > 1 for begin in begins):
            return self._unpack(store, pack, begins)
        outcomes = Counter(self._run_begun(store, recorder, delivered, begin, own_deadline=True)
                           for delivered, begin in zip(pack, begins, strict=True))
        return f"pack of {len(pack)}: " + ", ".join(f"{n} {what}"
                                                   for what, n in sorted(outcomes.items()))

    def _unpack(self, store: Store, pack: list[Delivered], begins: list[AttemptStart]
                ) -> str:
        """A pack delivered again: publish each attempt not recorded as a single attempt
        task, its own copy (released first, :meth:`~sheetops.store.task_deliveries.
        TaskDeliveryStore.release_copies`, so the new copy owns it and its deliveries
        count from 0; marked sent after the publish as :meth:`_send_retry` does), and
        publish the retry owed by any recorded attempt (:meth:`_publish_owed_retry`).
        Nothing is run here: a worker dying again only delivers the pack again."""
        alive = [(d, b) for d, b in zip(pack, begins, strict=True)
                 if b.run_status is not None and not b.finished and not b.another_copy]
        for delivered, _ in (pair for pair in alive if pair[1].recorded):
            self._publish_owed_retry(store, delivered.request, delivered.policy)
        todo = {d.request.run_id: d for d, b in alive if not b.recorded}
        released = store.task_deliveries.release_copies(
            [(d.request.run_id, d.request.attempt, d.copy or "") for d in todo.values()])
        log.warning("a pack of %d attempt(s) was delivered again (its worker died in it); "
                    "sending its %d attempt(s) not recorded on their own", len(pack),
                    len(released))
        copies: list[tuple[str, int, str]] = []
        with self.app.producer_or_acquire() as producer:
            for run_id in released:
                delivered = todo[run_id]
                copy_id = uuid.uuid4().hex
                self.send_attempt(delivered.request, delivered.policy,
                                  delivered.run_started, None, producer, copy_id)
                copies.append((run_id, delivered.request.attempt, copy_id))
        store.task_deliveries.mark_sent(copies)
        return f"pack of {len(pack)} sent on as {len(copies)} single attempt(s)"

    def _run_begun(self, store: Store, recorder: Recorder, delivered: Delivered,
                   begin: AttemptStart, own_deadline: bool = False) -> str:
        """Run and record one attempt whose delivery ``begin`` counted — or drop it, end
        it as a poison task, publish the retry it owes — as ``begin`` says. With
        ``own_deadline`` (an attempt in a pack, whose Celery time limits are the pack's)
        the attempt is stopped at its own ``timeout_s`` (:func:`attempt_deadline`)."""
        request, policy = delivered.request, delivered.policy
        now = time.time()
        cap = self.config.max_deliveries
        if begin.run_status is None:
            log.warning("run %s is not in the store %s; its task is dropped",
                        request.run_id, store.safe_url)
            return "unknown run"
        if begin.finished or begin.another_copy:
            return "duplicate"
        if begin.recorded:
            return self._publish_owed_retry(store, request, policy)
        run_started = delivered.run_started if delivered.run_started is not None else now
        if begin.deliveries > self.config.max_deliveries:
            result = AttemptResult(
                request.run_id, request.job, request.attempt, now, time.time(), False,
                error_type=WorkerLost.__name__, permanent=True,
                error_message=f"attempt {request.attempt} was delivered "
                              f"{begin.deliveries} times and its worker died each time "
                              f"(SHEETOPS_CELERY_MAX_DELIVERIES="
                              f"{self.config.max_deliveries}); not tried again")
            self._record(recorder, request, policy, result, run_started)
            return "poison"
        start = RunStarted(request.run_id, request.job, now) if request.attempt == 1 else None
        if start is not None:  # written now only if the attempt outlasts LATE_START_S
            self.late_start.arm(lambda: store.task_deliveries.write_start(
                request.run_id, request.attempt, cap, _batch_of(store, start)))
        limit_memory(request.memory_mb)
        deadline = (attempt_deadline(request.timeout_s) if own_deadline
                    else contextlib.nullcontext())
        try:
            with deadline:
                result = run_attempt(request, self._throttle)
            result = explain_memory_error(result, request.memory_mb)
        finally:
            limit_memory(0)
            written = start is None or self.late_start.disarm()
        if start is not None and not written:
            recorder.record(start)  # committed with the attempt's end
        if result.error_type == _SOFT_LIMIT:
            result = dataclasses.replace(
                result, error_type=RunTimeout.__name__, timed_out=True,
                error_message=f"attempt ran past timeout_s={request.timeout_s:g}s and was "
                              "stopped")
        return self._record(recorder, request, policy, result, run_started)

    def _throttle(self, spec: RateLimitSpec, job: str) -> float:
        waited = 0.0
        while (delay := self.limiter.wait_time(spec, job)) > 0:
            time.sleep(delay)
            waited += delay
        return waited

    def _record(self, recorder: Recorder, request: AttemptRequest, policy: JobPolicy,
                result: AttemptResult, run_started: float) -> str:
        """Record the attempt, then the run's end or its next attempt (sent after the
        commit, so a retry never runs before its predecessor is recorded)."""
        attempt = AttemptFinished.of(result)
        recorder.record(attempt)
        delay = None if result.ok else policy.delay_after(result.attempt, result.permanent)
        problem = "" if delay is None else self.config.task_problem(request.timeout_s, delay)
        if delay is not None and not problem:
            recorder.flush()
            retry = dataclasses.replace(request, attempt=request.attempt + 1)
            self._send_retry(recorder.store, retry, policy, run_started, delay)
            return "retry"
        status = attempt.status if not problem else RunStatus.FAILED
        values = result.result or {}
        if status is not RunStatus.OK:
            recorder.load()  # consecutive failures as the store has them now
        recorder.record(RunFinished(
            request.run_id, request.job, status, request.attempt, run_started,
            result.finished_at, request.dry_run, int(values.get("records_in", 0)),
            int(values.get("records_out", 0)), int(values.get("records_failed", 0)),
            values, "ConfigError" if problem else result.error_type,
            problem or result.error_message))
        recorder.flush()
        return attempt_status(result).value

    def _publish_owed_retry(self, store: Store, request: AttemptRequest,
                            policy: JobPolicy) -> str:
        """A redelivery of an attempt already recorded: publish its retry when that was
        never marked sent (the worker died, or the broker refused, between the commit and
        the publish), due the backoff after the failed attempt's end; drop it otherwise."""
        owed = store.task_deliveries.retry_owed(request.run_id, request.attempt)
        delay = None if owed is None else policy.delay_after(request.attempt, False)
        if owed is None or delay is None:
            return "duplicate"
        countdown = max(0.0, owed.previous_finished_at + delay - time.time())
        log.warning("attempt %d of run %s is recorded but its retry was never published; "
                    "publishing it (due in %.1fs)", request.attempt, request.run_id,
                    countdown)
        retry = dataclasses.replace(request, attempt=request.attempt + 1)
        self._send_retry(store, retry, policy, owed.run_started_at, countdown)
        return "retry published again"

    def _send_retry(self, store: Store, request: AttemptRequest, policy: JobPolicy,
                    run_started: float | None, countdown: float) -> None:
        """Publish a new copy of the retry ``request``, then mark it sent: a copy sent
        twice (the mark lost) runs once, the first copy to reach the store owning it."""
        if _fault_if_asked(request.run_id):
            return
        copy_id = uuid.uuid4().hex
        self.send_attempt(request, policy, run_started, countdown, copy_id=copy_id)
        store.task_deliveries.mark_sent([(request.run_id, request.attempt, copy_id)])

    def send_pack(self, attempts: Sequence[tuple[AttemptRequest, JobPolicy, str]],
                  producer: Any = None) -> None:
        """Publish first attempts ``(request, policy, copy id)`` as one pack task."""
        self.app.send_task(PACK_TASK,
                           args=[pack_message([attempt_message(r, p, None, c)
                                               for r, p, c in attempts])],
                           producer=producer,
                           **pack_options(self.config, [r for r, _, _ in attempts]))

    def send_attempt(self, request: AttemptRequest, policy: JobPolicy,
                     run_started: float | None, countdown: float | None = None,
                     producer: Any = None, copy_id: str | None = None) -> None:
        """Publish an attempt task (the scheduler's first attempts, a worker's retries)."""
        self.app.send_task(ATTEMPT_TASK,
                           args=[attempt_message(request, policy, run_started, copy_id)],
                           producer=producer, **send_options(self.config, request, countdown))


def _fault_if_asked(run_id: str) -> bool:
    """The test hook of :data:`RETRY_FAULT_ENV`, once per path it names; ``True``: drop
    the publish."""
    asked = os.environ.get(RETRY_FAULT_ENV, "")
    mode, _, path = asked.partition(":")
    if not path or os.path.exists(path):
        return False
    with open(path, "w", encoding="utf-8") as out:
        out.write(run_id)
    if mode == "drop":
        return True
    if mode == "kill":
        threading.Event().wait()
    raise RetryPublishRefused(f"the broker refused the retry of run {run_id} (test hook)")


def _batch_of(store: Store, event: RunStarted) -> Batch:
    """The rows ``event`` writes, as the recorder shapes them."""
    shaping = Recorder(store)
    shaping.record(event)
    return shaping.take()


def build_app(config: CeleryConfig) -> tuple[Any, Worker]:
    """The Celery app with the attempt and pack tasks registered (the scheduler sends
    them, workers run them); :mod:`sheetops.worker` adds the pipelines' stage task for workers."""
    app = make_app(config)
    worker = Worker(config)
    worker.app = app

    @app.task(name=ATTEMPT_TASK, bind=True, max_retries=None, **task_options(config))
    def attempt_task(task: Any, message: str) -> str:
        return guarded(task, config, worker.run_attempt_task, message)

    @app.task(name=PACK_TASK, bind=True, max_retries=None, **task_options(config))
    def pack_task(task: Any, message: str) -> str:
        return guarded(task, config, worker.run_pack_task, message)

    return app, worker


def task_options(config: CeleryConfig) -> dict[str, Any]:
    """The reliability options every sheetops task is registered with."""
    return {"acks_late": config.acks_late,
            "reject_on_worker_lost": config.reject_on_worker_lost}


def guarded(task: Any, config: CeleryConfig, body: Any, message: str) -> Any:
    """Run a task's ``body``; when it fails (the store or the broker unreachable) send the
    task again later instead of letting Celery drop it, and drop only a message no
    version of sheetops can read."""
    try:
        return body(message)
    except wire.WireFormatError as exc:
        log.error("a task that cannot be read was dropped: %s", exc)
        return "unreadable"
    except Exception as exc:
        delay = min(2.0 ** task.request.retries, 60.0, config.redelivery_timeout_s / 4)
        log.warning("task %s failed (%s: %s); sent again in %.0fs", task.request.id,
                    type(exc).__name__, exc, delay)
        raise task.retry(exc=exc, countdown=delay) from None
