"""Pipeline batches on Celery: each stage's batches run as tasks on that stage's own
Celery queue (``<SHEETOPS_CELERY_QUEUE>.stage.<pipeline>.<stage>``), so stages scale on
their own.

The store's durable queues stay the source of truth, so crash safety is the pipelines'
own: a stage task ("work stage S of run R") *claims* batches from the stage's store queue
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and calls
:func:`~sheetops.pipelines.engine.process_claim`, which hands each batch on, splits it
or dead-letters it in one transaction. The Celery message only says "there is work";
losing or duplicating one costs nothing — a worker killed mid-batch leaves the batch
claimed until its lease runs out, and then the next task claims it again.

The pass itself is the pipelines' :class:`~sheetops.pipelines.engine.PipelineRun`,
wrapped: in the attempt task that runs the pipeline job it reads the source, works the
stages with its own threads (so one worker alone finishes a pass) and waits for the
queues to drain. Beside that, one dispatcher keeps a stage task *waiting* on each
stage's Celery queue while that stage has claimable batches: it sends one when the
broker holds none for that queue (a passive queue declare), so a free worker starts at
once and a busy fleet is not flooded with tasks that would find nothing.

A stage task works every stage of its pipeline whose Celery queue its worker consumes
(all of them unless ``sheetops worker --queues`` says otherwise), one thread per stage
as in the pass: a batch goes on through the next stages in the same process, one
thread's commit waits for the disk while another works a batch, and no core idles while
one stage's queue is empty. It ends when nothing is claimable for :data:`LINGER_S`, or
after :data:`MAX_CLAIMS_PER_TASK` claims (a fresh task carries on).

Neither the pass nor a stage task hands batches on in-process (``hand_in_process=False``):
a batch put already leased to one process could be claimed by no other worker (and a
stage task, which ends after its claims, would leave its outputs leased to nobody until
the lease ran out), so every batch goes on its queue claimable by any worker.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from sheetops import wire
from sheetops.context import AttemptRequest, RunContext
from sheetops.executors.celery_config import STAGE_TASK, stage_queue
from sheetops.executors.celery_worker import guarded, task_options
from sheetops.pipelines.engine import (
    EncodedBatches,
    PipelineRun,
    RunReport,
    StageRuntime,
    open_queues,
    process_claim,
)
from sheetops.pipelines.job import use_pass_runner
from sheetops.pipelines.model import Pipeline, get_pipeline
from sheetops.store import ledger
from sheetops.store.queue import QueueDepth

if TYPE_CHECKING:
    from sheetops.store import Store

log = logging.getLogger("sheetops.celery")

#: Batches one stage task claims at most before it hands the rest to a new task (so one
#: task never holds a worker for a whole pass while other work waits).
MAX_CLAIMS_PER_TASK = 20
#: Source batches one transaction puts at most (with the source's position).
SOURCE_BATCHES_PER_PUT = 10
#: How often the pass's dispatcher looks at the stage queues (one query for all).
DISPATCH_POLL_S = 0.05
#: How long a stage task that finds nothing claimable, while batches of its stages (or
#: of the stages before them) are still being worked elsewhere, keeps looking before it
#: ends: the batch another process is about to hand on is taken without a new task.
LINGER_S = 0.1
LINGER_POLL_S = 0.01
#: Stage runners a worker process keeps between stage tasks (one per run in flight).
KEPT_RUNNERS = 8

#: ``send(pipeline, index, generation, request)``: publish one stage task.
SendStage = Callable[[str, int, int, AttemptRequest], None]
#: ``pending(pipeline, index)``: stage tasks waiting on the broker for a free worker.
PendingStage = Callable[[str, int], int]


class CeleryPipelineRun(PipelineRun):
    """A pass whose stage batches run as Celery tasks; see the module's docstring."""

    def __init__(self, pipe: Pipeline, queues: Any, *, send: SendStage,
                 pending: PendingStage, request: AttemptRequest, **options: Any) -> None:
        super().__init__(pipe, queues, hand_in_process=False, **options)
        self._send = send
        self._pending = pending
        self._request = request
        self.tasks_sent = 0
        self._dispatcher: threading.Thread | None = None
        self._dispatch_lock = threading.Lock()

    def _work(self, rt: StageRuntime, index: int, slot: int = 0) -> None:
        """Work the stage here, as the in-process pass does; the first stage thread
        also starts the pass's one dispatcher (:meth:`_dispatch`)."""
        with self._dispatch_lock:
            if self._dispatcher is None:
                self._dispatcher = threading.Thread(
                    target=self._guard, args=(self._dispatch, rt.generation),
                    name=f"{self.job}-dispatch", daemon=True)
                self._dispatcher.start()
        super()._work(rt, index, slot)

    def _read_source(self, cp: ledger.Checkpoint) -> None:
        """Read the source as the pass does, but put up to :data:`SOURCE_BATCHES_PER_PUT`
        batches (as the first queue has room for) in one transaction with the source's
        position: the stages of several workers then never wait for the source's
        commits. Crash-safe the same way: the batches and the position commit
        together."""
        size = self.settings[0].batch_size
        group: list[tuple[list[str], list[Any]]] = []
        records: list[Any] = []
        position, count = cp.position, cp.records
        for record, position in self.source.read(cp.position):
            count += 1
            records.append(record)
            if len(records) >= size:
                group.append((self._source_keys(records, count - len(records) + 1), records))
                records = []
                if len(group) >= self._source_room():
                    if not self._put_group(group, position, count, False):
                        return
                    group = []
        if records:
            group.append((self._source_keys(records, count - len(records) + 1), records))
        self._put_group(group, position, count, True)

    def _source_room(self) -> int:
        """Batches the next source put may hold: the first queue's room, at least 1."""
        waiting = self.depths.waiting(self.names[0])
        return max(1, min(SOURCE_BATCHES_PER_PUT, self._limit(0) - waiting))

    def _put_group(self, group: list[tuple[list[str], list[Any]]], position: Any,
                   count: int, exhausted: bool) -> bool:
        if group and not self._wait_room(0):
            return False
        encoded = EncodedBatches.of([(keys, records, False) for keys, records in group],
                                    self.pipe.key, self.queues.packs)
        with self.lock, self.queues.transaction() as tx:
            if encoded.payloads:
                tx.put(self.names[0], encoded.payloads, keys=encoded.keys)
            ledger.save_position(tx.connection, self.job, position, count, exhausted)
        self.depths.bump(self.names[0], len(encoded.payloads))
        self.changes.notify()
        self._records = count
        return True

    def _dispatch(self, generation: int) -> None:
        """Keep a stage task waiting on each stage's Celery queue while that stage has
        claimable batches (and room downstream): a free worker takes it at once, and
        a busy fleet is not flooded with tasks that would find nothing."""
        while not self.stop.wait(DISPATCH_POLL_S):
            depths = self.queues.depths(self.names)
            for index, name in enumerate(self.names):
                if not _ready(depths, name) or (index + 1 < len(self.names) and not _room(
                        depths, self.names[index + 1], self._limit(index + 1))):
                    continue
                if self._pending(self.pipe.name, index) == 0:
                    self._send(self.pipe.name, index, generation, self._request)
                    self.tasks_sent += 1


