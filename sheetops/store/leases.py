"""Named leases: one active scheduler per store, one migration at a time.

A lease is a row (name, holder, expires_at) taken or renewed by one conditional
``UPDATE`` (or an ``INSERT … ON CONFLICT DO NOTHING``): atomic on SQLite and PostgreSQL,
with no session state, so it works behind PgBouncer in transaction mode.
"""

from __future__ import annotations

import time

from sqlalchemy import delete, select, update

from sheetops.store import schema as t
from sheetops.store.db import Database


class LeaseStore:
    """Take, renew, steal, release and read named leases."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def try_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` unless someone else holds an
        unexpired one; atomic on SQLite and PostgreSQL."""
        now = time.time()
        with self.db.engine.begin() as conn:
            taken = conn.execute(update(t.leases).where(
                t.leases.c.name == name,
                (t.leases.c.holder == holder) | (t.leases.c.expires_at < now))
                .values(holder=holder, expires_at=now + ttl_s)).rowcount
            if taken:
                return True
            stmt = self.db.insert(t.leases).values(name=name, holder=holder,
                                                   expires_at=now + ttl_s)
            return bool(conn.execute(stmt.on_conflict_do_nothing(
                index_elements=["name"])).rowcount)

    def steal_lease(self, name: str, dead_holder: str, holder: str, ttl_s: float) -> bool:
        """Take the lease from ``dead_holder`` (known to be gone) before it expires."""
        with self.db.engine.begin() as conn:
            return bool(conn.execute(update(t.leases).where(
                t.leases.c.name == name, t.leases.c.holder == dead_holder)
                .values(holder=holder, expires_at=time.time() + ttl_s)).rowcount)

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
