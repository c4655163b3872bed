"""The default executor: a pool of worker processes on this machine.

Why processes: a thread cannot be stopped, so a run past its ``timeout_s`` would go on
unseen. Here each worker runs one attempt at a time; the dispatcher knows when each
attempt started and kills the worker process (SIGKILL) the moment its deadline passes,
records the attempt as timed out and starts a fresh worker. Nothing keeps running
behind the scheduler's back.

Workers are forked (``SHEETOPS_WORKER_START`` can choose ``forkserver``/``spawn``,
which re-import the registered automations' modules). Rate limits are enforced by the
dispatcher, so ``scope=global`` limits hold across all workers: a worker asks for a
permit over its pipe and sleeps as long as it is told.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from sheetops.attempt import run_attempt
from sheetops.client_context import carry
from sheetops.context import AttemptRequest, AttemptResult
from sheetops.errors import RunTimeout, WorkerLost
from sheetops.executors.base import Executor, OnResult, OnStart
from sheetops.executors.memory import explain_memory_error, limit_memory
from sheetops.hooks import Hooks
from sheetops.ratelimit import RateLimiter, RateLimitSpec

log = logging.getLogger("sheetops.executor")

_RESULT, _THROTTLE = "r", "t"


def _worker_main(conn: Connection, progress, modules: list[str], path: list[str]) -> None:
    """Entry point of a worker process: run batches of attempts until told to stop.

    Before each attempt the worker writes (batch number, position, start time) into
    ``progress``, memory shared with the dispatcher, which therefore knows exactly which
    attempt is running and since when, without a message per attempt. Results of quick
    attempts are sent together, at most ~2 ms late.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Not the CLI's SIGTERM handler (inherited by fork): multiprocessing stops daemon
    # workers with SIGTERM when the scheduler exits, and an ignored one hangs that exit.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    parent = os.getppid()
    if modules:  # forkserver/spawn: bring the registry back
        sys.path[:0] = [p for p in path if p not in sys.path]
        from sheetops.registry import registry

        registry.discover(modules)

    send_lock = threading.Lock()
    held: list[AttemptResult] = []

    def send(message) -> None:
        with send_lock:
            conn.send(message)

    def flush_held() -> None:
        with send_lock:
            if held:
                conn.send((_RESULT, held[:]))
                held.clear()

    busy = threading.Event()

    def flush_when_current_is_slow() -> None:
        # Results of finished quick attempts must not wait behind a slow one (and must
        # not die with it if it is killed): send them once the current one takes >2 ms.
        # It also ends the worker when the scheduler is gone (killed): the pipe gives no
        # EOF, as forked siblings hold copies of its other end. Idle, it wakes once a
        # second; working, every 2 ms.
        while True:
            working = busy.wait(1.0)
            if os.getppid() != parent:
                os._exit(1)
            if not working:
                continue
            time.sleep(0.002)
            if held and time.time() - progress[2] > 0.002:
                flush_held()

    threading.Thread(target=flush_when_current_is_slow, daemon=True).start()

    def throttle(spec: RateLimitSpec, job: str) -> float:
        waited = 0.0
        while True:
            send((_THROTTLE, spec, job))
            delay = conn.recv()
            if delay <= 0:
                return waited
            time.sleep(delay)
            waited += delay

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        number, batch, quick = message
        busy.set()
        sent_at = time.monotonic()
        for position, request in enumerate(batch):
            if held and (time.monotonic() - sent_at > 0.001 or not quick):
                flush_held()
                sent_at = time.monotonic()
            # start time first, batch number last: the dispatcher trusts the slots only
            # when it reads the same (number, position) before and after the start time
            progress[2] = time.time()
            progress[1] = position
            progress[0] = number
            limit_memory(request.memory_mb)
            result = explain_memory_error(run_attempt(request, throttle), request.memory_mb)
            with send_lock:
                held.append(result)
        busy.clear()
        flush_held()


