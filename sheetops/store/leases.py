"""Named leases: one active scheduler per store, one migration at a time.

A lease is a row (name, holder, expires_at, epoch) taken or renewed by one conditional
``UPDATE`` (or an ``INSERT … ON CONFLICT DO NOTHING``): atomic on SQLite and PostgreSQL,
with no session state and no advisory lock, so it works behind PgBouncer in transaction
mode.

The scheduler's lease is *fenced*: each new holder raises its ``epoch``, and every write
the holder makes as leader (a fire, a batch of recorded runs) first runs
:meth:`LeaseStore.check_fence` in its own transaction — a no-op ``UPDATE`` of the lease
row that matches only the holder's own epoch. It refuses the write of a holder that was
replaced (say, paused past its lease and woken up), and its row lock orders the write
before any takeover that commits later, so a write and a takeover never interleave.

A holder paused *inside* such a transaction would keep that row lock, and with it every
standby from taking over. On PostgreSQL each fenced transaction therefore sets
``idle_in_transaction_session_timeout`` (``SET LOCAL``: per transaction, so it holds
behind a transaction-pooling PgBouncer) to half the lease's time to live: the server ends
a paused holder's session, its lock goes, and failover stays within the lease's time to
live. SQLite has no server to end a transaction: a holder paused inside a write keeps the
file's write lock (a few milliseconds of each second) until it resumes or dies, and
failover waits for that; a holder that dies releases it at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, Update, delete, select, update

from sheetops.errors import StoreError
from sheetops.store import schema as t
from sheetops.store.db import Database, connection_lost_as_unavailable


@dataclass(frozen=True)
class Fence:
    """Who writes as the lease's holder: the lease name, the holder and its epoch."""

    name: str
    holder: str
    epoch: int
    ttl_s: float = 0.0


class Fenced(StoreError):
    """A write by a lease holder that has been replaced: refused, nothing written."""


