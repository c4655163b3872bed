"""Running a pipeline: a source thread and each stage's worker threads, talking only
through durable queues (``<job>.<stage>``) in the store.

* The source reads records in batches of the first stage's ``batch_size`` and puts each
  batch as one queue item, saving the source's position in the same transaction.
* A stage worker claims one item (a batch), calls the stage, and in one
  ``queues.transaction()`` puts the output on the next stage's queue, acks the batch and
  adds to the stage's counts: a hand-off is exactly once, whatever moment the process
  dies at. :func:`process_claim` does one claimed batch and is a plain function, so
  another executor (Celery) can call it as a task.
* A batch that fails is retried with backoff; one that keeps failing is split in two,
  and the halves go back on the queue, down to single records that become dead letters
  while the good ones flow on. A batch delivered again after its worker died (its lease
  expired) is split at once, so a record that kills its worker ends alone and the
  queue dead-letters it after ``max_deliveries``.
* Backpressure: a stage (or the source) claims or reads only while the queue it feeds
  holds fewer records than that queue's ``high_water``, so memory and disk stay flat.
* The run ends when the source is read and every queue is empty; the pass is then
  finished, and the next run reads the source anew. A run killed before resumes the
  same pass.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import logging
import multiprocessing
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from sheetops.client_context import carry
from sheetops.errors import PermanentError
from sheetops.pipelines import batch as batches
from sheetops.pipelines import working
from sheetops.pipelines.batch import Keyed
from sheetops.pipelines.context import StageContext
from sheetops.pipelines.model import Pipeline, PipelineError, Stage, StageSettings
from sheetops.pipelines.processes import (
    ProcessWriterLock,
    RunBell,
    StageProcesses,
    check_rate_limits,
    plan,
)
from sheetops.pipelines.sources import batches_of
from sheetops.pipelines.throttle import Throttle
from sheetops.ratelimit import configured_storage
from sheetops.retry import backoff_wait
from sheetops.store import ledger
from sheetops.store.queue import Claim, ErrorInfo, StaleClaim, lease_for
from sheetops.store.queue_sql import Queues

if TYPE_CHECKING:
    from sheetops.store import Store

log = logging.getLogger("sheetops.pipelines")

#: Dead letters a run reports (Errors tab) at most.
REPORTED_DEAD_LETTERS = 100
POLL_S = 0.01
#: Batches per queue kept decoded for the stage that takes them next (see _Handed).
DECODED_AHEAD = 1
IDLE_MAX_S = 0.2
#: The same for a run with stage processes: their puts and acks wake no thread of
#: another process, so its threads look again sooner (a look is one small query).
FORKED_IDLE_MAX_S = 0.01
#: Seconds between a run's progress reports (and its looks at its stage processes).
PROGRESS_S = 0.05
#: Seconds a producer waits for its next stage to take a batch kept decoded before it
#: hands on the next one as JSON (see PipelineRun._wait_room).
HAND_WAIT_S = 0.1


@dataclass
class RunReport:
    """What one run of a pipeline did (of its current pass over the source)."""

    pipeline: str
    job: str
    generation: int
    finished: bool
    records_read: int
    stages: dict[str, dict[str, int]]
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def records_out(self) -> int:
        last = list(self.stages.values())[-1:] or [{}]
        return int(last[0].get("records_out", 0))

    @property
    def dead(self) -> int:
        return sum(s.get("dead_letters", 0) for s in self.stages.values())

    def result(self) -> dict[str, Any]:
        """The run's result JSON: the Runs tab's counts plus one entry per stage."""
        result: dict[str, Any] = {
            "records_in": self.records_read, "records_out": self.records_out,
            "records_failed": self.dead, "dead_letters": self.dead,
            "pass": self.generation, "stages": self.stages,
            "stage_order": list(self.stages)}  # a list: the store keeps JSON keys sorted
        if self.dry_run:
            result["dry_run"] = True
        return result


class _Depths:
    """Waiting items per queue, read at most every ``ttl`` seconds (one query)."""

    def __init__(self, queues: Queues, names: Sequence[str], ttl: float = 0.02) -> None:
        self.queues, self.names, self.ttl = queues, list(names), ttl
        self._at = 0.0
        self._waiting: dict[str, int] = {}
        self._lock = threading.Lock()

    def waiting(self, name: str, fresh: bool = False) -> int:
        with self._lock:
            now = time.monotonic()
            if fresh or now - self._at > self.ttl:
                depths = self.queues.depths(self.names)
                self._waiting = {n: d.waiting for n, d in depths.items()}
                self._at = now
            return self._waiting.get(name, 0)

    def total(self) -> int:
        self.waiting(self.names[0], fresh=True)
        return sum(self._waiting.values())

    def expire(self) -> None:
        """Read afresh next time (another thread acked something)."""
        with self._lock:
            self._at = 0.0

    def bump(self, name: str, items: int) -> None:
        """Count a put of ours before the next read."""
        with self._lock:
            self._waiting[name] = self._waiting.get(name, 0) + items


class _Alone:
    """Batches delivered before to a process that died with them (a delivery above 1)
    are worked alone in their process: no other batch starts while one is worked, and
    it waits for those being worked to end. If the process dies again, only it was
    being worked, so only it is blamed (:mod:`sheetops.pipelines.working`). Otherwise a
    record that kills its process would have the batches worked beside it blamed at
    every crash, and after ``max_deliveries`` of them dead-lettered, though nothing
    was wrong with them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._working = 0
        self._alone = False
        self._waiting = 0  # batches waiting to work alone: no other batch starts

    @contextlib.contextmanager
    def batch(self, alone: bool) -> Iterator[None]:
        with self._cond:
            if alone:
                self._waiting += 1
                self._cond.wait_for(lambda: not (self._working or self._alone))
                self._waiting -= 1
                self._alone = True
            else:
                self._cond.wait_for(lambda: not (self._alone or self._waiting))
                self._working += 1
        try:
            yield
        finally:
            with self._cond:
                if alone:
                    self._alone = False
                else:
                    self._working -= 1
                self._cond.notify_all()


