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
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from sheetops.attempt import run_attempt
from sheetops.context import AttemptRequest, AttemptResult
from sheetops.executors.base import Executor, OnResult, OnStart
from sheetops.hooks import Hooks
from sheetops.ratelimit import RateLimiter, RateLimitSpec

log = logging.getLogger("sheetops.executor")

_RESULT, _THROTTLE = "r", "t"


def _worker_main(conn: Connection, modules: list[str], path: list[str]) -> None:
    """Entry point of a worker process: run attempts until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if modules:  # forkserver/spawn: bring the registry back
        sys.path[:0] = [p for p in path if p not in sys.path]
        from sheetops.registry import registry

        registry.discover(modules)

    def throttle(spec: RateLimitSpec, job: str) -> float:
        waited = 0.0
        while True:
            conn.send((_THROTTLE, spec, job))
            delay = conn.recv()
            if delay <= 0:
                return waited
            time.sleep(delay)
            waited += delay

    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        conn.send((_RESULT, run_attempt(request, throttle)))


@dataclass
class _Worker:
    process: mp.process.BaseProcess
    conn: Connection
    request: AttemptRequest | None = None
    started_at: float = 0.0
    deadline: float = float("inf")
    throttled_s: float = 0.0


@dataclass(order=True)
class _Delayed:
    eta: float
    seq: int
    request: AttemptRequest = field(compare=False)


class LocalExecutor(Executor):
    """Worker processes with hard per-attempt deadlines, fed by one dispatcher thread."""

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
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = self._mp.Pipe(duplex=False)
        self._woken = False
        self._workers: list[_Worker] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self.completed = 0
        self.killed = 0

    # -- public ------------------------------------------------------------------------
    def start(self) -> None:
        self._workers = [self._spawn() for _ in range(self.size)]
        self._thread = threading.Thread(target=self._loop, name="sheetops-dispatcher",
                                        daemon=True)
        self._thread.start()

    def submit(self, request: AttemptRequest, eta: float | None = None) -> None:
        with self._lock:
            if eta is not None and eta > time.time():
                heapq.heappush(self._delayed, _Delayed(eta, next(self._seq), request))
            else:
                self._ready.append(request)
            if not self._woken:
                self._woken = True
                self._wake_w.send_bytes(b"")

    def submit_many(self, requests: list[AttemptRequest]) -> None:
        with self._lock:
            self._ready.extend(requests)
            if not self._woken:
                self._woken = True
                self._wake_w.send_bytes(b"")

    @property
    def queue_depth(self) -> int:
        return len(self._ready) + len(self._delayed)

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
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
        for worker in self._workers:
            self._retire(worker)
        self._workers = []
        self._stopped.set()
        return unstarted

    # -- dispatcher ----------------------------------------------------------------------
    def _wake(self) -> None:
        with self._lock:
            if not self._woken:
                self._woken = True
                self._wake_w.send_bytes(b"")

    def _spawn(self) -> _Worker:
        parent, child = self._mp.Pipe(duplex=True)
        modules: list[str] = []
        if self._reimport:
            from sheetops.registry import registry

            modules = sorted({registry.get(n).module for n in registry.names()})
        process = self._mp.Process(target=_worker_main, args=(child, modules, sys.path),
                                   name="sheetops-worker", daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

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
                self._dispatch(now)
                busy = [w for w in self._workers if w.request is not None]
                if self._stopping.is_set() and not busy:
                    return
                timeout = self._next_wakeup(now, busy)
                ready = wait([self._wake_r] + [w.conn for w in busy] +
                             [w.process.sentinel for w in busy], timeout)
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
        candidates = [w.deadline for w in busy]
        if self._delayed:
            candidates.append(self._delayed[0].eta)
        if not candidates:
            return None
        return max(0.0, min(candidates) - now)

    def _release_delayed(self, now: float) -> None:
        if not self._delayed or self._delayed[0].eta > now:
            return
        with self._lock:
            while self._delayed and self._delayed[0].eta <= now:
                self._ready.append(heapq.heappop(self._delayed).request)

    def _dispatch(self, now: float) -> None:
        if self._stopping.is_set():
            return
        for worker in self._workers:
            if worker.request is not None:
                continue
            with self._lock:
                if not self._ready:
                    return
                request = self._ready.popleft()
            worker.request, worker.started_at = request, now
            worker.deadline, worker.throttled_s = now + request.timeout_s, 0.0
            try:
                worker.conn.send(request)
            except (OSError, BrokenPipeError):
                self._replace(worker, lost=True)
                continue
            self.on_start(request, now)

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
            else:
                result: AttemptResult = payload[0]
                worker.request = None
                worker.deadline = float("inf")
                self.completed += 1
                self.on_result(result)
                now = time.time()
                self._dispatch_one(worker, now)

    def _dispatch_one(self, worker: _Worker, now: float) -> None:
        """Hand the next ready attempt to ``worker`` right away (saves a loop turn)."""
        if self._stopping.is_set():
            return
        with self._lock:
            if not self._ready:
                return
            request = self._ready.popleft()
        worker.request, worker.started_at = request, now
        worker.deadline, worker.throttled_s = now + request.timeout_s, 0.0
        try:
            worker.conn.send(request)
        except (OSError, BrokenPipeError):
            self._replace(worker, lost=True)
            return
        self.on_start(request, now)

    def _enforce_deadlines(self, now: float) -> None:
        for worker in self._workers:
            # Time spent waiting for a rate-limit permit does not count against timeout_s.
            if worker.request is not None and now >= worker.deadline + worker.throttled_s:
                self._replace(worker, lost=False)

    def _replace(self, worker: _Worker, lost: bool) -> None:
        """Kill ``worker`` (deadline passed, or it died), report its attempt, respawn."""
        request, started = worker.request, worker.started_at
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5)
        exitcode = worker.process.exitcode
        worker.conn.close()
        self.killed += 0 if lost else 1
        index = self._workers.index(worker)
        self._workers[index] = self._spawn()
        if request is None:
            return
        now = time.time()
        if lost:
            result = AttemptResult(
                request.run_id, request.job, request.attempt, started, now, False,
                error_type="WorkerLost",
                error_message=f"the worker process died (exit code {exitcode}) while "
                              "running this attempt")
        else:
            result = AttemptResult(
                request.run_id, request.job, request.attempt, started, now, False,
                error_type="RunTimeout", timed_out=True,
                error_message=f"attempt ran past timeout_s={request.timeout_s:g}s; its "
                              "worker process was killed")
        self.completed += 1
        self.on_result(result)
