"""One active scheduler per store; others wait as hot standbys.

The leader holds a lease row in the store and renews it well before it expires. A
standby (a second ``sheetops run`` on the same store, on this machine or another) reads
the sheet and keeps its workers warm, but fires nothing and writes nothing to the sheet
until the lease expires — then it takes over within ``ttl_s`` (plus one control tick),
catching up the runs its predecessor missed.

The lease is fenced: each acquisition gets a higher epoch (:class:`Fence`), and the
leader's fires and recorded batches carry it and are checked in their own transaction.
A leader paused past its lease (SIGSTOP, a VM freeze, a long GC) that wakes up after
another took over is refused at its first write, so it neither fires nor records; it
steps down and waits as a standby.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

from sheetops.store import Store
from sheetops.store.leases import Fence

SCHEDULER = "scheduler"


class Lease:
    """This process's claim on a fenced lease row (see the module docstring)."""

    def __init__(self, store: Store, name: str = SCHEDULER, ttl_s: float = 15.0,
                 holder: str | None = None) -> None:
        self.store = store
        self.name = name
        self.ttl_s = ttl_s
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._renewed_at = 0.0
        self._fence: Fence | None = None
        self.held = False

    @property
    def fence(self) -> Fence | None:
        """The epoch this process writes under: the current one while it leads, the last
        one it had after it lost the lease (so those writes are refused), ``None`` if it
        never led."""
        return self._fence

    @property
    def epoch(self) -> int:
        return self._fence.epoch if self._fence else 0

    def acquire(self) -> bool:
        """Renew the lease if held, else take it if it is free (or its holder is a dead
        process on this machine, e.g. after a SIGKILL) under a new epoch; True while
        we hold it."""
        if self.held:
            return self.keep(force=True)
        leases = self.store.leases
        fence = leases.take_fenced(self.name, self.holder, self.ttl_s)
        if fence is None:
            current = self.current_holder()
            if current and _dead_here(current):
                fence = leases.steal_fenced(self.name, current, self.holder, self.ttl_s)
        if fence is not None:
            self._fence, self.held, self._renewed_at = fence, True, time.time()
        return self.held

    def keep(self, force: bool = False) -> bool:
        """Renew when a third of the lease is used up; False if it was lost (taken
        under a newer epoch). A lost lease is only taken again by :meth:`acquire`, so
        the caller learns of the loss and starts over as a new leader."""
        if not self.held or self._fence is None:
            return False
        if force or time.time() - self._renewed_at >= self.ttl_s / 3:
            if not self.store.leases.renew_fenced(self._fence, self.ttl_s):
                self.held = False
                return False
            self._renewed_at = time.time()
        return True

    def still_ours(self) -> bool:
        """Whether the store still names this process and epoch as the holder (a read,
        before a write that cannot share the store's transaction, like the sheet's)."""
        if self.held and self._fence is not None and not self.store.leases.holds(self._fence):
            self.held = False
        return self.held

    def step_down(self) -> None:
        """Forget the lease after a write was refused; the fence stays stale."""
        self.held = False

    def release(self) -> None:
        if self.held and self._fence is not None:
            self.store.leases.release_fenced(self._fence)
            self.held = False

    def current_holder(self) -> str:
        found = self.store.lease_holder(self.name)
        return found[0] if found else ""


def _dead_here(holder: str) -> bool:
    """True when ``holder`` names a process on this machine that no longer exists."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
