"""The durable queue on the store's SQL database: SQLite (embedded default) and
PostgreSQL, chosen by dialect from :data:`DIALECTS`.

Only two things differ between them, and they live in one small class each:

* taking the write lock: SQLite serialises writers, so a unit of work starts with
  ``BEGIN IMMEDIATE`` (a claim then never fails half way with "database is locked";
  other processes wait on the store's ``busy_timeout``); PostgreSQL needs nothing;
* the claim statement: on SQLite one ``UPDATE … WHERE id IN (SELECT … LIMIT n)
  RETURNING``; on PostgreSQL a ``SELECT … FOR UPDATE SKIP LOCKED`` in a CTE joined by
  ``UPDATE … RETURNING``, so concurrent claimers take different rows without waiting.

No advisory or session-level locks: every guarantee holds inside one transaction, so it
works behind a transaction-pooling PgBouncer. Times come from the ``now`` function
(``time.time`` by default; tests inject a clock); the machines of a fleet must agree on
the time to well within a lease's grace (NTP).

    queues = Queues(store)
    stage1 = queues.queue("stage1", max_deliveries=5)
    stage1.put([{"id": 1}, {"id": 2}], keys=["1", "2"])
    claims = stage1.claim(500, consumer="worker-1", lease_s=lease_for(timeout_s=60))
    with queues.transaction() as tx:          # exactly-once hand-off to stage 2
        tx.put("stage2", [transform(c.payload) for c in claims])
        tx.ack(claims)
"""

from __future__ import annotations

import json
import os
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Connection,
    Engine,
    and_,
    any_,
    case,
    create_engine,
    delete,
    event,
    func,
    inspect,
    literal,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool, QueuePool

from sheetops.store.db import sqlite_setup
from sheetops.store.queue import (
    MAX_DELIVERIES,
    Claim,
    DeadLetter,
    ErrorInfo,
    Payload,
    Queue,
    QueueDepth,
    QueueError,
    QueueTransaction,
    StaleClaim,
)
from sheetops.store.schema import DEAD, LIVE, queue_items

q = queue_items.c
#: Ids per ``IN (…)`` list, well under SQLite's bound-parameter limit.
CHUNK = 500
_CLAIM_COLUMNS = (q.id, q.key, q.payload, q.deliveries, q.priority, q.created_at, q.state)


def _claimable(queue: str, now: float):
    """Live items of ``queue`` due now: waiting past their delay, or leased and expired."""
    return and_(q.queue == queue, q.state == LIVE, q.visible_at <= now)


def _held(id_in, token: str, now: float):
    """Items still leased under ``token``: the fence every ack, nack, extend checks."""
    return and_(id_in, q.token == token, q.state == LIVE, q.visible_at >= now)


@dataclass(frozen=True)
class NewItems:
    """One put: payloads already as JSON text, one key (or ``None``) each."""

    queue: str
    keys: list[str | None]
    payloads: list[str]
    priority: int
    visible_at: float
    created_at: float
    dedupe: bool

    @property
    def unique_keys(self) -> list[str | None]:
        return self.keys if self.dedupe else [None] * len(self.keys)


_COLUMNS = ("queue, key, unique_key, payload, priority, state, visible_at, created_at, "
            "deliveries")
_ON_CONFLICT = " ON CONFLICT (queue, unique_key) DO NOTHING"