@dataclass
class _Worker:
    process: mp.process.BaseProcess
    conn: Connection
    progress: Any  # shared doubles: batch number, position in batch, start time
    batch: list[AttemptRequest] = field(default_factory=list)
    batch_number: int = 0
    done: int = 0  # results received for the current batch
    throttled_s: float = 0.0

    @property
    def request(self) -> AttemptRequest | None:
        """The attempt running now (or next), ``None`` when idle."""
        return self.batch[self.done] if self.done < len(self.batch) else None

    def running(self) -> tuple[AttemptRequest, float] | None:
        """The attempt the worker reports as running, with its start time (``None`` while
        the report is for an earlier batch or is being rewritten)."""
        progress = self.progress
        number, position = progress[0], progress[1]
        started = progress[2]
        if (progress[0], progress[1]) != (number, position):
            return None  # torn read: the worker moved on meanwhile; look again later
        if int(number) != self.batch_number or int(position) < self.done:
            return None
        position = int(position)
        return (self.batch[position], started) if position < len(self.batch) else None


@dataclass(order=True)
class _Delayed:
    eta: float
    seq: int
    request: AttemptRequest = field(compare=False)


class LocalExecutor(Executor):
    """Worker processes with hard per-attempt deadlines, fed by one dispatcher thread.

    Attempts of automations that have proven quick (a moving average under
    ``QUICK_S``) are sent to a worker in batches when there is a backlog, which keeps
    thousands of tiny runs a second cheap; everything else goes one at a time, so a slow
    attempt never holds up others queued behind it in the same worker.
    """

    QUICK_S = 0.002
    MAX_BATCH = 64

    def __init__(self, on_start: OnStart, on_result: OnResult, hooks: Hooks | None = None,
                 workers: int = 0, start_method: str | None = None,
                 rate_limiter: RateLimiter | None = None) -> None:
        super().__init__(on_start, on_result, hooks, workers)
        self.size = workers or max(2, os.cpu_count() or 2)
        method = start_method or os.environ.get("SHEETOPS_WORKER_START", "") or (
            "fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self._mp = mp.get_context(method)
        self._reimport = method != "fork"
        self._limiter = rate_limiter or RateLimiter()
        self._ready: deque[AttemptRequest] = deque()
        self._delayed: list[_Delayed] = []
        self._seq = itertools.count()
        self._batches = itertools.count(1)
        self._cost: dict[str, tuple[int, float]] = {}  # automation → (samples, mean s)
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = self._mp.Pipe(duplex=False)
        self._woken = False
        self._workers: list[_Worker] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.completed = 0
        self.killed = 0

    # -- public ------------------------------------------------------------------------
    def start(self) -> None:
        self._workers = [self._spawn() for _ in range(self.size)]
        self._thread = threading.Thread(target=carry(self._loop), name="sheetops-dispatcher",
                                        daemon=True)
        self._thread.start()

    def submit(self, request: AttemptRequest, eta: float | None = None) -> None:
        with self._lock:
            if eta is not None and eta > time.time():
                heapq.heappush(self._delayed, _Delayed(eta, next(self._seq), request))
            else:
                self._ready.append(request)
            self._wake_locked()

    def submit_many(self, requests: list[AttemptRequest]) -> None:
        with self._lock:
            self._ready.extend(requests)
            self._wake_locked()

    @property
    def queue_depth(self) -> int:
        return len(self._ready) + len(self._delayed) + sum(
            max(0, len(w.batch) - w.done - 1) for w in self._workers)

    @property
    def running(self) -> int:
        return sum(1 for w in self._workers if w.request is not None)

    def stop(self, timeout: float | None = None) -> list[AttemptRequest]:
        """Finish running attempts, return the ones that never started."""
        with self._lock:
            unstarted = list(self._ready) + [d.request for d in sorted(self._delayed)]
            self._ready.clear()
            self._delayed.clear()
        self._stopping.set()
        with self._lock:
            self._wake_locked()
        if self._thread is not None:
            self._thread.join(timeout)
        for worker in self._workers:
            self._retire(worker)
        self._workers = []
        return unstarted

    # -- dispatcher ----------------------------------------------------------------------
    def _wake_locked(self) -> None:
        if not self._woken:
            self._woken = True
            self._wake_w.send_bytes(b"")

    def _spawn(self) -> _Worker:
        parent, child = self._mp.Pipe(duplex=True)
        progress = self._mp.RawArray("d", 3)
        modules: list[str] = []
        if self._reimport:
            from sheetops.registry import registry

            modules = sorted({registry.get(n).module for n in registry.names()})
        process = self._mp.Process(target=_worker_main,
                                   args=(child, progress, modules, sys.path),
                                   name="sheetops-worker", daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent, progress)

    def _retire(self, worker: _Worker) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            worker.conn.send(None)
        worker.process.join(2)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(2)
        worker.conn.close()

    def _loop(self) -> None:
        try:
            while True:
                now = time.time()
                self._release_delayed(now)
                for worker in self._workers:
                    if worker.request is None:
                        self._dispatch(worker, now)
                busy = [w for w in self._workers if w.request is not None]
                if self._stopping.is_set() and not busy:
                    return
                ready = wait([self._wake_r] + [w.conn for w in busy] +
                             [w.process.sentinel for w in busy], self._next_wakeup(now, busy))
                if self._wake_r in ready:
                    while self._wake_r.poll():
                        self._wake_r.recv_bytes()
                    with self._lock:
                        self._woken = False
                for worker in busy:
                    if worker.conn in ready or worker.process.sentinel in ready:
                        self._drain(worker)
                self._enforce_deadlines(time.time())
        except Exception:
            log.exception("the dispatcher stopped unexpectedly")
            raise

    def _next_wakeup(self, now: float, busy: list[_Worker]) -> float | None:
        candidates = [self._deadline(w, now) for w in busy]
        if self._delayed:
            candidates.append(self._delayed[0].eta)
        if not candidates:
            return None
        return min(max(0.0, min(candidates) - now), 1.0)

    def _release_delayed(self, now: float) -> None:
        if not self._delayed or self._delayed[0].eta > now:
            return
        with self._lock:
            while self._delayed and self._delayed[0].eta <= now:
                self._ready.append(heapq.heappop(self._delayed).request)

    def _is_quick(self, request: AttemptRequest) -> bool:
        samples, mean = self._cost.get(request.automation, (0, 1.0))
        return samples >= 10 and mean < self.QUICK_S

    def _dispatch(self, worker: _Worker, now: float) -> None:
        """Give an idle worker one attempt, or a batch of quick ones when there is a
        backlog."""
        if self._stopping.is_set():
            return
        with self._lock:
            if not self._ready:
                return
            batch = [self._ready.popleft()]
            if self._is_quick(batch[0]):
                share = len(self._ready) // max(1, len(self._workers))
                while (self._ready and len(batch) <= min(share, self.MAX_BATCH - 1)
                       and self._is_quick(self._ready[0])):
                    batch.append(self._ready.popleft())
        worker.batch, worker.done, worker.throttled_s = batch, 0, 0.0
        worker.batch_number = next(self._batches)
        try:
            worker.conn.send((worker.batch_number, batch, len(batch) > 1))
        except (OSError, BrokenPipeError):
            self._replace(worker, lost=True)
            return
        except Exception:  # one request must never stop the dispatcher
            worker.batch = []
            self._fail_unsendable(batch, now)
            return
        for request in batch:
            self.on_start(request, now)

    def _fail_unsendable(self, batch: list[AttemptRequest], now: float) -> None:
        """A batch could not be pickled to a worker: fail the requests that cannot be,
        put the others back. Nothing was written to the pipe (pickling comes first)."""
        for request in batch:
            try:
                pickle.dumps(request)
            except Exception as exc:  # whatever it is, it fails this run
                self.on_start(request, now)
                self.completed += 1
                self.on_result(AttemptResult(
                    request.run_id, request.job, request.attempt, now, time.time(), False,
                    error_type=type(exc).__name__, permanent=True,
                    error_message="the attempt could not be handed to a worker process "
                                  f"({type(exc).__name__}: {str(exc)[:200]})"))
            else:
                with self._lock:
                    self._ready.appendleft(request)
                    self._wake_locked()

    def _drain(self, worker: _Worker) -> None:
        while worker.request is not None:
            try:
                if not worker.conn.poll():
                    if not worker.process.is_alive():
                        self._replace(worker, lost=True)
                    return
                kind, *payload = worker.conn.recv()
            except (EOFError, OSError):
                self._replace(worker, lost=True)
                return
            if kind == _THROTTLE:
                spec, job = payload
                delay = self._limiter.wait_time(spec, job)
                if delay > 0:
                    worker.throttled_s += delay
                    self.hooks.emit("on_throttle", job, spec.name, delay)
                worker.conn.send(delay)
                continue
            for result in payload[0]:
                worker.done += 1
                worker.throttled_s = 0.0
                self._learn(worker.batch[worker.done - 1].automation, result)
                self.completed += 1
                self.on_result(result)
            if worker.request is None:
                worker.batch = []
                self._dispatch(worker, time.time())

    def _read_leftovers(self, worker: _Worker) -> None:
        """Record results a dead worker had already written into its pipe."""
        try:
            while worker.request is not None and worker.conn.poll():
                kind, *payload = worker.conn.recv()
                if kind == _RESULT:
                    for result in payload[0]:
                        worker.done += 1
                        self._learn(worker.batch[worker.done - 1].automation, result)
                        self.completed += 1
                        self.on_result(result)
        except (EOFError, OSError):
            pass

    def _learn(self, automation: str, result: AttemptResult) -> None:
        samples, mean = self._cost.get(automation, (0, 0.0))
        took = result.finished_at - result.started_at
        weight = 1 / min(samples + 1, 50)
        self._cost[automation] = (samples + 1, mean + (took - mean) * weight)

    def _deadline(self, worker: _Worker, now: float) -> float:
        running = worker.running()
        if running is None:  # sent, not started yet (or the report is on its way)
            return now + 0.05
        request, started = running
        # Time spent waiting for a rate-limit permit does not count against timeout_s.
        return started + request.timeout_s + worker.throttled_s

    def _enforce_deadlines(self, now: float) -> None:
        for worker in self._workers:
            if worker.request is not None and worker.running() is not None and (
                    now >= self._deadline(worker, now)):
                self._replace(worker, lost=False)

    def _replace(self, worker: _Worker, lost: bool) -> None:
        """Kill ``worker`` (deadline passed, or it died), report its attempt, put back
        the attempts of its batch that had not started, and start a fresh worker."""
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5)
        exitcode = worker.process.exitcode
        self._read_leftovers(worker)  # results sent just before the kill still count
        running = worker.running()
        worker.conn.close()
        self.killed += 0 if lost else 1
        index = self._workers.index(worker)
        self._workers[index] = self._spawn()
        if worker.request is None:
            return
        if running is None and int(worker.progress[0]) == worker.batch_number and (
                int(worker.progress[1]) < worker.done):
            # the attempt it was killed over finished after all (its result was in the
            # pipe); the rest of the batch never started
            with self._lock:
                self._ready.extendleft(reversed(worker.batch[worker.done:]))
                self._wake_locked()
            return
        current, started = running if running is not None else (worker.request, time.time())
        position = worker.batch.index(current)
        finished_unreported = worker.batch[worker.done:position]
        untouched = worker.batch[position + 1:]
        with self._lock:
            self._ready.extendleft(reversed(untouched))
        now = time.time()
        for request in finished_unreported:  # ran, but the result died with the worker
            self.completed += 1
            self.on_result(AttemptResult(
                request.run_id, request.job, request.attempt, started, now, False,
                error_type=WorkerLost.__name__,
                error_message="the attempt finished but its result was lost when its "
                              "worker process was stopped"))
        if lost:
            result = AttemptResult(
                current.run_id, current.job, current.attempt, started, now, False,
                error_type=WorkerLost.__name__,
                error_message=f"the worker process died (exit code {exitcode}) while "
                              "running this attempt")
        else:
            result = AttemptResult(
                current.run_id, current.job, current.attempt, started, now, False,
                error_type=RunTimeout.__name__, timed_out=True,
                error_message=f"attempt ran past timeout_s={current.timeout_s:g}s; its "
                              "worker process was killed")
        self.completed += 1
        self.on_result(result)
        with self._lock:
            self._wake_locked()
