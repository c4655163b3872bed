"""One active scheduler per store; others wait as hot standbys.

The leader holds a lease row in the store and renews it well before it expires. A
standby (a second ``sheetops run`` on the same store, on this machine or another) reads
the sheet and keeps its workers warm, but fires nothing and writes nothing to the sheet
until the lease expires — then it takes over within ``ttl_s``, catching up the runs
its predecessor missed.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

from sheetops.store import Store

SCHEDULER = "scheduler"


class Lease:
    def __init__(self, store: Store, name: str = SCHEDULER, ttl_s: float = 15.0,
                 holder: str | None = None) -> None:
        self.store = store
        self.name = name
        self.ttl_s = ttl_s
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._renewed_at = 0.0
        self.held = False

    def acquire(self) -> bool:
        """Take the lease if it is free (or its holder is a dead process on this
        machine, e.g. after a SIGKILL); True while we hold it."""
        self.held = self.store.try_lease(self.name, self.holder, self.ttl_s)
        if not self.held:
            current = self.current_holder()
            if current and _dead_here(current):
                self.held = self.store.steal_lease(self.name, current, self.holder,
                                                   self.ttl_s)
        if self.held:
            self._renewed_at = time.time()
        return self.held

    def keep(self) -> bool:
        """Renew when a third of the lease is used up; False if it was lost."""
        if not self.held:
            return False
        if time.time() - self._renewed_at >= self.ttl_s / 3:
            return self.acquire()
        return True

    def release(self) -> None:
        if self.held:
            self.store.release_lease(self.name, self.holder)
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
