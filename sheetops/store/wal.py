"""Checkpointing a SQLite store's write-ahead log from a background thread.

With ``synchronous=NORMAL`` a commit only appends to the WAL (no fsync); the fsyncs
come at each checkpoint, which SQLite runs by default inside the commit that brings
the WAL past 1,000 pages. For a writer of large batches (a pipeline's queue) those
fsyncs cost more than the writes themselves, and they are paid while the writer holds
the write lock (and this process's writer lock), so every other writer waits too.

:class:`WalCheckpointer` moves them to a thread of their own: the queue's connections
turn SQLite's automatic checkpoint off, each committed unit of work reports about how
much it wrote, and after about as much as SQLite's own cadence (1,000 pages) the thread
runs a ``PASSIVE`` checkpoint, which waits for no writer. Writers never stop for its
fsyncs. Durability is unchanged: a commit is exactly as durable as before (in the WAL,
which survives a killed process; the WAL and the database file are synced at each
checkpoint, as before).

A passive checkpoint never lets the WAL start over while writers keep appending, so
when the WAL holds more than :data:`RESTART_BYTES` the thread runs a ``RESTART``
checkpoint (writers wait for it, briefly: most of the WAL is copied already), after
which the next writer reuses the file from its start. A writer that finds twice that
written since the last restart (the thread fell behind) waits for the next one: the
disk stays bounded whatever the load.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Any

log = logging.getLogger("sheetops.store")

#: Bytes written after which the thread checkpoints (SQLite's default: 1,000 pages).
CHECKPOINT_BYTES = 1000 * 4096
#: WAL size at which a checkpoint makes writers wait once so that the file starts over.
RESTART_BYTES = 32 << 20
#: Seconds between the thread's looks at whether its owner is still alive.
IDLE_S = 1.0
#: Seconds a writer waits at most for the WAL to start over (see :meth:`wrote`).
HOLD_S = 10.0
#: Busy timeout of the thread's connection, ms: a RESTART waits this long for readers
#: on old snapshots and for the writer of the moment (writers wait for it meanwhile).
BUSY_MS = 200
#: Seconds after a RESTART that readers kept from finishing before the next try.
RESTART_AGAIN_S = 1.0


class WalCheckpointer:
    """Checkpoints the WAL of the SQLite file ``path`` from a daemon thread. Started on
    the first :meth:`wrote` in each process (a forked child starts its own); stopped by
    :meth:`stop`."""

    def __init__(self, path: str, *, checkpoint_bytes: int = CHECKPOINT_BYTES,
                 restart_bytes: int = RESTART_BYTES, hold_s: float = HOLD_S) -> None:
        self.path = path
        self.checkpoint_bytes = checkpoint_bytes
        self.restart_bytes = restart_bytes
        self.hold_s = hold_s
        self.checkpoints = 0
        self.restarts = 0
        self._cond = threading.Condition()
        self._pending = 0
        self._since_restart = 0
        self._hold = True
        self._restart_at = 0.0
        self._stopped = False
        self._pid = 0
        self._thread: threading.Thread | None = None
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (me := ref()) and me._forked())

    def _forked(self) -> None:
        """In a forked child: the parent's thread is gone and its lock may be held."""
        self._cond = threading.Condition()
        self._thread, self._pid, self._pending, self._since_restart = None, 0, 0, 0

    def wrote(self, nbytes: int) -> None:
        """A unit of work committed about ``nbytes`` to the WAL. When writers have put
        twice ``restart_bytes`` in it since it last started over (the thread falls
        behind: a loaded machine, slow fsyncs), the writer waits for the restart, up
        to ``hold_s``: the WAL's size stays bounded whatever the load. If no restart
        comes in that time (a reader keeps an old snapshot), writers go on without
        waiting until one does."""
        with self._cond:
            if self._stopped:
                return
            if self._pid != os.getpid():
                self._start()
            self._pending += nbytes
            self._since_restart += nbytes
            if self._pending >= self.checkpoint_bytes:
                self._cond.notify_all()
            if self._hold and self._since_restart >= 2 * self.restart_bytes:
                # a reader holding an old snapshot can keep the WAL from starting over:
                # then writers stop waiting until a restart succeeds again
                self._hold = self._cond.wait_for(
                    lambda: self._since_restart < 2 * self.restart_bytes or self._stopped,
                    self.hold_s)

    def _start(self) -> None:
        self._pid = os.getpid()
        self._pending = 0
        ref = weakref.ref(self)
        self._thread = threading.Thread(target=_loop, args=(ref, self._cond), daemon=True,
                                        name=f"sheetops-wal-{os.path.basename(self.path)}")
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread after one last checkpoint of what was written."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
            thread = self._thread if self._pid == os.getpid() else None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    def _due(self) -> tuple[bool, bool]:
        """Under the condition's lock: (whether to checkpoint now, whether to stop).
        Waits up to ``IDLE_S`` for enough writes; when stopping, what is left counts."""
        if not self._stopped and self._pending < self.checkpoint_bytes:
            self._cond.wait_for(lambda: self._stopped
                                or self._pending >= self.checkpoint_bytes, IDLE_S)
        due = self._pending >= self.checkpoint_bytes or (self._stopped and self._pending > 0)
        if due:
            self._pending = 0
        return due, self._stopped

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        """One passive checkpoint; a restart too when the WAL has grown past the mark
        (then writers waiting in :meth:`wrote` go on)."""
        _busy, frames, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        if frames * page >= self.restart_bytes and time.monotonic() >= self._restart_at:
            busy, _frames, _done = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            if busy:  # a reader holds an old snapshot: try again a little later
                self._restart_at = time.monotonic() + RESTART_AGAIN_S
                return
            self.restarts += 1
            frames = 0
            with self._cond:
                self._hold = True
        with self._cond:  # the writers' estimate, set right
            self._since_restart = frames * page
            self._cond.notify_all()


def _loop(ref: weakref.ref[WalCheckpointer], cond: threading.Condition) -> None:
    conn: sqlite3.Connection | None = None
    try:
        while True:
            owner = ref()
            if owner is None:
                return
            with cond:
                due, stop = owner._due()
            if due:
                try:
                    if conn is None:
                        conn = sqlite3.connect(  # never creates a file that is gone
                            f"{Path(owner.path).resolve().as_uri()}?mode=rw", uri=True,
                            isolation_level=None, check_same_thread=False)
                        conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
                    owner.checkpoint(conn)
                except sqlite3.Error as exc:  # the next round tries again
                    log.warning("WAL checkpoint of %s failed: %s", owner.path, exc)
            if stop:
                return
            del owner
    finally:
        if conn is not None:
            conn.close()


def checkpointer_for(engine: Any) -> WalCheckpointer | None:
    """A checkpointer for ``engine``'s SQLite file, or ``None`` (another database, an
    in-memory or read-only SQLite)."""
    url = engine.url
    if engine.dialect.name != "sqlite" or not url.database or url.database == ":memory:":
        return None
    if "mode=ro" in str(url) or url.database.startswith("file:"):
        return None
    return WalCheckpointer(url.database)
