"""A run's start written only when its attempt outlasts a moment (the Celery worker's).

A worker records a run's start (status ``running``) and its end in the store. For an
attempt of a few milliseconds these are two commits for one user-visible change, and the
commit, not the attempt, is what such a worker spends its time on. So the start waits:
:meth:`LateStart.arm` before the attempt, :meth:`LateStart.disarm` after it. An attempt
still running ``delay_s`` after it began has its start written by this process's
``sheetops-late-start`` thread (the Runs and Status tabs show it running), within half
of ``delay_s`` more; a shorter one never has, and its start goes into the commit of its
end. The thread looks every half ``delay_s`` rather than being woken by each attempt: a
wake-up per attempt (a thread switch and a turn of the GIL) cost more than a no-op
attempt itself.

The delivery is counted before the attempt either way
(:meth:`~sheetops.store.task_deliveries.TaskDeliveryStore.begin_attempt`), so the
redelivery cap and the dropping of duplicates do not depend on this.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("sheetops.celery")

#: Seconds an attempt runs before its run's start is written on its own.
LATE_START_S = 0.5


class LateStart:
    """One pending start write at a time, on one thread per process (made on first use,
    again after a fork: a pool process does not inherit its parent's thread)."""

    def __init__(self, delay_s: float = LATE_START_S) -> None:
        self.delay_s = delay_s
        self._cond = threading.Condition()
        self._due_at = 0.0
        self._write: Callable[[], None] | None = None
        self._writing = False
        self._written = False
        self._pid: int | None = None

    def arm(self, write: Callable[[], None]) -> None:
        """Call ``write`` (the start's commit) if :meth:`disarm` is not called within
        ``delay_s`` seconds (it is called within ``1.5 × delay_s``)."""
        with self._cond:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._loop, name="sheetops-late-start",
                                 daemon=True).start()
            self._due_at = time.monotonic() + self.delay_s
            self._write, self._written = write, False

    def disarm(self) -> bool:
        """Cancel the pending write (waiting for one under way); returns whether the
        start was written, so the caller writes it with the end otherwise."""
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._write = None
            return self._written

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._write is None or time.monotonic() < self._due_at:
                    self._cond.wait(self.delay_s / 2)
                write, self._write, self._writing = self._write, None, True
            written = False
            try:
                write()
                written = True
            except Exception:  # the end's commit writes the start then
                log.exception("could not record a run's start; it is recorded with its end")
            finally:
                with self._cond:
                    self._writing, self._written = False, written
                    self._cond.notify_all()