class LeaseStore:
    """Take, renew, steal, release and read named leases."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def try_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` unless someone else holds an
        unexpired one; atomic on SQLite and PostgreSQL. (Unfenced: the migration lease,
        taken on stores whose lease table may predate ``epoch``.)"""
        now = time.time()
        with self.db.engine.begin() as conn:
            taken = conn.execute(update(t.leases).where(
                t.leases.c.name == name,
                (t.leases.c.holder == holder) | (t.leases.c.expires_at < now))
                .values(holder=holder, expires_at=now + ttl_s)).rowcount
            if taken:
                return True
            return self._insert_if_absent(conn, name=name, holder=holder,
                                          expires_at=now + ttl_s)

    def _insert_if_absent(self, conn: Connection, **values: object) -> bool:
        """Insert the lease row unless one exists; True if this call inserted it. (Read
        through ``RETURNING``: psycopg reports no rowcount for ``ON CONFLICT DO
        NOTHING``, so a rowcount check would take a held lease on PostgreSQL.)"""
        stmt = self.db.insert(t.leases).values(**values).on_conflict_do_nothing(
            index_elements=["name"]).returning(t.leases.c.name)
        return conn.execute(stmt).first() is not None

    def steal_lease(self, name: str, dead_holder: str, holder: str, ttl_s: float) -> bool:
        """Take the lease from ``dead_holder`` (known to be gone) before it expires."""
        return self.steal_fenced(name, dead_holder, holder, ttl_s) is not None

    def release_lease(self, name: str, holder: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(delete(t.leases).where(t.leases.c.name == name,
                                                t.leases.c.holder == holder))

    def lease_holder(self, name: str, now: float | None = None) -> tuple[str, float] | None:
        """``(holder, expires_at)`` of an unexpired lease, else ``None``."""
        now = time.time() if now is None else now
        with self.db.engine.connect() as conn:
            row = conn.execute(select(t.leases.c.holder, t.leases.c.expires_at)
                               .where(t.leases.c.name == name,
                                      t.leases.c.expires_at >= now)).first()
        return (row.holder, row.expires_at) if row else None

    # -- fenced leases (the scheduler's) --------------------------------------------------
    def take_fenced(self, name: str, holder: str, ttl_s: float) -> Fence | None:
        """Take the lease ``name`` if it is free or expired, under a new epoch (one more
        than any before it); ``None`` while someone holds it."""
        now = time.time()
        with connection_lost_as_unavailable(), self.db.engine.begin() as conn:
            end_if_paused(conn, ttl_s)
            taken = conn.execute(update(t.leases).where(
                t.leases.c.name == name,
                (t.leases.c.expires_at < now) | (t.leases.c.holder == ""))
                .values(holder=holder, expires_at=now + ttl_s,
                        epoch=t.leases.c.epoch + 1)).rowcount
            if not taken and not self._insert_if_absent(
                    conn, name=name, holder=holder, expires_at=now + ttl_s, epoch=1):
                return None
            return self._fence_of(conn, name, holder, ttl_s)

    def steal_fenced(self, name: str, dead_holder: str, holder: str,
                     ttl_s: float) -> Fence | None:
        """Take the lease from ``dead_holder`` (known to be gone), under a new epoch."""
        with connection_lost_as_unavailable(), self.db.engine.begin() as conn:
            end_if_paused(conn, ttl_s)
            if not conn.execute(update(t.leases).where(
                    t.leases.c.name == name, t.leases.c.holder == dead_holder)
                    .values(holder=holder, expires_at=time.time() + ttl_s,
                            epoch=t.leases.c.epoch + 1)).rowcount:
                return None
            return self._fence_of(conn, name, holder, ttl_s)

    def renew_fenced(self, fence: Fence, ttl_s: float) -> bool:
        """Extend the lease while ``fence`` is still its holder and epoch (even if it ran
        out meanwhile and nobody took it); False once someone else has."""
        with connection_lost_as_unavailable(), self.db.engine.begin() as conn:
            end_if_paused(conn, ttl_s)
            return bool(conn.execute(_match(fence).values(
                expires_at=time.time() + ttl_s)).rowcount)

    def release_fenced(self, fence: Fence) -> None:
        """Give the lease up; the row (and its epoch) stays, so epochs never repeat."""
        with connection_lost_as_unavailable(), self.db.engine.begin() as conn:
            end_if_paused(conn, fence.ttl_s)
            conn.execute(_match(fence).values(holder="", expires_at=0.0))

    def holds(self, fence: Fence) -> bool:
        """Whether ``fence`` is still the lease's holder and epoch (a read)."""
        with self.db.engine.connect() as conn:
            return conn.execute(select(t.leases.c.epoch).where(
                t.leases.c.name == fence.name, t.leases.c.holder == fence.holder,
                t.leases.c.epoch == fence.epoch)).first() is not None

    @staticmethod
    def _fence_of(conn: Connection, name: str, holder: str, ttl_s: float) -> Fence:
        epoch = conn.execute(select(t.leases.c.epoch).where(
            t.leases.c.name == name)).scalar_one()
        return Fence(name, holder, int(epoch), ttl_s)


def check_fence(conn: Connection, fence: Fence | None) -> None:
    """In the caller's transaction: raise :class:`Fenced` unless ``fence`` is still the
    lease's holder and epoch, and lock the lease row until the caller commits (a takeover
    waits for the write, then replaces the holder). ``None``: an unfenced writer."""
    if fence is None:
        return
    end_if_paused(conn, fence.ttl_s)
    if not conn.execute(_match(fence).values(epoch=t.leases.c.epoch)).rowcount:
        raise Fenced(f"the {fence.name} lease was taken over (epoch {fence.epoch} of "
                     f"{fence.holder} is stale); nothing was written")


def end_if_paused(conn: Connection, ttl_s: float) -> None:
    """On PostgreSQL, have the server end this transaction's session if its client sits
    idle in it for half of ``ttl_s`` (a paused lease holder; see the module docstring).
    SQLite: nothing to set."""
    if ttl_s > 0 and conn.dialect.name == "postgresql":
        ms = max(1000, int(ttl_s * 500))
        conn.exec_driver_sql(f"SET LOCAL idle_in_transaction_session_timeout = {ms}")


def _match(fence: Fence) -> Update:
    return update(t.leases).where(t.leases.c.name == fence.name,
                                  t.leases.c.holder == fence.holder,
                                  t.leases.c.epoch == fence.epoch)