class SqliteQueueSql:
    """SQLite: one writer at a time, taken up front; the claim is one UPDATE."""

    _INSERT = f"INSERT INTO queue_items ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)"

    def insert_rows(self, conn: Connection, new: NewItems) -> list[int]:
        """Insert through the driver's executemany (SQLAlchemy's per-row work would cost
        more than SQLite's); the write lock is held, so every id above the highest one
        before is ours, in insertion order (AUTOINCREMENT never reuses an id)."""
        before = conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM queue_items").scalar()
        conn.exec_driver_sql(self._INSERT + (_ON_CONFLICT if new.dedupe else ""), [
            (new.queue, key, unique, payload, new.priority, LIVE, new.visible_at,
             new.created_at)
            for key, unique, payload in zip(new.keys, new.unique_keys, new.payloads,
                                            strict=True)])
        return list(conn.exec_driver_sql(
            "SELECT id FROM queue_items WHERE id > ? ORDER BY id", (before,)).scalars())

    @staticmethod
    def engine_for(engine: Engine) -> Engine:
        """An engine that keeps its connections: with the store's NullPool every unit of
        work would open the file, set its pragmas and, closing the last connection,
        checkpoint the WAL — most of a claim's cost. Forked children drop the parent's
        connections unclosed, as SQLAlchemy advises."""
        if not isinstance(engine.pool, NullPool):
            return engine
        pooled = create_engine(engine.url, poolclass=QueuePool, pool_size=4,
                               max_overflow=16)
        event.listen(pooled, "connect", sqlite_setup(read_only=False))
        ref = weakref.ref(pooled)
        os.register_at_fork(after_in_child=lambda: (e := ref()) and e.dispose(close=False))
        return pooled

    @staticmethod
    def id_in(ids: Sequence[int]):
        return q.id.in_(ids)

    def begin(self, conn: Connection) -> None:
        dbapi = conn.connection.dbapi_connection
        if not dbapi.in_transaction:  # a caller's connection may already hold it
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def claim(self, queue: str, n: int, now: float, values: dict[str, Any]):
        picked = (select(q.id).where(_claimable(queue, now))
                  .order_by(q.priority.desc(), q.id).limit(n))
        return (update(queue_items).where(q.id.in_(picked.scalar_subquery()))
                .values(**values).returning(*_CLAIM_COLUMNS))


class PostgresQueueSql:
    """PostgreSQL: row locks; concurrent claimers skip each other's rows."""

    _INSERT = (f"INSERT INTO queue_items ({_COLUMNS}) SELECT %(queue)s, k, u, p, "
               "%(priority)s, 'live', %(visible_at)s, %(created_at)s, 0 FROM "
               "unnest(%(keys)s::text[], %(unique)s::text[], %(payloads)s::text[]) "
               "WITH ORDINALITY AS item(k, u, p, n) ORDER BY n")

    def insert_rows(self, conn: Connection, new: NewItems) -> list[int]:
        """One INSERT … SELECT FROM unnest(arrays) per 5,000 items. Rows are inserted in
        the arrays' order, so their ids ascend in it (the ordering SQLAlchemy's own
        bulk RETURNING relies on); skipped duplicates simply leave no id."""
        sql = self._INSERT + (_ON_CONFLICT if new.dedupe else "") + " RETURNING id"
        ids: list[int] = []
        for start in range(0, len(new.keys), 5000):
            end = start + 5000
            ids += sorted(conn.exec_driver_sql(sql, {
                "queue": new.queue, "priority": new.priority, "visible_at": new.visible_at,
                "created_at": new.created_at, "keys": new.keys[start:end],
                "unique": new.unique_keys[start:end],
                "payloads": new.payloads[start:end]}).scalars())
        return ids

    @staticmethod
    def engine_for(engine: Engine) -> Engine:
        return engine

    @staticmethod
    def id_in(ids: Sequence[int]):
        """``id = ANY(array)``: one parameter, where an IN list renders one per id."""
        return q.id == any_(literal(list(ids), ARRAY(BigInteger)))

    def begin(self, conn: Connection) -> None:
        return None

    def claim(self, queue: str, n: int, now: float, values: dict[str, Any]):
        picked = (select(q.id).where(_claimable(queue, now))
                  .order_by(q.priority.desc(), q.id).limit(n)
                  .with_for_update(skip_locked=True).cte("picked"))
        return (update(queue_items).where(q.id == picked.c.id)
                .values(**values).returning(*_CLAIM_COLUMNS))


#: The queue's SQL by SQLAlchemy dialect name.
DIALECTS: dict[str, type[SqliteQueueSql] | type[PostgresQueueSql]] = {
    "sqlite": SqliteQueueSql,
    "postgresql": PostgresQueueSql,
}