def _room(depths: Mapping[str, QueueDepth], name: str, limit: int) -> bool:
    """Whether queue ``name`` holds fewer than ``limit`` batches (its high water)."""
    return (depths[name].waiting if name in depths else 0) < limit


def _ready(depths: Mapping[str, QueueDepth], name: str) -> int:
    return depths[name].ready if name in depths else 0


def run_pass(pipe: Pipeline, store_url: str, *, send: SendStage, pending: PendingStage,
             job: str, run_id: str, dry_run: bool = False,
             overrides: Mapping[str, Mapping[str, Any]] | None = None,
             run_context: Any = None, **options: Any) -> RunReport:
    """A pipeline job's pass with its batches on Celery (a dry run stays in this
    process: its scratch queues are a file no other worker can see)."""
    if dry_run or run_context is None:
        return pipe.run(store_url, job=job, run_id=run_id, dry_run=dry_run,
                        overrides=overrides, run_context=run_context, **options)
    with open_queues(store_url) as queues:
        return CeleryPipelineRun(pipe, queues, send=send, pending=pending,
                                 request=run_context.request, job=job, run_id=run_id,
                                 overrides=overrides, run_context=run_context,
                                 **options).run()


class _Runners:
    """This process's stage runners, one per (store, run, attempt), so a stage
    task does not build the pipeline's runtime (and bind its source) anew each time."""

    def __init__(self) -> None:
        self._kept: collections.OrderedDict[tuple, PipelineRun] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, pipe: Pipeline, store: Store, request: AttemptRequest) -> PipelineRun:
        key = (store.url, pipe.name, request.job, request.run_id, request.attempt)
        with self._lock:
            runner = self._kept.get(key)
            if runner is not None and runner.queues is store.queues:
                self._kept.move_to_end(key)
                return runner
        runner = PipelineRun(pipe, store.queues, job=request.job, run_id=request.run_id,
                             overrides=request.stages, run_context=RunContext(request),
                             params=request.params, hand_in_process=False)
        with self._lock:
            self._kept[key] = runner
            while len(self._kept) > KEPT_RUNNERS:
                self._kept.popitem(last=False)
        return runner


