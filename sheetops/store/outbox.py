"""The sheet outbox: which tabs have changes the status writer has not delivered yet.

Entries are written with the runs they describe (:meth:`RunStore.record`); the status
writer reads what is pending, renders those tabs, writes them and marks exactly the
entries it saw as delivered.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import delete, func, select, update

from sheetops.store import schema as t
from sheetops.store.db import Database


class OutboxStore:
    """The ``outbox`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def mark_outbox_delivered(self, up_to_id: int | None = None,
                              ids: Sequence[int] | None = None) -> None:
        """Mark outbox entries delivered: exactly ``ids`` (what a flush saw before it
        rendered), or every pending entry up to ``up_to_id``.

        Prefer ``ids``: on PostgreSQL a transaction holding a lower id can commit
        after one holding a higher id, so "everything up to the highest id seen" could
        swallow a change the flush never rendered.
        """
        now = time.time()
        with self.db.engine.begin() as conn:
            if ids is not None:
                chosen = sorted(ids)
                for start in range(0, len(chosen), 500):
                    conn.execute(update(t.outbox).where(
                        t.outbox.c.delivered_at.is_(None),
                        t.outbox.c.id.in_(chosen[start:start + 500]))
                        .values(delivered_at=now))
            elif up_to_id is not None:
                conn.execute(update(t.outbox).where(t.outbox.c.delivered_at.is_(None),
                                                    t.outbox.c.id <= up_to_id)
                             .values(delivered_at=now))

    def pending_outbox(self) -> tuple[int, set[str], int, float | None]:
        """``(highest id, tabs touched, count, oldest created_at)`` of undelivered
        outbox entries."""
        by_tab = self.pending_by_tab()
        if not by_tab:
            return 0, set(), 0, None
        return (max(r[1] for r in by_tab.values()), set(by_tab),
                sum(r[0] for r in by_tab.values()), min(r[2] for r in by_tab.values()))

    def pending_by_tab(self) -> dict[str, tuple[int, int, float]]:
        """Per tab with undelivered entries: ``(count, highest id, oldest created_at)``."""
        o = t.outbox.c
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(o.tab, func.count(), func.max(o.id),
                                       func.min(o.created_at))
                                .where(o.delivered_at.is_(None)).group_by(o.tab)).all()
        return {r[0]: (int(r[1]), int(r[2]), float(r[3])) for r in rows}

    def prune_outbox(self, delivered_before: float) -> int:
        """Delete outbox entries delivered before ``delivered_before`` (they have done
        their job); pending entries are never touched. Returns how many went."""
        with self.db.engine.begin() as conn:
            n = conn.execute(delete(t.outbox).where(
                t.outbox.c.delivered_at < delivered_before)).rowcount
        return n or 0

    def pending_outbox_entries(self) -> list[tuple[int, str]]:
        """``(id, tab)`` of every undelivered outbox entry, oldest first."""
        with self.db.engine.connect() as conn:
            return [(r[0], r[1]) for r in conn.execute(
                select(t.outbox.c.id, t.outbox.c.tab)
                .where(t.outbox.c.delivered_at.is_(None)).order_by(t.outbox.c.id))]
