"""Which batches a process's threads are working, kept where whoever outlives the
process can read them: the run that forked it, or — after a SIGKILL of the run's own
process — the next run of any pipeline on the same store and host.

A batch handed on inside a process (``put_claimed``) counts as delivered when it is
put, before any thread starts it; a process that dies holding several such batches
would otherwise have every one of them counted against it, and batches that only
waited there, through a few crashes caused by another record, end as dead letters
(``LeaseExpired``) though nothing was wrong with them. Each process that works batches
notes in a small memory-mapped file the batch each of its threads is working (a plain
store into memory: no system call, no transaction). When the process is found dead, what
it held is given back at once (:meth:`~sheetops.store.queue.QueueTransaction.release_consumer`),
only the batches it was working keeping their delivery: they may be what killed it.

The files live in the temporary folder, one folder per store, one file per process of a
run; a run removes its own when it ends, and :func:`sweep` removes those of the dead.
A process on another host, or whose file is gone (a reboot), is left to its leases
expiring, as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

#: Bytes per slot: an item id (int64); slot 0 of the file is its owner's pid.
_SLOT = 8
#: Seconds after which a file no process took for its own is removed.
UNOWNED_S = 600.0


def folder_for(store: str) -> Path:
    """The folder of the working files of processes using the store ``store`` (its URL,
    password hidden)."""
    digest = hashlib.sha256(store.encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"sheetops-working-{os.getuid()}" / digest


class WorkingFile:
    """``slots`` batch ids (0: none), one per thread of the process that owns the file;
    made before that process starts (its parent may make it before forking), owned
    from :meth:`own` on."""

    def __init__(self, folder: Path, name: str, slots: int) -> None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = folder / name
        size = _SLOT * (1 + max(1, slots))
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._ids = memoryview(self._map).cast("q")

    def own(self, pid: int | None = None) -> None:
        """From now on the file speaks for ``pid`` (this process by default)."""
        self._ids[0] = os.getpid() if pid is None else pid

    def __setitem__(self, slot: int, item_id: int) -> None:
        self._ids[1 + slot] = item_id

    def working(self) -> list[int]:
        """The batches being worked (those of a dead owner: the ones to blame)."""
        return [i for i in self._ids[1:].tolist() if i]

    def remove(self) -> None:
        """Remove the file (its owner ended holding nothing), and its folder once empty."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()


def _read(path: Path) -> tuple[int, list[int]] | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) < _SLOT or len(data) % _SLOT:
        return None
    ids = memoryview(data).cast("q").tolist()
    return ids[0], [i for i in ids[1:] if i]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def sweep(folder: Path, release: Callable[[str, Sequence[int]], None]) -> int:
    """Give back what the dead processes of ``folder`` held: ``release(consumer,
    blamed)`` for each (the consumer as queue items name it, ``host:pid:run``), then
    remove its file. Files of live processes are left; returns how many were swept."""
    swept = 0
    try:
        paths = list(folder.iterdir())
    except OSError:
        return 0
    host = socket.gethostname()
    for path in paths:
        run_id = path.name.rpartition("-")[0]
        read = _read(path)
        if read is None or not run_id:
            continue
        pid, blamed = read
        if pid == os.getpid() or (pid and _alive(pid)):
            continue
        if not pid:  # made for a process about to start (or that never did)
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > UNOWNED_S:
                    path.unlink()
            continue
        release(f"{host}:{pid}:{run_id}", blamed)
        swept += 1
        with contextlib.suppress(OSError):
            path.unlink()
    return swept