_runners = _Runners()


def work_stage(pipe: Pipeline, store: Store, index: int, generation: int,
               request: AttemptRequest, send: SendStage,
               served: Collection[int] = ()) -> int:
    """The body of a stage task: claim and process batches of stage ``index`` — and of
    the other stages in ``served`` (those whose Celery queues this worker consumes) —
    until, with no batch being worked, none is claimable for :data:`LINGER_S`, or
    :data:`MAX_CLAIMS_PER_TASK` were taken (then a fresh task carries on). Returns the
    batches processed.

    Each stage is worked by its own threads (its ``concurrency``), as in the pass: one
    thread's commit waits for PostgreSQL's disk while another works a batch, a batch
    handed on goes through the next stages in the same process, and no core idles
    while one stage's queue is empty. A batch handed on to a stage outside ``served``
    tells that stage's workers."""
    return _StageTask(_runners.get(pipe, store, request), store.queues, index, generation,
                      request, send, served).run()


class _StageTask:
    """One stage task's threads (see :func:`work_stage`)."""

    def __init__(self, runner: PipelineRun, queues: Any, index: int, generation: int,
                 request: AttemptRequest, send: SendStage, served: Collection[int]) -> None:
        self.runner, self.index, self.generation = runner, index, generation
        self.request, self.send = request, send
        self.stages = sorted({index, *served})
        self.runtimes = {i: runner._runtime(i, generation) for i in self.stages}
        self.queues = {i: queues.queue(rt.queue, max_deliveries=rt.settings.max_deliveries)
                       for i, rt in self.runtimes.items()}
        #: the queues batches for these stages come from (theirs and those before them)
        self.upstream = runner.names[:max(self.stages) + 1]
        self.stop = threading.Event()
        self.budget = MAX_CLAIMS_PER_TASK
        self.done = 0
        #: threads working a batch now, and when the last batch here was done: the
        #: task is idle (and lingers, then ends) only while none is being worked
        self.busy = 0
        self.progress_at = time.monotonic()
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        #: counts batches done here, so a thread waiting for work wakes when a batch
        #: was handed on in this process (others' are found by polling, backing off)
        self._changed = threading.Condition(self._lock)
        self._changes = 0

    def run(self) -> int:
        threads = [threading.Thread(target=self._thread, args=(i,), daemon=True,
                                    name=f"{self.request.job}-stage-{i}-{n}")
                   for i in self.stages
                   for n in range(max(1, self.runtimes[i].settings.concurrency))]
        for thread in threads:
            thread.start()
        try:
            while not self.stop.wait(LINGER_POLL_S):
                with self._lock:
                    spent = self.budget == 0
                    idle = 0.0 if self.busy else time.monotonic() - self.progress_at
                if spent or self.errors or idle > LINGER_S or (
                        idle > 2 * LINGER_POLL_S and not self._upstream_waiting()):
                    break  # a batch still being worked is finished first (join)
        finally:
            self.stop.set()
            with self._changed:
                self._changed.notify_all()
            for thread in threads:
                thread.join()
        if self.errors:
            raise self.errors[0]
        if self.done >= MAX_CLAIMS_PER_TASK:  # more may wait: a fresh task
            self.send(self.runner.pipe.name, self.index, self.generation, self.request)
        return self.done

    def _upstream_waiting(self) -> bool:
        """Whether a batch that could reach these stages is still waiting or claimed."""
        depths = self.runner.depths
        return any(depths.waiting(name) for name in self.upstream)

    def _take(self) -> bool:
        with self._lock:
            if self.budget == 0:
                return False
            self.budget -= 1
            return True

    def _thread(self, index: int) -> None:
        try:
            self._drain(index)
        except BaseException as exc:  # the store or broker failed: the task is retried
            self.errors.append(exc)
            self.stop.set()

    def _wait(self, since: int, timeout: float) -> None:
        """Wait until a batch was done here after ``since`` (or the task stops)."""
        with self._changed:
            self._changed.wait_for(lambda: self._changes != since or self.stop.is_set(),
                                   timeout)

    def _drain(self, index: int) -> None:
        rt, queue, runner = self.runtimes[index], self.queues[index], self.runner
        missed = True  # look (a read) before claiming (a write) only after a miss
        idle = LINGER_POLL_S
        while not self.stop.is_set():
            since = self._changes
            if ((rt.next_queue and not runner._room(index + 1))
                    or (missed and not queue.claimable()) or not self._take()):
                self._wait(since, idle)
                idle = min(idle * 2, LINGER_S)
                continue
            claims = queue.claim(1, consumer=runner.consumer, lease_s=rt.lease_s)
            missed = not claims
            if missed:
                with self._lock:
                    self.budget += 1
                continue
            idle = LINGER_POLL_S
            with self._lock:
                self.busy += 1
            try:
                process_claim(rt, claims[0])
            finally:
                with self._lock:
                    self.busy -= 1
            with self._changed:
                self.done += 1
                self._changes += 1
                self.progress_at = time.monotonic()
                self._changed.notify_all()
            if rt.next_queue and index + 1 not in self.runtimes:
                self.send(runner.pipe.name, index + 1, self.generation, self.request)