class _Changes:
    """Wakes this process's waiting threads when one of them put or acked an item, so
    a hand-off inside one process costs no polling delay; items from other processes
    (or whose lease expired) are still found by polling at most every ``IDLE_MAX_S``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0

    def mark(self) -> int:
        with self._cond:
            return self._count

    def notify(self) -> None:
        with self._cond:
            self._count += 1
            self._cond.notify_all()

    def wait(self, since: int, timeout: float) -> None:
        """Wait until something changed after ``mark()`` returned ``since``."""
        with self._cond:
            self._cond.wait_for(lambda: self._count != since, timeout)


#: ``(keys, records, split)``; keys ``None``: each record's key is the pipeline's key
#: field (see :func:`_derivable`), derived only where needed (:func:`_keys`)
Batch = tuple[list[str] | None, list[Any], bool]


def _derivable(pipe: Pipeline, records: list[Any]) -> bool:
    """Whether the pipeline's key is a field every record holds (not ``None`` or
    empty): then the records' keys need not be built or stored, only derived where
    they are needed. ``False`` sends the batch down the careful path
    (``Pipeline.key_of`` per record), which keys it or explains why not.

    It runs on every batch of every stage, so the check is made in C loops: numbers
    (``sum`` takes them all) are never empty; texts (``join`` takes them all) are
    empty only when falsy; anything else is compared with ``None`` and ``""``."""
    if not isinstance(pipe.key, str):
        return False
    getter = itemgetter(pipe.key)
    try:
        sum(map(getter, records))  # numbers, the usual keys: no list built
        return True
    except TypeError:
        pass
    except Exception:  # a record the careful path explains
        return False
    try:
        values = list(map(getter, records))
    except Exception:
        return False
    try:
        "".join(values)
    except TypeError:
        return not (None in values or "" in values)
    return all(values)


def _keys(pipe: Pipeline, keys: list[str] | None, records: list[Any]) -> list[str]:
    """The batch's keys, derived from the key field when not given."""
    return keys if keys is not None else batches.field_keys(pipe.key, records)


@dataclass(frozen=True)
class EncodedBatches:
    """Batches as queue payloads and item keys, encoded before the write lock is
    taken (encoding is the costly part, and needs no lock)."""

    payloads: list[Any]
    keys: list[str]

    @classmethod
    def of(cls, items: Sequence[Batch], field: Any, packed: bool = False
           ) -> EncodedBatches:
        """``packed``: compressed, for a queue that takes it (``Queues.packs``)."""
        return cls([batches.encode(k, r, split=s, field=field, packed=packed)
                    for k, r, s in items],
                   [batches.item_key(k if k is not None else batches.end_keys(field, r))
                    for k, r, _ in items])


def _put(rt_handed: _Handed | None, tx: Any, queue: str, items: Sequence[Batch],
         encoded: EncodedBatches) -> Any:
    """Put ``items`` on ``queue``: leased to this process when it keeps them
    (``rt_handed``), else plainly. Returns what :meth:`_Handed.committed` takes."""
    if rt_handed is not None and queue in rt_handed.leases:
        return rt_handed.put(tx, queue, items, encoded)
    tx.put(queue, encoded.payloads, keys=encoded.keys)
    return None


class _Handed:
    """Batches this process hands to its own next stage: put already leased to this
    process (``put_claimed``) and kept decoded, so a hand-off inside one process costs
    one write — no claim transaction, no decoding of what was just encoded. The
    committed item stays the truth: if the process dies, the lease expires and the
    batch is claimed and decoded from the queue like any other.

    ``ready[queue]`` holds the leased claims no stage thread has taken yet; what is
    left when a run stops is released (:meth:`QueueTransaction.release`). Memory stays
    flat: at most ``decoded[queue]`` batches per queue are kept decoded (records as
    objects cost several times their JSON); the others wait as their claim's JSON text
    and are decoded when taken. Producers wait a moment for room among the decoded
    (``PipelineRun._wait_room``), so a stage that keeps up never decodes."""

    def __init__(self, consumer: str, leases: Mapping[str, float],
                 decoded: Mapping[str, int]) -> None:
        self.consumer = consumer
        self.leases = dict(leases)
        self.decoded = dict(decoded)
        self.ready: dict[str, collections.deque[Claim]] = {
            name: collections.deque() for name in leases}
        self._items: dict[int, tuple[str, Batch]] = {}
        self._kept = dict.fromkeys(leases, 0)
        self._lock = threading.Lock()
        #: called when a kept batch is taken (wakes a producer waiting for room)
        self.on_take: Callable[[], None] = lambda: None

    def put(self, tx: Any, queue: str, items: Sequence[Batch], encoded: EncodedBatches
            ) -> tuple[str, list[Claim], Sequence[Batch]]:
        """Put ``items`` (``encoded``) on ``queue`` leased to this process, inside
        ``tx``; hand the result to :meth:`committed` once ``tx`` has committed."""
        claims = tx.put_claimed(queue, encoded.payloads, keys=encoded.keys,
                                consumer=self.consumer, lease_s=self.leases[queue])
        return queue, claims, items

    def committed(self, put: tuple[str, list[Claim], Sequence[Batch]]) -> None:
        """The batches of a :meth:`put` whose transaction committed are ready."""
        queue, claims, items = put
        waiting = []
        with self._lock:
            for claim, item in zip(claims, items, strict=True):
                if self._kept[queue] < self.decoded[queue]:
                    self._items[claim.id] = (queue, item)
                    self._kept[queue] += 1
                    claim = replace(claim, payload=None)  # the decoded batch is enough
                waiting.append(claim)
        self.ready[queue].extend(waiting)

    def take(self, item_id: int) -> Batch | None:
        with self._lock:
            kept = self._items.pop(item_id, None)
            if kept is None:
                return None
            self._kept[kept[0]] -= 1
        self.on_take()
        return kept[1]

    def has_room(self, queue: str) -> bool:
        """Whether a batch put on ``queue`` now would be kept decoded. The stages (and
        the source) of this process wait for it before making the next batch, so
        their hand-offs stay decoded instead of being decoded again from their JSON.
        A queue whose stage works in another process (``processes``) is never kept."""
        return queue not in self._kept or self._kept[queue] < self.decoded[queue]

    def leftover(self) -> list[Claim]:
        """The leased claims no thread took (to release when the run stops)."""
        left = [c for ready in self.ready.values() for c in ready]
        for ready in self.ready.values():
            ready.clear()
        with self._lock:
            self._items.clear()
            self._kept = dict.fromkeys(self._kept, 0)
        return left