def _dumps(payload: Payload, index: int) -> str:
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise QueueError(f"payload {index} cannot be stored as JSON: {exc}") from None


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


def _by_token(claims: Sequence[Claim]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for c in claims:
        groups.setdefault(c.token, []).append(c.id)
    return {token: sorted(ids) for token, ids in groups.items()}


class SqlTransaction(QueueTransaction):
    """Queue operations inside one database transaction (see :class:`QueueTransaction`)."""

    def __init__(self, queues: Queues, connection: Connection) -> None:
        self.queues = queues
        self.connection = connection
        self._sql = queues.sql

    def put(self, queue: str, payloads: Sequence[Payload], *,
            keys: Sequence[str | None] | None = None, delay_s: float = 0,
            priority: int = 0, dedupe: bool = False) -> list[int]:
        if keys is not None and len(keys) != len(payloads):
            raise QueueError(f"{len(keys)} keys for {len(payloads)} payloads")
        if not payloads:
            return []
        now = self.queues.now()
        batch = NewItems(queue, list(keys) if keys is not None else [None] * len(payloads),
                         [_dumps(p, i) for i, p in enumerate(payloads)], int(priority),
                         now + max(0.0, float(delay_s)), now, dedupe)
        return self._sql.insert_rows(self.connection, batch)

    def claim(self, queue: str, n: int, *, consumer: str, lease_s: float) -> list[Claim]:
        if lease_s <= 0:
            raise QueueError(f"lease_s must be positive, not {lease_s!r}")
        now = self.queues.now()
        until = now + lease_s
        token = uuid.uuid4().hex
        limit = self.queues.max_deliveries(queue)
        poisoned = q.deliveries >= limit
        expired = (f"delivered {limit} times and never acked: its worker died, hung or "
                   "outlived its lease each time")
        values = {
            "state": case((poisoned, DEAD), else_=LIVE),
            "token": case((poisoned, None), else_=token),
            "consumer": case((poisoned, None), else_=consumer),
            "claimed_at": case((poisoned, q.claimed_at), else_=now),
            "visible_at": case((poisoned, q.visible_at), else_=until),
            "deliveries": case((poisoned, q.deliveries), else_=q.deliveries + 1),
            "dead_at": case((poisoned, now), else_=None),
            "error_type": case((poisoned, "LeaseExpired"), else_=q.error_type),
            "error": case((poisoned, expired), else_=q.error),
            "traceback": case((poisoned, ""), else_=q.traceback),
        }
        claims: list[Claim] = []
        while len(claims) < n:
            rows = self.connection.execute(
                self._sql.claim(queue, n - len(claims), now, values)).all()
            claims += [Claim(r.id, queue, r.key, json.loads(r.payload), r.deliveries, until,
                             token, r.priority, r.created_at) for r in rows if r.state == LIVE]
            if all(r.state == LIVE for r in rows):  # nothing dead-lettered: no more to take
                break
        claims.sort(key=lambda c: (-c.priority, c.id))
        return claims

    def _fenced(self, claims: Sequence[Claim], values: dict[str, Any] | None) -> None:
        """Update the claims' items with ``values`` (delete them when ``None``) where
        their lease still holds; raise :class:`StaleClaim` naming any that did not."""
        now = self.queues.now()
        stale: list[int] = []
        for token, ids in _by_token(claims).items():
            for chunk in _chunks(ids):
                held = _held(self._sql.id_in(chunk), token, now)
                stmt = (delete(queue_items).where(held) if values is None
                        else update(queue_items).where(held).values(**values))
                touched = set(self.connection.execute(stmt.returning(q.id)).scalars())
                stale += [i for i in chunk if i not in touched]
        if stale:
            raise StaleClaim(stale)

    def ack(self, claims: Sequence[Claim]) -> None:
        self._fenced(claims, None)

    def nack(self, claim: Claim, delay_s: float = 0,
             error: BaseException | str | ErrorInfo | None = None) -> None:
        info = ErrorInfo.of(error)
        if claim.deliveries >= self.queues.max_deliveries(claim.queue):
            self.dead_letter(claim, info)
            return
        self._fenced([claim], {
            "token": None, "consumer": None,
            "visible_at": self.queues.now() + max(0.0, float(delay_s)),
            "error_type": info.type, "error": info.message, "traceback": info.traceback})

    def extend(self, claims: Sequence[Claim], lease_s: float) -> list[Claim]:
        if lease_s <= 0:
            raise QueueError(f"lease_s must be positive, not {lease_s!r}")
        until = self.queues.now() + lease_s
        self._fenced(claims, {"visible_at": until})
        return [replace(c, claimed_until=until) for c in claims]

    def dead_letter(self, claim: Claim, error: BaseException | str | ErrorInfo) -> None:
        info = ErrorInfo.of(error)
        self._fenced([claim], {
            "state": DEAD, "dead_at": self.queues.now(), "token": None, "consumer": None,
            "error_type": info.type, "error": info.message, "traceback": info.traceback})


class SqlQueue(Queue):
    """One named queue of a :class:`Queues`; each call is one transaction."""

    def __init__(self, queues: Queues, name: str, max_deliveries: int) -> None:
        self.queues = queues
        self.name = name
        self.max_deliveries = max_deliveries

    def transaction(self):
        return self.queues.transaction()

    def put(self, payloads: Sequence[Payload], *, keys: Sequence[str | None] | None = None,
            delay_s: float = 0, priority: int = 0, dedupe: bool = False) -> list[int]:
        with self.queues.transaction() as tx:
            return tx.put(self.name, payloads, keys=keys, delay_s=delay_s,
                          priority=priority, dedupe=dedupe)

    def claim(self, n: int, *, consumer: str, lease_s: float) -> list[Claim]:
        with self.queues.transaction() as tx:
            return tx.claim(self.name, n, consumer=consumer, lease_s=lease_s)

    def ack(self, claims: Sequence[Claim]) -> None:
        if claims:
            with self.queues.transaction() as tx:
                tx.ack(claims)

    def nack(self, claim: Claim, delay_s: float = 0,
             error: BaseException | str | ErrorInfo | None = None) -> None:
        with self.queues.transaction() as tx:
            tx.nack(claim, delay_s, error)

    def extend(self, claims: Sequence[Claim], lease_s: float) -> list[Claim]:
        with self.queues.transaction() as tx:
            return tx.extend(claims, lease_s)

    def dead_letter(self, claim: Claim, error: BaseException | str | ErrorInfo) -> None:
        with self.queues.transaction() as tx:
            tx.dead_letter(claim, error)

    def _dead(self, keys: Sequence[str] | None, ids: Sequence[int] | None):
        where = [q.queue == self.name, q.state == DEAD]
        if keys is not None:
            where.append(q.key.in_(list(keys)))
        if ids is not None:
            where.append(q.id.in_(list(ids)))
        return and_(*where)

    def dead_letters(self, limit: int = 100, *, keys: Sequence[str] | None = None,
                     ids: Sequence[int] | None = None) -> list[DeadLetter]:
        with self.queues.engine.connect() as conn:
            rows = conn.execute(select(queue_items).where(self._dead(keys, ids))
                                .order_by(q.dead_at, q.id).limit(limit)).all()
        return [DeadLetter(r.id, r.queue, r.key, json.loads(r.payload), r.deliveries,
                           ErrorInfo(r.error_type or "", r.error or "", r.traceback or ""),
                           r.dead_at, r.created_at, r.priority) for r in rows]

    def requeue(self, ids: Sequence[int] | None = None, *, keys: Sequence[str] | None = None,
                edited: Mapping[int, Payload] | None = None) -> int:
        with self.queues.transaction() as tx:
            conn = tx.connection
            for item_id, payload in (edited or {}).items():
                conn.execute(update(queue_items).where(self._dead(None, [item_id]))
                             .values(payload=_dumps(payload, item_id)))
            result = conn.execute(update(queue_items).where(self._dead(keys, ids)).values(
                state=LIVE, deliveries=0, visible_at=self.queues.now(), dead_at=None,
                token=None, consumer=None, error_type=None, error=None, traceback=None))
            return result.rowcount or 0

    def depth(self) -> QueueDepth:
        return self.queues.depths([self.name]).get(self.name, QueueDepth())

    def oldest_age(self) -> float | None:
        with self.queues.engine.connect() as conn:
            oldest = conn.execute(select(func.min(q.created_at)).where(
                q.queue == self.name, q.state == LIVE)).scalar()
        return None if oldest is None else max(0.0, self.queues.now() - oldest)


def _create_table(engine: Engine) -> None:
    """Create the queue's table unless it exists; two processes starting at once may
    race to it, and the loser finds it made."""
    try:
        queue_items.create(engine, checkfirst=True)
    except DBAPIError:
        if not inspect(engine).has_table(queue_items.name):
            raise


class Queues:
    """The named queues of one store. ``Queues(store)`` or ``Queues(engine)``.

    ``now`` is the clock every lease, delay and age is measured by (``time.time``).
    """

    def __init__(self, store_or_engine: Any, *, now: Callable[[], float] = time.time) -> None:
        engine = getattr(store_or_engine, "engine", store_or_engine)
        if not isinstance(engine, Engine):
            raise QueueError(f"Queues needs a Store or an Engine, not {store_or_engine!r}")
        try:
            self.sql = DIALECTS[engine.dialect.name]()
        except KeyError:
            raise QueueError(f"no durable queue for the {engine.dialect.name!r} database; "
                             f"use one of {', '.join(DIALECTS)}") from None
        self.engine = self.sql.engine_for(engine)
        self._own_engine = self.engine is not engine
        self.now = now
        self._max_deliveries: dict[str, int] = {}
        _create_table(self.engine)

    def dispose(self) -> None:
        """Close the connections this object opened (none when it uses the store's)."""
        if self._own_engine:
            self.engine.dispose()

    def queue(self, name: str, *, max_deliveries: int = MAX_DELIVERIES) -> SqlQueue:
        """The queue ``name`` (created by its first put). ``max_deliveries`` applies to
        every use of the name through this object, transactions included."""
        if max_deliveries < 1:
            raise QueueError(f"max_deliveries must be at least 1, not {max_deliveries!r}")
        self._max_deliveries[name] = max_deliveries
        return SqlQueue(self, name, max_deliveries)

    def max_deliveries(self, name: str) -> int:
        return self._max_deliveries.get(name, MAX_DELIVERIES)

    @contextmanager
    def transaction(self, connection: Connection | None = None) -> Iterator[SqlTransaction]:
        """One unit of work: commits on leaving the block, rolls back on an exception
        (a :class:`StaleClaim` included). With ``connection`` (yours, inside your own
        ``begin()``), the work joins your transaction and you commit or roll it back;
        on SQLite, begin it with the queue's first write or ``BEGIN IMMEDIATE``."""
        if connection is not None:
            self.sql.begin(connection)
            yield SqlTransaction(self, connection)
            return
        with self.engine.connect() as conn:
            self.sql.begin(conn)
            try:
                yield SqlTransaction(self, conn)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def depths(self, names: Sequence[str] | None = None) -> dict[str, QueueDepth]:
        """Depth of every queue (or of ``names``) in one query: for the Queues page,
        Prometheus and alert metrics."""
        now = self.now()
        live, due, leased = q.state == LIVE, q.visible_at <= now, q.token.is_not(None)

        def count(condition):
            return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

        query = select(q.queue, count(and_(live, due)), count(and_(live, ~due, ~leased)),
                       count(and_(live, ~due, leased)), count(q.state == DEAD)
                       ).group_by(q.queue)
        if names is not None:
            query = query.where(q.queue.in_(list(names)))
        with self.engine.connect() as conn:
            return {r[0]: QueueDepth(*(int(v) for v in r[1:])) for r in conn.execute(query)}

    def names(self) -> list[str]:
        """Every queue with an item (live or dead)."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(q.queue).distinct().order_by(q.queue)).scalars())