class StageTasks:
    """The stage task on one worker's Celery app: sending, running, and the pass runner
    that makes pipeline jobs on this worker hand their batches to stage tasks.

    ``served`` names the Celery queues this worker consumes: a stage task works every
    stage of its pipeline whose queue is among them (``None``: only its own)."""

    def __init__(self, app: Any, worker: Any, served: Collection[str] | None = None) -> None:
        self.app, self.worker = app, worker  # worker: celery_worker.Worker (stores)
        self.queue = worker.config.queue
        self.served = frozenset(served or ())
        self._broker_lock = threading.Lock()
        self._connection: Any = None
        self._channel: Any = None

    def install(self) -> None:
        """Register the task and run this process's pipeline jobs through it."""
        config = self.worker.config

        @self.app.task(name=STAGE_TASK, bind=True, max_retries=None, **task_options(config))
        def stage_task(task: Any, message: str) -> int:
            return guarded(task, config, self.run, message)

        use_pass_runner(self.run_pass)

    def send(self, pipeline: str, index: int, generation: int,
             request: AttemptRequest) -> None:
        stages = get_pipeline(pipeline).stages
        body = wire.dumps({"request": wire.request_to_dict(request), "pipeline": pipeline,
                           "index": index, "generation": generation})
        # the claims' leases bound each batch; the hard limit only stops a hung task,
        # and the task may work any stage its worker serves: the longest timeout counts
        timeout = max(s.settings.merged(request.stages.get(s.name, {})).timeout_s
                      for s in stages)
        self.app.send_task(STAGE_TASK, args=[body],
                           queue=stage_queue(self.queue, pipeline, stages[index].name),
                           time_limit=timeout * MAX_CLAIMS_PER_TASK + 60)

    def pending(self, pipeline: str, index: int) -> int:
        """Stage tasks of stage ``index`` waiting on the broker (not yet taken by a
        worker): a passive declare on one connection kept for it. 0 when the broker has
        no such queue (Redis drops an empty list; AMQP: no worker declared it yet)."""
        name = stage_queue(self.queue, pipeline, get_pipeline(pipeline).stages[index].name)
        with self._broker_lock:
            try:
                if self._channel is None:
                    self._connection = self.app.connection_for_read()
                    self._channel = self._connection.channel()
                return int(self._channel.queue_declare(queue=name, passive=True).message_count)
            except Exception:
                if self.worker.config.transport != "redis":  # AMQP closed the channel
                    self._close_broker()
                return 0

    def _close_broker(self) -> None:
        with contextlib.suppress(Exception):
            self._connection.release()
        self._connection = self._channel = None

    def run(self, message: str) -> int:
        data = wire.loads(message)
        request = wire.request_from_dict(data["request"])
        store, _ = self.worker.store(request.store_url)
        pipe = get_pipeline(data["pipeline"])
        served = [i for i, s in enumerate(pipe.stage_names())
                  if stage_queue(self.queue, pipe.name, s) in self.served]
        return work_stage(pipe, store, int(data["index"]), int(data["generation"]),
                          request, self.send, served)

    def run_pass(self, pipe: Pipeline, store_url: str, **options: Any) -> RunReport:
        return run_pass(pipe, store_url, send=self.send, pending=self.pending, **options)


def stage_queues(queue: str, pipes: Mapping[str, Pipeline]) -> list[str]:
    """The Celery queues of every stage of ``pipes`` (beside the attempts queue)."""
    return [stage_queue(queue, p.name, s) for p in pipes.values() for s in p.stage_names()]
