"""The sheet outbox: marks saying which sheet tabs (and which keys in them) have changes
the status writer has not delivered yet, on the durable queue :data:`QUEUE`.

A mark is ``(tab, key)``: ``("Runs", "")``, ``("Status", job)``, or a row key of any tab a
renderer writes (docs/queue.md, "The sheet outbox"). Marks are put in the same
transaction as the rows they describe (:meth:`OutboxStore.put` with the caller's
connection), so a change is never in the store without its mark, nor a mark ahead of
its change. The status writer claims them with a lease, renders the tabs they name,
writes once and acks exactly what it claimed; a failed write nacks them with a delay; a
writer killed mid-flush leaves them claimable again when its lease runs out.

On the queue an item's ``key`` is the mark's tab (so pending marks count per tab in one
indexed query) and its payload ``{"tab": …, "key": …}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, func, select

from sheetops.store import schema as t
from sheetops.store.queue import Claim, ErrorInfo
from sheetops.store.queue_sql import Queues, SqlQueue, put_in

#: The durable queue the sheet outbox lives on.
QUEUE = "sheet_outbox"
#: Deliveries before a mark would become a dead letter: never, in practice. A mark only
#: says "render this tab again"; dropping it after a long Google outage (or a writer
#: killed five times) would leave the sheet behind for good.
MAX_DELIVERIES = 1_000_000_000

#: One mark: ``(tab, key)``; ``key`` is ``""`` when the whole tab is rendered anyway.
Mark = tuple[str, str]


@dataclass(frozen=True)
class OutboxClaim:
    """Marks leased to one writer: the keys marked per tab, and the claims to settle."""

    keys: dict[str, frozenset[str]] = field(default_factory=dict)
    claims: tuple[Claim, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.claims)

    def of(self, tabs: Iterable[str]) -> list[Claim]:
        """The claims of the marks on ``tabs``."""
        wanted = set(tabs)
        return [c for c in self.claims if c.payload["tab"] in wanted]


@dataclass(frozen=True)
class OutboxPending:
    """Marks not delivered yet (waiting, delayed after a failed write, or claimed by a
    write in flight): how many, when the oldest was put, how many per tab."""

    count: int = 0
    oldest_at: float | None = None
    by_tab: dict[str, int] = field(default_factory=dict)

    @property
    def tabs(self) -> set[str]:
        return set(self.by_tab)

    def age_s(self, now: float) -> float:
        """Seconds since the oldest pending mark was put (0 when there is none)."""
        return 0.0 if self.oldest_at is None else max(0.0, now - self.oldest_at)


def put_marks(connection: Connection, marks: Iterable[Mark]) -> None:
    """Add ``marks`` inside the caller's transaction on ``connection`` (a store module
    writing the rows a tab shows: the marks commit with them, or neither does). Reads no
    result, so it may run in a :meth:`~sheetops.store.db.Database.pipeline` block."""
    marks = list(marks)
    put_in(connection, QUEUE, [{"tab": tab, "key": key} for tab, key in marks],
           keys=[tab for tab, _key in marks], ids=False)


class OutboxStore:
    """The sheet outbox on the store's durable queue."""

    def __init__(self, queues: Callable[[], Queues]) -> None:
        self._open_queues = queues  # the store's, opened on first use

    @property
    def queue(self) -> SqlQueue:
        return self._open_queues().queue(QUEUE, max_deliveries=MAX_DELIVERIES)

    def put(self, marks: Iterable[Mark], connection: Connection | None = None) -> None:
        """Add ``marks``: inside the caller's transaction on ``connection`` (the rows they
        describe commit with them, or neither does), else in a transaction of their own."""
        marks = list(marks)
        if not marks:
            return
        if connection is not None:
            put_marks(connection, marks)
            return
        with self.queue.queues.transaction() as tx:
            put_marks(tx.connection, marks)

    def claim(self, consumer: str, lease_s: float, limit: int = 100_000) -> OutboxClaim:
        """Lease up to ``limit`` marks that are due (new, past their delay, or left by a
        writer whose lease ran out) to ``consumer`` for ``lease_s`` seconds."""
        claims = self.queue.claim(limit, consumer=consumer, lease_s=lease_s)
        keys: dict[str, set[str]] = {}
        for c in claims:
            keys.setdefault(c.payload["tab"], set()).add(c.payload["key"])
        return OutboxClaim({tab: frozenset(k) for tab, k in keys.items()}, tuple(claims))

    def ack(self, claims: Sequence[Claim]) -> None:
        """The sheet accepted what these marks announced: they are done. Raises
        :class:`~sheetops.store.queue.StaleClaim` (acking none) when the lease ran out."""
        self.queue.ack(claims)

    def nack(self, claims: Sequence[Claim], delay_s: float,
             error: BaseException | str | None = None) -> None:
        """The write failed: the marks are claimable again after ``delay_s``, in one
        transaction. Raises :class:`~sheetops.store.queue.StaleClaim` (changing none)
        when the lease ran out: they are claimable already."""
        if not claims:
            return
        info = ErrorInfo.of(error)
        with self.queue.transaction() as tx:
            for claim in claims:
                tx.nack(claim, delay_s, info)

    def pending(self) -> OutboxPending:
        """What is not delivered yet, per tab (for the gauges, the CLI and the pages)."""
        q = t.queue_items.c
        with self._open_queues().engine.connect() as conn:
            rows = conn.execute(select(q.key, func.count(), func.min(q.created_at))
                                .where(q.queue == QUEUE, q.state == t.LIVE)
                                .group_by(q.key)).all()
        if not rows:
            return OutboxPending()
        return OutboxPending(sum(int(r[1]) for r in rows), min(float(r[2]) for r in rows),
                             {r[0]: int(r[1]) for r in rows})