@dataclass
class StageRuntime:
    """Everything :func:`process_claim` needs to process one batch of one stage."""

    pipe: Pipeline
    stage: Stage
    settings: StageSettings
    queues: Queues
    job: str
    queue: str
    next_queue: str | None
    next_batch_size: int
    generation: int
    run_id: str = ""
    dry_run: bool = False
    lease_s: float = 70.0
    throttle: Throttle | None = None
    run_context: Any = None
    stop: threading.Event = field(default_factory=threading.Event)
    #: serialises this process's writers on SQLite (see :func:`writer_lock`)
    lock: Any = field(default_factory=contextlib.nullcontext)
    params: dict[str, Any] = field(default_factory=dict)
    #: told each record's fate inside the transaction that decides it (a sheet-tab
    #: source writing outcomes back to its rows; see :func:`outcome_hook`)
    outcomes: Any = None
    #: batches handed on in this process, still decoded (see :class:`_Handed`)
    handed: _Handed | None = None
    #: whether the last claim found nothing: only then is a read made before the next
    #: claim (a write), so a stage that keeps finding work pays one statement a claim
    missed: bool = True

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        with self.lock, self.queues.transaction() as tx:
            yield tx

    def context(self, keys: Sequence[str], connection: Any = None) -> StageContext:
        return StageContext(self, list(keys), connection)


def _split(rt: StageRuntime, claim: Claim, keys: list[str], records: list[Any]) -> None:
    """Put the batch back as two halves and ack it, in one transaction."""
    middle = len(records) // 2
    halves = [(keys[:middle], records[:middle], True), (keys[middle:], records[middle:], True)]
    encoded = EncodedBatches.of(halves, rt.pipe.key, rt.queues.packs)
    with rt.transaction() as tx:
        put = _put(rt.handed, tx, rt.queue, halves, encoded)
        tx.ack([claim])
    if put is not None:
        rt.handed.committed(put)


def _keyed(rt: StageRuntime, produced: Any, keys: list[str] | None, records: list[Any]
           ) -> tuple[list[str] | None, list[Any]]:
    """The stage's output as ``(keys, records)``; ``None`` passes the input on."""
    if produced is None:
        return keys, records
    if not isinstance(produced, list):
        produced = list(produced)
    if _derivable(rt.pipe, produced):
        return None, produced
    out_keys, out = [], []
    for record in produced:
        if isinstance(record, Keyed):
            out_keys.append(str(record.key))
            out.append(record.record)
        else:
            out_keys.append(rt.pipe.key_of(record))
            out.append(record)
    return out_keys, out


def _call(rt: StageRuntime, keys: list[str] | None, records: list[Any]
          ) -> tuple[list[str] | None, list[Any]]:
    """Call a non-SQL stage on one batch (an idempotent sink marks each record it
    yields in the ledger at once, so a crash repeats at most that one record)."""
    stage = rt.stage
    if stage.sink and rt.dry_run:
        return keys, records
    args = ((records, rt.context(_keys(rt.pipe, keys, records))) if stage.takes_ctx
            else (records,))
    produced = stage.fn(*args)
    if not (stage.sink and stage.idempotent) or produced is None or isinstance(
            produced, list | tuple):
        return _keyed(rt, produced, keys, records)
    out_keys, out = [], []
    for record in produced:  # a generator: each yielded record is delivered
        key = str(record.key) if isinstance(record, Keyed) else rt.pipe.key_of(record)
        with rt.transaction() as tx:
            ledger.mark_done(tx.connection, rt.job, stage.name, [key])
        out_keys.append(key)
        out.append(record)
    return out_keys, out


Output = tuple[list[str] | None, list[Any]]


def _hand_off(rt: StageRuntime, claim: Claim, records_in: int, output: Output,
              keys: list[str] | None, records: list[Any]) -> None:
    """Put the ``output`` (keys, records) on the next queue, ack the batch and count it,
    in one transaction; a SQL sink writes in the same transaction."""
    stage = rt.stage
    pipe = rt.pipe
    sql = stage.sql and not rt.dry_run and bool(records)

    def chunked(output: Output) -> list[Batch]:
        if not rt.next_queue:
            return []
        out_keys, out = output
        size = rt.next_batch_size
        return [(None if out_keys is None else out_keys[at:at + size], out[at:at + size],
                 False) for at in range(0, len(out), size)]

    items = [] if sql else chunked(output)
    encoded = EncodedBatches.of(items, pipe.key, rt.queues.packs)
    put = None
    with rt.transaction() as tx:
        conn = tx.connection
        if not (stage.sink or stage.sql):  # only more work: docs/pipelines.md, disk waits
            tx.without_flush()
        if sql:
            args = ((records, rt.context(_keys(pipe, keys, records), conn))
                    if stage.takes_ctx else (records,))
            output = _keyed(rt, stage.fn(*args), keys, records)
            items = chunked(output)
            encoded = EncodedBatches.of(items, pipe.key, rt.queues.packs)
        if items:
            put = _put(rt.handed, tx, rt.next_queue, items, encoded)
        if stage.sink and stage.idempotent and not rt.dry_run:
            ledger.mark_done(conn, rt.job, stage.name, _keys(pipe, *output))
        if rt.outcomes is not None:
            rt.outcomes.handed_off(conn, stage.name, stage.sink, _keys(pipe, keys, records),
                                   _keys(pipe, *output))
        tx.ack([claim])
        ledger.add_counts(conn, rt.job, rt.generation, stage.name, records_in=records_in,
                          records_out=len(output[1]))
    if put is not None:
        rt.handed.committed(put)


