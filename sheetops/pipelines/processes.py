"""Stage worker processes: a stage's ``processes`` setting runs its threads in that many
forked copies of the run's process instead of in the process itself.

Threads of one process share one interpreter lock, so stages whose work is Python code
(parsing, validating, reshaping records) take turns on one core however many threads
they have. A stage with ``processes: N`` is worked by N forked processes, each with the
stage's ``concurrency`` threads; process ``k`` works every stage whose ``processes`` is
at least ``k``, so consecutive stages forked alike hand their batches on inside the same
process (decoded, as threads do) and only the hops in and out cross processes, through
the same durable queues every hand-off already goes through.

Forking keeps what a notebook or module defined (stage functions, closures, the run's
context) without pickling anything; what a forked stage changes in its own memory (a
list it appends to, a counter) stays in its process, so a stage whose effect is in
memory keeps ``processes: 0``. The children:

* stop when the run does (at once: the run's process closes a pipe each child waits
  on) and when the run's process dies (the pipe's end, or a look at its parent every
  50 ms), after the batch they are working on; batches they held are claimable again
  at once (released) or when their leases expire (killed);
* are replaced when one dies of something (a signal, a segfault, the OOM killer), so a
  record that kills its process is delivered again, split and, after
  ``max_deliveries``, a dead letter, as it is when it kills a thread's process. Each
  child notes in its working file (:mod:`sheetops.pipelines.working`, mapped by the
  run's process too) which batch each of its threads is working; when it dies, the
  batches it held are given back at once, and only those being worked keep the
  delivery counted against them: a batch that merely waited in the dead process is
  not blamed for its death;
* share SQLite's one writer through a lock file next to the database (``flock``: the
  kernel drops a dead process's lock), as the threads of one process share a lock;
* wake the run's process (:class:`RunBell`, a pipe) when the source has been read or a
  batch has left the last stage, so the run sees its end at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import multiprocessing
import os
import pickle
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sheetops.pipelines.model import PipelineError, StageSettings
from sheetops.pipelines.working import WorkingFile

log = logging.getLogger("sheetops.pipelines")

#: Seconds between a child's looks at whether the run stopped or its parent died.
WATCH_S = 0.05
#: Seconds a child may take to finish its batch once the run stops, before it is killed.
STOP_GRACE_S = 30.0
#: Replacements of dead children a run makes at most, so a crash loop ends the run.
MAX_RESTARTS = 50
#: Bytes kept for the error a child ends on (pickled), for the run's process to raise.
FAILURE_BYTES = 64 * 1024
#: Seconds between looks at whether a stopping child has exited.
EXIT_POLL_S = 0.001


def plan(settings: Sequence[StageSettings]) -> list[list[int]]:
    """The stage indexes each forked process works: process ``k`` (from 1) every stage
    whose ``processes`` is at least ``k``; empty when no stage is forked."""
    most = max((s.processes for s in settings), default=0)
    return [[i for i, s in enumerate(settings) if s.processes >= k]
            for k in range(1, most + 1)]


def check_rate_limits(names: Sequence[str], settings: Sequence[StageSettings],
                      shared_storage: Callable[[], bool]) -> None:
    """Refuse a stage whose rate limit is kept in memory (one window per process) when
    several processes would work it: each would allow the whole rate.
    ``shared_storage`` says whether limits are shared (asked only when it matters:
    reading the settings costs milliseconds)."""
    for name, s in zip(names, settings, strict=True):
        if s.rate_limit and s.processes > 1 and not shared_storage():
            raise PipelineError(
                f"stage {name!r} has rate_limit {s.rate_limit!r} and processes "
                f"{s.processes}: a limit kept in memory holds per process, so each would "
                "allow the whole rate; set processes to 1, or share the limit with "
                "SHEETOPS_RATE_LIMIT_STORAGE=redis://…")


class ProcessWriterLock:
    """SQLite's one writer, taken in turn by this process's threads (a thread lock) and
    by the run's other processes (``flock`` on ``path``; each process opens the file
    itself, since a lock belongs to an open file and a forked copy shares its parent's)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def _file(self) -> int:
        if self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        assert self._fd is not None
        return self._fd

    def __enter__(self) -> ProcessWriterLock:
        self._thread_lock.acquire()
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.flock(self._file(), fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


class RunBell:
    """A pipe by which the run's stage processes wake the run's process: when its source
    has been read, or a batch has left the last stage, the run looks for its end (or
    a child's error) at once instead of at its next look. The run's process creates it
    before forking; a thread of its own calls ``on_ring`` for every ring."""

    def __init__(self, on_ring: Callable[[], None]) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # a full pipe has a wake-up waiting already
        self._closed = False
        self._thread = threading.Thread(target=self._listen, args=(on_ring,),
                                        name="run-bell", daemon=True)
        self._thread.start()

    def _listen(self, on_ring: Callable[[], None]) -> None:
        while os.read(self._read, 4096) and not self._closed:
            on_ring()

    def ring(self) -> None:
        """Wake the run's process (from any of its processes; never blocks; nothing once
        closed, so a late ring never writes to a file that reused the number)."""
        if self._write < 0:
            return
        with contextlib.suppress(OSError):
            os.write(self._write, b"\0")

    def close(self) -> None:
        """In the run's process, once its stage processes have ended."""
        self._closed = True
        self.ring()
        self._thread.join()
        os.close(self._read)
        os.close(self._write)
        self._read = self._write = -1


class StageProcesses:
    """The forked processes of one run: started before the run's own threads, watched
    while it runs (:meth:`check`), stopped with it (:meth:`stop`). Plain ``os.fork``:
    multiprocessing refuses children to a daemonic process, and a pipeline job runs in
    one (a worker of the local executor).

    ``work(number, indexes, stopped, working)`` is what child ``number`` (from 0) does:
    work the stages ``indexes`` until ``stopped`` (a :class:`threading.Event`) is set,
    each of its threads writing the id of the batch it works into its slot of
    ``working`` (a :class:`~sheetops.pipelines.working.WorkingFile` from
    ``working_file(threads)``; 0 between batches). An exception it raises (its source's, or the
    engine's own) ends the child with exit code 1, and :meth:`check` raises it again in
    the run's process, which ends the run as that error would have in the run's own
    threads. ``threads[k]``: child ``k``'s thread count. ``release(pid, blamed)`` gives
    back what a dead child held, the batches ``blamed`` keeping their delivery."""

    def __init__(self, job: str, assignments: list[list[int]], threads: list[int],
                 work: Callable[[int, list[int], threading.Event, Any], None],
                 release: Callable[[int, list[int]], None],
                 working_file: Callable[[int], WorkingFile]) -> None:
        self.job = job
        self.assignments = assignments
        self._threads = threads
        self._work = work
        self._release = release
        self._working_file = working_file
        #: set to 1 to stop the children: plain shared memory, no lock, since a
        #: child killed while holding a lock (an Event's) would leave it held forever
        self._stop = multiprocessing.RawValue("b", 0)
        #: each child waits on the read end; closing the write end (stop, or this
        #: process's death) wakes every one of them at once
        self._wake: tuple[int, int] | None = None
        self._pids: list[int | None] = [None] * len(assignments)
        self._working: list[Any] = [None] * len(assignments)
        #: what each child's error was, pickled (see :func:`_child`)
        self._failures: list[Any] = [None] * len(assignments)
        self.restarts = 0

    def start(self) -> None:
        self._wake = os.pipe()
        for number in range(len(self.assignments)):
            self._start(number)

    def _start(self, number: int) -> None:
        working = self._working_file(self._threads[number])
        failure = multiprocessing.RawArray("c", FAILURE_BYTES)
        parent = os.getpid()
        for stream in (sys.stdout, sys.stderr):  # nothing buffered is written twice
            with contextlib.suppress(Exception):
                stream.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller's code
            working.own()
            assert self._wake is not None
            os.close(self._wake[1])  # the run's process alone holds it open
            _child(functools.partial(self._work, number), self.assignments[number],
                   self._stop, self._wake[0], parent, working, failure)
        self._pids[number], self._working[number] = pid, working
        self._failures[number] = failure

    def _exited(self, number: int, block: bool = False) -> int | None:
        """Child ``number``'s exit code (negative: the signal), ``None`` while it runs."""
        pid = self._pids[number]
        if pid is None:
            return None
        try:
            done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped already
            return 0
        if done == 0:
            return None
        self._pids[number] = None
        return os.waitstatus_to_exitcode(status)

    def check(self) -> None:
        """Replace a child that died; raise when one ended in an error of its own."""
        for number, pid in enumerate(self._pids):
            if pid is None or self._stop.value:
                continue
            code = self._exited(number)
            if code is None:
                continue
            if code == 1:
                raise _failure(self._failures[number].raw) or PipelineError(
                    f"pipeline {self.job}: stage process {number + 1} stopped on an "
                    "error (see its log)")
            self.restarts += 1
            if self.restarts > MAX_RESTARTS:
                raise PipelineError(f"pipeline {self.job}: stage processes died "
                                    f"{self.restarts} times (last exit {code})")
            blamed = self._working[number].working()
            log.warning("pipeline %s: stage process %d died (exit %s) working %d "
                        "batch(es); starting another", self.job, number + 1, code,
                        len(blamed))
            try:
                self._release(pid, blamed)
            except Exception:  # their leases expire instead
                log.exception("pipeline %s: what stage process %d held was not given "
                              "back", self.job, number + 1)
            else:
                self._working[number].remove()
            self._start(number)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop every child after its batch; kill the ones that take longer than
        ``grace_s``."""
        self._stop.value = 1
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None
        deadline = time.monotonic() + grace_s
        for number, pid in enumerate(self._pids):
            if pid is None:
                continue
            code = self._exited(number)
            while code is None:
                if time.monotonic() > deadline:
                    log.warning("pipeline %s: stage process %d did not stop in %.0fs; "
                                "killed", self.job, number + 1, grace_s)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    code = self._exited(number, block=True)
                    break
                time.sleep(EXIT_POLL_S)
                code = self._exited(number)
            working = self._working[number]
            if code:  # killed, or died on its way out: give back what it held
                with contextlib.suppress(Exception):  # else the next run's sweep does
                    self._release(pid, working.working())
                    working.remove()
            else:  # it stopped after its batch: it holds nothing
                working.remove()


def _failure(stored: bytes) -> BaseException | None:
    """The exception a child left in its failure slot, if it could be kept."""
    size = int.from_bytes(stored[:4], "little")
    if not 0 < size <= len(stored) - 4:
        return None
    try:
        error = pickle.loads(stored[4:4 + size])
    except Exception:
        return None
    return error if isinstance(error, BaseException) else None


def _keep_failure(slot: Any, error: BaseException) -> None:
    """Leave ``error`` for the run's process: pickled whole when it can be (so it ends
    the run as the same type), else as a :class:`PipelineError` with its text."""
    for candidate in (error, PipelineError(f"{type(error).__name__}: {error}"[:2000])):
        try:
            data = pickle.dumps(candidate)
            pickle.loads(data)
        except Exception:
            continue
        if len(data) <= len(slot) - 4:
            slot.raw = len(data).to_bytes(4, "little") + data
            return


def _child(work: Callable[[list[int], threading.Event, Any], None], indexes: list[int],
           stop: Any, wake: int, parent: int, working: Any, failure: Any) -> None:
    """A forked process's body: work ``indexes`` until the run stops or its parent dies
    (``wake`` becomes readable: its write end was closed); an error it ends on is left
    in ``failure`` for the run's process."""
    watched = threading.Event()

    def watch() -> None:
        while not stop.value and os.getppid() == parent:
            if select.select([wake], [], [], WATCH_S)[0]:
                break
        watched.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    clean = False
    try:
        work(indexes, watched, working)
        clean = True
    except BaseException as exc:  # logged where it was raised
        _keep_failure(failure, exc)
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(0 if clean else 1)
