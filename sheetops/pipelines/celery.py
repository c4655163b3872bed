"""Pipeline batches on Celery: each stage's batches run as tasks on that stage's own
Celery queue (``<SHEETOPS_CELERY_QUEUE>.stage.<pipeline>.<stage>``), so stages scale on their own.

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
queues to drain; beside that, one dispatcher per stage sends stage tasks while that
stage's queue has claimable batches, so every worker on the stage's queue helps.
Neither the pass nor a stage task hands batches on in-process (``hand_in_process=False``):
a batch put already leased to one process could be claimed by no other worker (and a
stage task, which ends after its claims, would leave its outputs leased to nobody until
the lease ran out), so every batch goes on its queue claimable by any worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from sheetops import wire
from sheetops.context import AttemptRequest, RunContext
from sheetops.executors.celery_config import STAGE_TASK, stage_queue
from sheetops.executors.celery_worker import guarded, task_options
from sheetops.pipelines.engine import (
    PipelineRun,
    RunReport,
    StageRuntime,
    open_queues,
    process_claim,
)
from sheetops.pipelines.job import use_pass_runner
from sheetops.pipelines.model import Pipeline, get_pipeline

log = logging.getLogger("sheetops.celery")

#: Batches one stage task claims at most before it hands the rest to a new task (so one
#: task never holds a worker for a whole pass while other stages wait).
MAX_CLAIMS_PER_TASK = 20
#: How often a stage's dispatcher looks at its queue, and how long it lets claimable
#: batches wait for the tasks already sent before it sends more.
DISPATCH_POLL_S = 0.05
RESEND_AFTER_S = 0.5

#: ``send(pipeline, index, generation, request)``: publish one stage task.
SendStage = Callable[[str, int, int, AttemptRequest], None]


class CeleryPipelineRun(PipelineRun):
    """A pass whose stage batches run as Celery tasks; see the module's docstring."""

    def __init__(self, pipe: Pipeline, queues: Any, *, send: SendStage,
                 request: AttemptRequest, **options: Any) -> None:
        super().__init__(pipe, queues, hand_in_process=False, **options)
        self._send = send
        self._request = request
        self._dispatching: set[int] = set()
        self._dispatch_lock = threading.Lock()
        self.tasks_sent = 0

    def _work(self, rt: StageRuntime, index: int) -> None:
        """Work the stage here, as the in-process pass does, and — from its first
        thread — keep stage tasks going while the stage has claimable batches, so the
        workers consuming the stage's Celery queue work it too."""
        with self._dispatch_lock:
            first = index not in self._dispatching
            self._dispatching.add(index)
        if first:
            threading.Thread(target=self._guard, args=(self._dispatch, rt, index),
                             name=f"{self.job}-{rt.stage.name}-dispatch", daemon=True).start()
        super()._work(rt, index)

    def _dispatch(self, rt: StageRuntime, index: int) -> None:
        queue = self.queues.queue(rt.queue, max_deliveries=rt.settings.max_deliveries)
        last_ready, last_sent = 0, 0.0
        while not self.stop.wait(DISPATCH_POLL_S):
            ready = queue.depth().ready
            now = time.monotonic()
            if ready and (ready > last_ready or now - last_sent > RESEND_AFTER_S):
                tasks = min(-(-ready // MAX_CLAIMS_PER_TASK) + 1, ready,
                            max(1, rt.settings.concurrency) * 4)
                for _ in range(tasks):
                    self._send(self.pipe.name, index, rt.generation, self._request)
                self.tasks_sent += tasks
                last_sent = now
            last_ready = ready


def run_pass(pipe: Pipeline, store_url: str, *, send: SendStage, job: str, run_id: str,
             dry_run: bool = False, overrides: Mapping[str, Mapping[str, Any]] | None = None,
             run_context: Any = None, **options: Any) -> RunReport:
    """A pipeline job's pass with its batches on Celery (a dry run stays in this
    process: its scratch queues are a file no other worker can see)."""
    if dry_run or run_context is None:
        return pipe.run(store_url, job=job, run_id=run_id, dry_run=dry_run,
                        overrides=overrides, run_context=run_context, **options)
    with open_queues(store_url) as queues:
        return CeleryPipelineRun(pipe, queues, send=send, request=run_context.request,
                                 job=job, run_id=run_id, overrides=overrides,
                                 run_context=run_context, **options).run()


def work_stage(pipe: Pipeline, store: Any, index: int, generation: int,
               request: AttemptRequest, send: SendStage) -> int:
    """The body of a stage task: claim and process batches of stage ``index`` until its
    queue has none claimable (or :data:`MAX_CLAIMS_PER_TASK`), telling the next stage
    each time a batch was handed on. Returns the batches processed."""
    runner = PipelineRun(pipe, store.queues, job=request.job, run_id=request.run_id,
                         overrides=request.stages, run_context=RunContext(request),
                         params=request.params, hand_in_process=False)
    rt = runner._runtime(index, generation)
    queue = store.queues.queue(rt.queue, max_deliveries=rt.settings.max_deliveries)
    done = 0
    while done < MAX_CLAIMS_PER_TASK:
        if rt.next_queue and not runner._room(index + 1):
            break  # backpressure: the dispatcher sends a task again when there is room
        claims = queue.claim(1, consumer=runner.consumer, lease_s=rt.lease_s)
        if not claims:
            break
        process_claim(rt, claims[0])
        done += 1
        runner.depths.expire()
        if rt.next_queue:
            send(pipe.name, index + 1, generation, request)
    if done == MAX_CLAIMS_PER_TASK:
        send(pipe.name, index, generation, request)  # more may wait: a fresh task
    return done


class StageTasks:
    """The stage task on one worker's Celery app: sending, running, and the pass runner
    that makes pipeline jobs on this worker hand their batches to stage tasks."""

    def __init__(self, app: Any, worker: Any) -> None:
        self.app, self.worker = app, worker  # worker: celery_worker.Worker (stores)
        self.queue = worker.config.queue

    def install(self) -> None:
        """Register the task and run this process's pipeline jobs through it."""
        config = self.worker.config

        @self.app.task(name=STAGE_TASK, bind=True, max_retries=None, **task_options(config))
        def stage_task(task: Any, message: str) -> int:
            return guarded(task, config, self.run, message)

        use_pass_runner(self.run_pass)

    def send(self, pipeline: str, index: int, generation: int,
             request: AttemptRequest) -> None:
        stage = get_pipeline(pipeline).stages[index]
        body = wire.dumps({"request": wire.request_to_dict(request), "pipeline": pipeline,
                           "index": index, "generation": generation})
        timeout = stage.settings.merged(request.stages.get(stage.name, {})).timeout_s
        # the claims' leases bound each batch; the hard limit only stops a hung task
        self.app.send_task(STAGE_TASK, args=[body],
                           queue=stage_queue(self.queue, pipeline, stage.name),
                           time_limit=timeout * MAX_CLAIMS_PER_TASK + 60)

    def run(self, message: str) -> int:
        data = wire.loads(message)
        request = wire.request_from_dict(data["request"])
        store, _ = self.worker.store(request.store_url)
        return work_stage(get_pipeline(data["pipeline"]), store, int(data["index"]),
                          int(data["generation"]), request, self.send)

    def run_pass(self, pipe: Pipeline, store_url: str, **options: Any) -> RunReport:
        return run_pass(pipe, store_url, send=self.send, **options)


def stage_queues(queue: str, pipes: Mapping[str, Pipeline]) -> list[str]:
    """The Celery queues of every stage of ``pipes`` (beside the attempts queue)."""
    return [stage_queue(queue, p.name, s) for p in pipes.values() for s in p.stage_names()]