def _dead_letter(rt: StageRuntime, claim: Claim, error: BaseException, attempts: int,
                 key: str) -> None:
    """Dead-letter ``claim``, a batch of the one record ``key``."""
    info = ErrorInfo.of(error)
    info = ErrorInfo(info.type, f"{info.message} (stage {rt.stage.name}, {attempts} "
                     f"attempt{'s' if attempts != 1 else ''})", info.traceback[-8000:])
    with rt.transaction() as tx:
        tx.dead_letter(claim, info, per_key=True)  # a record still bad on a later pass
        if rt.outcomes is not None:
            rt.outcomes.dead(tx.connection, rt.stage.name, key, info)
        ledger.add_counts(tx.connection, rt.job, rt.generation, rt.stage.name,
                          records_in=1, records_failed=1, dead_letters=1)


def process_claim(rt: StageRuntime, claim: Claim) -> None:
    """Process one claimed batch of ``rt``'s stage to its end: handed on, split, or a
    dead letter. Never raises for a failure of the stage function; a lease lost on the
    way (``StaleClaim``) drops this delivery, since the batch is someone else's now."""
    kept = rt.handed.take(claim.id) if rt.handed is not None else None  # decoded already
    keys, records, split = (kept if kept is not None
                            else batches.decode_batch(claim.payload, rt.pipe.key))
    records_in = len(records)
    try:
        if claim.deliveries > 1 and len(records) > 1:
            # an earlier delivery's worker died on this batch: isolate the culprit
            _split(rt, claim, _keys(rt.pipe, keys, records), records)
            return
        if rt.stage.sink and rt.stage.idempotent and not rt.dry_run:
            keys = _keys(rt.pipe, keys, records)
            with rt.queues.engine.connect() as conn:  # a read: no write lock
                done = ledger.done_keys(conn, rt.job, rt.stage.name, keys)
            if done and rt.outcomes is not None:
                with rt.transaction() as tx:
                    rt.outcomes.already_done(tx.connection, sorted(done))
            if done:
                kept = [(k, r) for k, r in zip(keys, records, strict=True) if k not in done]
                keys, records = [k for k, _ in kept], [r for _, r in kept]
        retries = 0 if split else rt.settings.retries
        wait = backoff_wait(rt.settings.backoff_initial_s, rt.settings.backoff_max_s)
        attempt = 0
        while True:
            attempt += 1
            try:
                if rt.throttle is not None:
                    rt.throttle.acquire(len(records), rt.stop)
                output = (([], []) if not records or (rt.stage.sql and not rt.dry_run)
                          else _call(rt, keys, records))
                _hand_off(rt, claim, records_in, output, keys, records)
                return
            except StaleClaim:
                raise
            except Exception as exc:
                if attempt <= retries:
                    delay = float(wait(_State(attempt)))
                    log.info("stage %s: batch of %d failed (%s: %s); retry %d in %.2fs",
                             rt.stage.name, len(records), type(exc).__name__, exc,
                             attempt, delay)
                    claim = rt.queues.queue(rt.queue).extend([claim], rt.lease_s + delay)[0]
                    if rt.stop.wait(delay):
                        return
                    continue
                keys = _keys(rt.pipe, keys, records)
                if len(records) > 1:
                    _split(rt, claim, keys, records)
                else:
                    _dead_letter(rt, claim, exc, attempt, keys[0])
                return
    except StaleClaim:
        log.warning("stage %s: the lease on a batch of %d ran out (timeout_s %.0f); it "
                    "is processed again", rt.stage.name, len(records), rt.settings.timeout_s)


class _State:
    """Just enough of tenacity's RetryCallState for a wait strategy."""

    def __init__(self, attempt: int) -> None:
        self.attempt_number = attempt


class PipelineRun:
    """One run of a pipeline in this process: source and stage threads until drained.

    ``hand_in_process`` (the default) hands each batch to this process's next stage
    already leased (:class:`_Handed`), and forks the processes of stages set to
    ``processes`` (:mod:`sheetops.pipelines.processes`; not in a dry run, whose effects
    are watched in this process); a run whose stages other processes work too (the
    Celery tier) passes ``False``, so every batch it puts is claimable by any of them."""

    def __init__(self, pipe: Pipeline, queues: Queues, *, job: str, run_id: str,
                 dry_run: bool = False, overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 lease_grace_s: float | None = None, drain_only: bool = False,
                 run_context: Any = None, progress: Callable[[RunReport], None] | None = None,
                 params: Mapping[str, Any] | None = None, hand_in_process: bool = True
                 ) -> None:
        pipe.check()
        self.pipe, self.queues, self.job, self.run_id = pipe, queues, job, run_id
        self.dry_run, self.drain_only, self.progress = dry_run, drain_only, progress
        overrides = overrides or {}
        self.settings = [s.settings.merged(overrides.get(s.name, {})) for s in pipe.stages]
        self.names = pipe.queue_names(job)
        for name, settings in zip(self.names, self.settings, strict=True):
            queues.queue(name, max_deliveries=settings.max_deliveries)
        self.grace = lease_grace_s
        self.hand_in_process = hand_in_process
        #: the stage indexes each forked process works (none: every stage works here)
        self.forks = (plan(self.settings) if hand_in_process and not dry_run
                      and _forkable(queues) else [])
        if self.forks:
            check_rate_limits(pipe.stage_names(), self.settings,
                              lambda: not configured_storage().startswith("memory"))
        #: the source is read in the first stage process when the first stage is forked:
        #: its batches then reach that stage decoded, with no process hop between
        self.source_forked = bool(self.forks) and 0 in self.forks[0]
        #: several processes work the first stage: the source keeps a batch in its own
        #: process only while its stage there has room for it, and puts the others for
        #: whichever process claims them first (see :meth:`_put_source`)
        self.share_source = self.source_forked and self.settings[0].processes > 1
        #: set (shared memory) once a stage process has read the source to its end
        self._source_read = multiprocessing.RawValue("b", 0) if self.source_forked else None
        #: wakes the run's main loop to look for its end: set in the run's process,
        #: rung through :attr:`_run_bell` (a pipe) in a stage process (:attr:`_ring_run`)
        self._bell = threading.Event()
        self._run_bell: RunBell | None = None
        self._ring_run: Callable[[], None] = self._bell.set
        self.idle_max = FORKED_IDLE_MAX_S if self.forks else IDLE_MAX_S
        self.local = [i for i in range(len(self.names))
                      if not self.forks or not self.settings[i].processes]
        self._reset(self.local, writer_lock(queues, shared=bool(self.forks)))
        self.run_context = run_context
        self.params = dict(params if params is not None
                           else getattr(run_context, "params", None) or {})
        self._records = 0
        #: the batch each of this process's threads works (see sheetops.pipelines.working)
        self._working: working.WorkingFile | None = None
        self._folder = working.folder_for(str(queues.engine.url))
        self._files = 0
        self.source, self.outcomes = outcome_hook(pipe, queues, job, self.params, dry_run,
                                                  self.names, drain_only)

    def _reset(self, indexes: Sequence[int], lock: Any) -> None:
        """This process's own state, working the stages ``indexes`` (a forked process
        makes its own)."""
        self.stop = threading.Event()
        self.changes = _Changes()
        self.alone = _Alone()
        self.lock = lock
        self.depths = _Depths(self.queues, self.names)
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{self.run_id}"
        self._errors: list[BaseException] = []
        local = [(self.names[i], self.settings[i]) for i in indexes]
        self.handed = _Handed(
            self.consumer, {name: self._lease(settings) for name, settings in local},
            {name: DECODED_AHEAD + settings.concurrency for name, settings in local}
        ) if self.hand_in_process else None
        if self.handed is not None:
            self.handed.on_take = self.changes.notify

    def _lease(self, settings: StageSettings) -> float:
        return (lease_for(settings.timeout_s) if self.grace is None
                else lease_for(settings.timeout_s, self.grace))

    def _runtime(self, index: int, generation: int) -> StageRuntime:
        settings = self.settings[index]
        last = index == len(self.names) - 1
        return StageRuntime(
            self.pipe, self.pipe.stages[index], settings, self.queues, self.job,
            self.names[index], None if last else self.names[index + 1],
            1 if last else self.settings[index + 1].batch_size, generation, self.run_id,
            self.dry_run, self._lease(settings),
            Throttle(settings.rate_limit, f"{self.job}.{self.pipe.stages[index].name}",
                     client=getattr(getattr(self.run_context, "request", None), "client", ""))
            if settings.rate_limit else None, self.run_context, self.stop, self.lock,
            self.params, self.outcomes, self.handed)

    def _limit(self, index: int) -> int:
        """Queue ``index``'s high-water mark in batches."""
        settings = self.settings[index]
        return max(1, -(-settings.high_water_records // settings.batch_size))

    def _room(self, index: int) -> bool:
        """Whether queue ``index`` is below its high-water mark."""
        return self.depths.waiting(self.names[index]) < self._limit(index)

    def _wait_room(self, index: int) -> bool:
        """Wait until queue ``index`` is below its high-water mark. Inside this process,
        wait first (up to ``HAND_WAIT_S``) for its stage to take enough of the batches
        handed to it that the next one stays decoded (:meth:`_Handed.has_room`): a
        stage that keeps up gets every batch decoded; one that is stuck still gets its
        queue filled to the mark, the batches beyond kept as their JSON."""
        idle = POLL_S
        name = self.names[index]
        decoded_by = time.monotonic() + (0.0 if index == 0 and self.share_source
                                         else HAND_WAIT_S)
        while True:
            mark = self.changes.mark()
            decoded = (self.handed is None or self.handed.has_room(name)
                       or time.monotonic() >= decoded_by)
            if decoded and self._room(index):
                return True
            self.changes.wait(mark, idle if decoded else
                              max(0.0, min(idle, decoded_by - time.monotonic())))
            if self.stop.is_set():
                return False
            if decoded:
                self.depths.expire()
                idle = min(idle * 2, self.idle_max)

    def _close_bell(self) -> None:
        if self._run_bell is not None:
            self._run_bell.close()
            self._run_bell = None

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:
            log.exception("pipeline %s: %s stopped", self.job, getattr(fn, "__name__", fn))
            self._errors.append(exc)
            self.stop.set()
            self.changes.notify()
            self._ring_run()

    def _source_keys(self, records: list[Any], first: int) -> list[str] | None:
        """Keys of a batch read from the source, whose first record is the source's
        ``first`` (counting from 1): ``None`` when every record holds the key field
        (derived where needed); a record without a key is keyed by its number."""
        if _derivable(self.pipe, records):
            return None
        keys = []
        for number, record in enumerate(records, first):
            try:
                keys.append(self.pipe.key_of(record))
            except batches.RecordError:
                keys.append(f"@{number}")  # the source's own order keys it
        return keys

    def _read_source(self, cp: ledger.Checkpoint) -> None:
        position, count = cp.position, cp.records
        for records, position in batches_of(self.source, cp.position,
                                            self.settings[0].batch_size):
            count += len(records)
            if not self._put_source(self._source_keys(records, count - len(records) + 1),
                                    records, position, count, False):
                return
        self._put_source([], [], position, count, True)

    def _put_source(self, keys: list[str] | None, records: list[Any], position: Any,
                    count: int, exhausted: bool) -> bool:
        if records and not self._wait_room(0):
            return False
        items = [(keys, records, False)] if records else []
        encoded = EncodedBatches.of(items, self.pipe.key, self.queues.packs)
        put = None
        keep = self.handed if not self.share_source or (
            self.handed is not None and self.handed.has_room(self.names[0])) else None
        with self.lock, self.queues.transaction() as tx:
            if items:
                put = _put(keep, tx, self.names[0], items, encoded)
            ledger.save_position(tx.connection, self.job, position, count, exhausted)
        if put is not None:
            self.handed.committed(put)
        if exhausted:
            if self._source_read is not None:
                self._source_read.value = 1
            self._ring_run()
        self.depths.bump(self.names[0], 1 if records else 0)
        self.changes.notify()
        self._records = count
        return True

    def _release_dead(self, pid: int, blamed: Sequence[int]) -> None:
        """Give back what the dead stage process ``pid`` held (see
        :class:`~sheetops.pipelines.processes.StageProcesses`)."""
        self._release_consumer(f"{socket.gethostname()}:{pid}:{self.run_id}", blamed)

    def _release_consumer(self, consumer: str, blamed: Sequence[int]) -> None:
        """Give back what the dead process ``consumer`` held, only ``blamed`` keeping
        its delivery (see :mod:`sheetops.pipelines.working`)."""
        with self.lock, self.queues.transaction() as tx:
            tx.release_consumer(consumer, blamed)
        self.depths.expire()

    def _working_file(self, threads: int) -> working.WorkingFile:
        """A new working file of this run (for its own threads or a stage process)."""
        self._files += 1
        return working.WorkingFile(self._folder, f"{self.run_id}-{self._files}", threads)

    def _work(self, rt: StageRuntime, index: int, slot: int = 0) -> None:
        queue = self.queues.queue(rt.queue, max_deliveries=rt.settings.max_deliveries)
        idle = POLL_S
        while not self.stop.is_set():
            if rt.next_queue and not self._wait_room(index + 1):
                return
            mark = self.changes.mark()
            claim = self._next_claim(rt, queue)
            if claim is None:
                self.changes.wait(mark, idle)
                idle = min(idle * 2, self.idle_max)
                continue
            idle = POLL_S
            self._process(rt, claim, slot)

    def _work_in_turn(self, rts: Sequence[StageRuntime], indexes: Sequence[int]) -> None:
        """One thread working the stages ``indexes`` of this process in turn, the
        deepest batch ready first: a batch is carried through this process's stages
        by the thread that took it, each hand-off committed as always (see
        :meth:`_forked_threads`)."""
        queues = [self.queues.queue(rt.queue, max_deliveries=rt.settings.max_deliveries)
                  for rt in rts]
        looked = [0.0] * len(rts)
        idle = POLL_S
        while not self.stop.is_set():
            mark = self.changes.mark()
            claim = None
            for j in reversed(range(len(rts))):
                rt = rts[j]
                if rt.next_queue and not self._room(indexes[j] + 1):
                    continue
                now = time.monotonic()
                # a queue that had nothing is looked at again after POLL_S: batches of
                # this process come through its hand-offs, not the look (a read)
                look = not rt.missed or now - looked[j] >= POLL_S
                if look:
                    looked[j] = now
                claim = self._next_claim(rt, queues[j], look)
                if claim is not None:
                    break
            if claim is None:
                self.changes.wait(mark, idle)
                idle = min(idle * 2, self.idle_max)
                continue
            idle = POLL_S
            self._process(rt, claim, 0)

    def _process(self, rt: StageRuntime, claim: Claim, slot: int) -> None:
        """Process one claimed batch, noting it in ``slot`` of the batches this process
        works (so its death blames only them); a batch delivered before to a process
        that died works alone (:class:`_Alone`)."""
        with self.alone.batch(claim.deliveries > 1):
            if self._working is not None:
                self._working[slot] = claim.id
            try:
                process_claim(rt, claim)
            finally:
                if self._working is not None:
                    self._working[slot] = 0
        if rt.next_queue:
            self.depths.bump(rt.next_queue, 1)
        else:  # perhaps the run's last batch
            self._ring_run()
        self.changes.notify()

    def _next_claim(self, rt: StageRuntime, queue: Any, look: bool = True) -> Claim | None:
        """A batch this process handed itself (its lease renewed if it waited long),
        else one claimed from the queue (put by another process, or whose lease
        expired); ``look`` false: only the former."""
        ready = (self.handed.ready[rt.queue] if self.handed is not None
                 else collections.deque[Claim]())
        while True:
            try:
                claim = ready.popleft()
            except IndexError:
                break
            if claim.claimed_until - self.queues.now() > rt.lease_s - max(1.0, rt.lease_s / 10):
                return claim
            try:
                with self.lock:
                    return queue.extend([claim], rt.lease_s)[0]
            except StaleClaim:  # its lease ran out while it waited: claimed anew below
                self.handed.take(claim.id)
        if not look:
            return None
        if rt.missed and not queue.claimable():  # a read: no write lock to find nothing
            return None
        with self.lock:
            claims = queue.claim(1, consumer=self.consumer, lease_s=rt.lease_s, raw=True)
        rt.missed = not claims
        return claims[0] if claims else None

    def _release_leftovers(self) -> None:
        """Give back the batches handed to stages of this run that no thread started,
        so the next run takes them at once instead of after their leases."""
        left = self.handed.leftover() if self.handed is not None else []
        if not left:
            return
        try:
            with self.lock, self.queues.transaction() as tx:
                tx.release(left)
        except Exception:  # their leases expire instead
            log.exception("pipeline %s: could not release %d batch(es)", self.job, len(left))

    def run(self) -> RunReport:
        with calm_gc():
            return self._run()

    def _run(self) -> RunReport:
        started = time.time()
        ledger.create_tables(self.queues.engine)
        with self.queues.transaction() as tx:
            cp = ledger.begin_pass(tx.connection, self.job, new=not self.drain_only)
        self._records = cp.records
        # what processes of earlier runs held when they were killed goes back at once
        working.sweep(self._folder, self._release_consumer)
        threads: list[threading.Thread] = []
        source_thread = None
        reads = cp.reading and not self.drain_only
        if reads and not self.source_forked:
            source_thread = self._source_thread(cp)
            threads.append(source_thread)
        stage_threads = self._stage_threads(self.local, cp.generation)
        threads += stage_threads
        own = self._working_file(len(stage_threads)) if stage_threads else None
        if own is not None:
            own.own()
            self._working = own
        forks = (StageProcesses(
            self.job, self.forks,
            [sum(self.settings[i].concurrency for i in indexes) for indexes in self.forks],
            functools.partial(self._work_forked, cp.generation), self._release_dead,
            self._working_file)
            if self.forks else None)
        if forks is not None:  # before this run's threads start: nothing of theirs held
            self._run_bell = RunBell(self._bell.set)
            try:
                forks.start()
            except BaseException:
                forks.stop()
                self._close_bell()
                raise
        for thread in threads:
            thread.start()
        finished = False
        shown = 0.0
        try:
            while not self.stop.is_set():
                self._bell.clear()
                if forks is not None:
                    forks.check()
                draining = not reads or (
                    bool(self._source_read.value) if self._source_read is not None
                    else not source_thread.is_alive())
                if draining:
                    if self._errors:
                        break
                    if self.depths.total() == 0:
                        finished = True
                        break
                if self.progress is not None and time.monotonic() - shown >= PROGRESS_S:
                    self.progress(self._report(cp, started, False))
                    shown = time.monotonic()
                # the end is looked for when a batch leaves the last stage (any process
                # rings), and every POLL_S (one small query) once the source is read
                self._bell.wait(POLL_S if draining else PROGRESS_S)
        finally:
            self.stop.set()
            self.changes.notify()
            for thread in threads:
                thread.join()
            if forks is not None:
                forks.stop()
            self._close_bell()
            self._release_leftovers()
            if own is not None:  # every thread ended after its batch: none is held
                own.remove()
                self._working = None
        if self._errors:
            raise self._errors[0]
        if finished and not self.drain_only:
            with self.queues.transaction() as tx:
                current = ledger.checkpoint(tx.connection, self.job)
                if current is not None and current.state == ledger.READ:
                    ledger.finish_pass(tx.connection, self.job)
        if finished and self.outcomes is not None:
            self.outcomes.finish()
        return self._report(cp, started, finished)

    def _source_thread(self, cp: ledger.Checkpoint) -> threading.Thread:
        return threading.Thread(target=carry(self._guard), args=(self._read_source, cp),
                                name=f"{self.job}-source", daemon=True)

    def _stage_threads(self, indexes: Sequence[int], generation: int
                       ) -> list[threading.Thread]:
        threads = []
        for index in indexes:
            rt = self._runtime(index, generation)
            for n in range(rt.settings.concurrency):
                threads.append(threading.Thread(
                    target=carry(self._guard), args=(self._work, rt, index, len(threads)),
                    daemon=True, name=f"{self.job}-{rt.stage.name}-{n}"))
        return threads

    def _forked_threads(self, indexes: Sequence[int], generation: int
                        ) -> list[threading.Thread]:
        """A stage process's threads. Its stages are there for their Python work
        (``processes``), which threads of one process do in turn anyway: when each has
        ``concurrency`` 1, one thread works them all, the deepest batch ready first, so
        no two threads of the process wait for each other's interpreter lock (and the
        writer lock held meanwhile); else each stage has its own threads."""
        if any(self.settings[i].concurrency != 1 for i in indexes):
            return self._stage_threads(indexes, generation)
        rts = [self._runtime(i, generation) for i in indexes]
        return [threading.Thread(target=carry(self._guard),
                                 args=(self._work_in_turn, rts, list(indexes)),
                                 daemon=True, name=f"{self.job}-stages")]

    def _work_forked(self, generation: int, number: int, indexes: list[int],
                     stopped: threading.Event, slots: working.WorkingFile) -> None:
        """Stage process ``number``'s part of the run: the stages ``indexes`` until the
        run stops (``stopped`` is set), each thread noting in ``slots`` (its working
        file, mapped by the run's process too) the batch it works; the first one reads
        the source too (:attr:`source_forked`), from where its checkpoint stands (a
        process started in place of a dead one goes on from there). Raises the error it
        stopped on."""
        if self._run_bell is not None:  # wake the run's process from this one
            self._ring_run = self._run_bell.ring
        self.queues.engine.dispose(close=False)  # the parent's connections stay its own
        self._reset(indexes, writer_lock(self.queues, shared=True))
        self._working = slots
        threads = self._forked_threads(indexes, generation)
        if number == 0 and self.source_forked and not self.drain_only:
            with self.queues.engine.connect() as conn:
                cp = ledger.checkpoint(conn, self.job)
            if cp is not None and cp.reading and cp.generation == generation:
                threads.append(self._source_thread(cp))
        for thread in threads:
            thread.start()
        try:
            while not (self.stop.is_set() or stopped.wait(0.05)):
                pass
        finally:
            self.stop.set()
            self.changes.notify()
            for thread in threads:
                thread.join()
            self._release_leftovers()
        if self._errors:
            raise self._errors[0]

    def _report(self, cp: ledger.Checkpoint, started: float, finished: bool) -> RunReport:
        with self.queues.engine.connect() as conn:
            counts = ledger.counts(conn, self.job, cp.generation)
            expired = ledger.dead_since(conn, self.names, cp.started_at)
            if self.source_forked:  # read in a stage process: its checkpoint counts
                now = ledger.checkpoint(conn, self.job)
                if now is not None and now.generation == cp.generation:
                    self._records = now.records
        stages: dict[str, dict[str, int]] = {}
        for stage, name in zip(self.pipe.stages, self.names, strict=True):
            row = dict(counts.get(stage.name) or {"records_in": 0, "records_out": 0,
                                                  "records_failed": 0, "dead_letters": 0})
            row["dead_letters"] = max(row["dead_letters"], expired.get(name, 0))
            stages[stage.name] = row
        dead: list[dict[str, Any]] = []
        if finished:
            for stage, name in zip(self.pipe.stages, self.names, strict=True):
                for letter in self.queues.queue(name).dead_letters(REPORTED_DEAD_LETTERS):
                    if letter.dead_at >= cp.started_at and len(dead) < REPORTED_DEAD_LETTERS:
                        dead.append({"stage": stage.name, "key": letter.key or "",
                                     "error_type": letter.error.type or "Error",
                                     "message": letter.error.message})
        return RunReport(self.pipe.name, self.job, cp.generation, finished, self._records,
                         stages, dead, self.dry_run, time.time() - started)


def outcome_hook(pipe: Pipeline, queues: Queues, job: str, params: Mapping[str, Any],
                 dry_run: bool, names: Sequence[str], drain_only: bool = False
                 ) -> tuple[Any, Any]:
    """The run's source (a ``from_params`` one built from the job's params) and the
    hook told each record's fate: a source with ``for_run`` (a sheet tab) gives one
    bound to this run's store, so outcomes commit with the hand-offs; else ``None``."""
    try:
        source = pipe.source.bind(params) if hasattr(pipe.source, "bind") else pipe.source
    except PermanentError:
        if drain_only:  # a replay reads no source: its params may not be given
            return pipe.source, None
        raise
    if not hasattr(source, "for_run"):
        return source, None
    if isinstance(pipe.key, str) and pipe.key != source.key:
        raise PipelineError(f"pipeline {pipe.name!r} keys records by {pipe.key!r} but "
                            f"its sheet tab by {source.key!r}; give both the same column")
    bound = source.for_run(None if dry_run else queues.engine, job, names)
    return bound, (None if dry_run else bound)


_LOCKS: dict[int, threading.Lock] = {}
#: The cyclic garbage collector's first threshold while a pipeline runs.
GC_THRESHOLD = 50_000


class _CalmGc:
    """While pipelines run in this process, the cyclic garbage collector runs less
    often and skips the objects alive when the first run began (``gc.freeze``).

    Records are trees of dicts and lists, freed by reference counting; but each batch
    decoded or built allocates thousands of containers, and every 700 of them the
    collector runs, now and then walking every object of the process (modules,
    SQLAlchemy's tables, the batches in flight): more time than the stages take. The
    usual settings come back when the last run ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs = 0
        self._saved = gc.get_threshold()

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            self._runs += 1
            if self._runs == 1:
                self._saved = gc.get_threshold()
                gc.freeze()
                gc.set_threshold(max(GC_THRESHOLD, self._saved[0]), *self._saved[1:])
        try:
            yield
        finally:
            with self._lock:
                self._runs -= 1
                if self._runs == 0:
                    gc.set_threshold(*self._saved)
                    gc.unfreeze()


calm_gc = _CalmGc()


def _forkable(queues: Queues) -> bool:
    """Whether forked processes would see the same queues and share SQLite's writer: a
    server database, or a SQLite file named by its path (not in memory, not a ``file:``
    URI, beside which no lock file can be named)."""
    database = queues.engine.url.database
    return queues.engine.dialect.name != "sqlite" or bool(
        database and database != ":memory:" and not database.startswith("file:"))


def writer_lock(queues: Queues, shared: bool = False) -> Any:
    """A lock this process's threads take around each queue transaction on SQLite.

    SQLite has one writer at a time; threads that meet its lock wait in its busy
    handler, which sleeps in growing steps and wakes late. Queuing them on a Python
    lock first hands the write lock on at once. ``shared``: the run's forked stage
    processes write too, and queue on a lock file beside the database with this
    process's threads. PostgreSQL needs none."""
    if queues.engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    if shared:  # only for a run that forks, on a SQLite file (_forkable)
        return ProcessWriterLock(f"{queues.engine.url.database}.writer-lock")
    return _LOCKS.setdefault(id(queues), threading.Lock())


def _engine(store: Store | Engine | str) -> Engine:
    if isinstance(store, Engine):
        return store
    if hasattr(store, "engine"):
        return store.engine
    from sheetops.store.db import make_engine

    return make_engine(str(store))


@contextlib.contextmanager
def open_queues(store: Store | Engine | str, dry_run: bool = False) -> Iterator[Queues]:
    """The queues of ``store``; a dry run works on a scratch SQLite file instead, so
    nothing it does touches the real queues, checkpoints or ledger."""
    if dry_run:
        with tempfile.TemporaryDirectory(prefix="sheetops-dry-") as folder:
            queues = Queues(_engine(f"sqlite:///{folder}/dry-run.db"))
            try:
                yield queues
            finally:
                queues.dispose()
        return
    queues = Queues(_engine(store))
    try:
        yield queues
    finally:
        queues.dispose()


def run(pipe: Pipeline, store: Store | Engine | str, *, job: str | None = None,
        run_id: str | None = None, dry_run: bool = False,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        lease_grace_s: float | None = None, drain_only: bool = False,
        run_context: Any = None, progress: Callable[[RunReport], None] | None = None,
        params: Mapping[str, Any] | None = None) -> RunReport:
    """Run (or resume) ``pipe`` until its source is read and its queues are drained.

    ``job`` names the queues (``<job>.<stage>``) and the checkpoint (default: the
    pipeline's name); ``overrides`` maps stage → settings (the Stages tab);
    ``drain_only`` processes what the queues hold without reading the source (replay);
    ``params`` are the job's params (a ``from_params`` source and ``ctx.params``; a
    job's run passes its Jobs-tab params); ``lease_grace_s`` shortens the lease grace
    (tests); ``progress`` is called with a report about every 50 ms."""
    with open_queues(store, dry_run) as queues:
        return PipelineRun(pipe, queues, job=job or pipe.name,
                           run_id=run_id or uuid.uuid4().hex[:12], dry_run=dry_run,
                           overrides=overrides, lease_grace_s=lease_grace_s,
                           drain_only=drain_only, run_context=run_context,
                           progress=progress, params=params).run()
