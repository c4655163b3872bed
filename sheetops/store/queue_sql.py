"""The durable queue on the store's SQL database: SQLite (embedded default) and
PostgreSQL, chosen by dialect from :data:`DIALECTS`.

The hot statements (claim, ack, nack, extend, depths) are SQL written once and run
through the driver, not SQLAlchemy expressions built and compiled on every call. Only
a few things differ between the databases, and they live in one small class each:

* taking the write lock: SQLite serialises writers, so a unit of work starts with
  ``BEGIN IMMEDIATE`` (a claim then never fails half way with "database is locked";
  other processes wait on the store's ``busy_timeout``); PostgreSQL needs nothing;
* the claim statement: on SQLite one ``UPDATE … WHERE id IN (SELECT … LIMIT n)
  RETURNING``; on PostgreSQL a ``SELECT … FOR UPDATE SKIP LOCKED`` in a CTE joined by
  ``UPDATE … RETURNING``, so concurrent claimers take different rows without waiting;
* the parameter style and lists of ids (``IN (…)`` on SQLite, ``= ANY(array)`` on PG).

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
import re
import sqlite3
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    create_engine,
    event,
    func,
    inspect,
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
    JsonText,
    PackedJson,
    Payload,
    Queue,
    QueueDepth,
    QueueError,
    QueueTransaction,
    StaleClaim,
    load_payload,
)
from sheetops.store.schema import DEAD, LIVE, queue_items
from sheetops.store.wal import checkpointer_for

if TYPE_CHECKING:
    from sheetops.store.store import Store

q = queue_items.c
#: Ids per ``IN (…)`` list, well under SQLite's bound-parameter limit.
CHUNK = 500
#: What a committed unit of work is taken to write besides its payloads (a few pages:
#: the rows' leaves and index entries), for the WAL checkpointer's cadence.
UNIT_BYTES = 3 * 4096

# The hot statements (claim, ack, put, depths) are written out once as SQL and run
# through the driver (``exec_driver_sql``): building and compiling them as SQLAlchemy
# expressions on every call cost milliseconds each, more than the work. Parameters are
# written ``:name`` and rewritten to the driver's style by :meth:`_Dialect.sql`.
_POISONED = "deliveries >= :limit"
_CLAIM_SET = f"""
    state = CASE WHEN {_POISONED} THEN :dead ELSE :live END,
    token = CASE WHEN {_POISONED} THEN NULL ELSE :token END,
    consumer = CASE WHEN {_POISONED} THEN NULL ELSE :consumer END,
    claimed_at = CASE WHEN {_POISONED} THEN claimed_at ELSE :now END,
    visible_at = CASE WHEN {_POISONED} THEN visible_at ELSE :until END,
    deliveries = CASE WHEN {_POISONED} THEN deliveries ELSE deliveries + 1 END,
    dead_at = CASE WHEN {_POISONED} THEN :now ELSE NULL END,
    error_type = CASE WHEN {_POISONED} THEN 'LeaseExpired' ELSE error_type END,
    error = CASE WHEN {_POISONED} THEN :expired ELSE error END,
    traceback = CASE WHEN {_POISONED} THEN '' ELSE traceback END"""
#: Live items of the queue due now: waiting past their delay, or leased and expired.
_CLAIMABLE = ("SELECT id FROM queue_items WHERE queue = :queue AND state = :live "
              "AND visible_at <= :now ORDER BY priority DESC, id LIMIT :n")
_RETURNING = "id, key, payload, deliveries, priority, created_at, state"
#: Items still leased under the claim's token: the fence every ack, nack, extend checks.
_HELD = "token = :token AND state = :live AND visible_at >= :now"


def _count(condition: str) -> str:
    return f"coalesce(sum(CASE WHEN {condition} THEN 1 ELSE 0 END), 0)"


_DEPTHS = ("SELECT queue, "
           + ", ".join(_count(c) for c in (
               "state = :live AND visible_at <= :now",
               "state = :live AND visible_at > :now AND token IS NULL",
               "state = :live AND visible_at > :now AND token IS NOT NULL",
               "state = :dead"))
           + " FROM queue_items{where} GROUP BY queue")


@dataclass(frozen=True)
class NewItems:
    """One put: payloads already as stored (JSON text, or packed bytes where the
    database packs), one key (or ``None``) each."""

    queue: str
    keys: list[str | None]
    payloads: list[str | bytes]
    priority: int
    visible_at: float
    created_at: float
    dedupe: bool
    #: put already leased (``put_claimed``): the lease's token and consumer, else None
    token: str | None = None
    consumer: str | None = None

    @property
    def deliveries(self) -> int:
        return 0 if self.token is None else 1

    @property
    def claimed_at(self) -> float | None:
        return None if self.token is None else self.created_at

    @property
    def unique_keys(self) -> list[str | None]:
        return self.keys if self.dedupe else [None] * len(self.keys)


_COLUMNS = ("queue, key, unique_key, payload, priority, state, visible_at, created_at, "
            "deliveries, token, consumer, claimed_at")
_ON_CONFLICT = " ON CONFLICT (queue, unique_key) DO NOTHING"


class _Expr(str):
    """A value of a fenced update that is SQL (of the row's own columns), not data."""

    __slots__ = ()


class _Dialect:
    """What both databases share: statements written once, run through the driver."""

    #: how the driver writes the parameter ``name``
    PARAM = ":{}"
    #: whether the payload column takes :class:`PackedJson` (bytes) as well as text
    PACKS = False

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def sql(self, text: str) -> str:
        """``text`` with its ``:name`` parameters in the driver's style (cached)."""
        done = self._cache.get(text)
        if done is None:
            done = re.sub(r"(?<![:\w]):(\w+)", lambda m: self.PARAM.format(m[1]), text)
            self._cache[text] = done
        return done

    def in_list(self, column: str, name: str, values: Sequence[Any],
                params: dict[str, Any]) -> str:
        """``column IN (…values)`` as SQL, its parameters added to ``params``."""
        names = [f"{name}{i}" for i in range(len(values))]
        params.update(zip(names, values, strict=True))
        return f"{column} IN ({', '.join(':' + n for n in names)})"

    def claim_sql(self) -> str:
        return self.sql(f"UPDATE queue_items SET {_CLAIM_SET} WHERE id IN ({_CLAIMABLE}) "
                        f"RETURNING {_RETURNING}")

    def run(self, conn: Connection, text: str, params: Any) -> Any:
        """Run the driver-style statement ``text`` (rows as ``all()``, ``scalars()``,
        ``scalar()``, ``rowcount``)."""
        return conn.exec_driver_sql(text, params)

    def claim(self, conn: Connection, params: dict[str, Any]) -> list[Any]:
        return self.run(conn, self.claim_sql(), params).all()

    def fenced(self, conn: Connection, ids: Sequence[int], token: str, now: float,
               values: dict[str, Any] | None) -> set[int]:
        """Delete (``values`` ``None``) or update the items ``ids`` still held under
        ``token``; the ids it touched."""
        params: dict[str, Any] = {"token": token, "live": LIVE, "now": now}
        held = f"{self.in_list('id', 'i', ids, params)} AND {_HELD}"
        if values is None:
            text = f"DELETE FROM queue_items WHERE {held} RETURNING id"
        else:
            params.update({f"v_{k}": v for k, v in values.items()
                           if not isinstance(v, _Expr)})
            sets = ", ".join(f"{k} = {v}" if isinstance(v, _Expr) else f"{k} = :v_{k}"
                             for k, v in values.items())
            text = f"UPDATE queue_items SET {sets} WHERE {held} RETURNING id"
        return set(self.run(conn, self.sql(text), params).scalars())

    def depths(self, conn: Connection, now: float, names: Sequence[str] | None
               ) -> list[Any]:
        params: dict[str, Any] = {"live": LIVE, "dead": DEAD, "now": now}
        where = "" if names is None else " WHERE " + self.in_list("queue", "q", names,
                                                                   params)
        return conn.exec_driver_sql(self.sql(_DEPTHS.format(where=where)), params).all()


class _DriverRows:
    """A driver cursor's rows with the part of SQLAlchemy's result the queue uses."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def all(self) -> list[Any]:
        return self._cursor.fetchall()

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._cursor.fetchall()]

    def scalar(self) -> Any:
        row = self._cursor.fetchone()
        return None if row is None else row[0]


class SqliteQueueSql(_Dialect):
    """SQLite: one writer at a time, taken up front; the claim is one UPDATE. Its
    payload column, typed loosely, keeps a :class:`PackedJson` as a BLOB."""

    PACKS = True

    _INSERT = (f"INSERT INTO queue_items ({_COLUMNS}) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

    def insert_rows(self, conn: Connection, new: NewItems, ids: bool = True) -> list[int]:
        """Insert through the driver's executemany (SQLAlchemy's per-row work would cost
        more than SQLite's); the write lock is held, so every id above the highest one
        before is ours, in insertion order (AUTOINCREMENT never reuses an id). With
        ``ids=False`` the ids are not read (``[]``)."""
        rows = [(new.queue, key, unique, payload, new.priority, LIVE, new.visible_at,
                 new.created_at, new.deliveries, new.token, new.consumer, new.claimed_at)
                for key, unique, payload in zip(new.keys, new.unique_keys, new.payloads,
                                                strict=True)]
        sql = self._INSERT + (_ON_CONFLICT if new.dedupe else "")
        if not ids:
            conn.exec_driver_sql(sql, rows)
            return []
        if len(rows) == 1:  # a pipeline's hand-off: one statement, not three
            return list(self.run(conn, sql + " RETURNING id", rows[0]).scalars())
        before = conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM queue_items").scalar()
        conn.exec_driver_sql(sql, rows)
        return list(conn.exec_driver_sql(
            "SELECT id FROM queue_items WHERE id > ? ORDER BY id", (before,)).scalars())

    @staticmethod
    def engine_for(engine: Engine) -> Engine:
        """An engine that keeps its connections: with the store's NullPool every unit of
        work would open the file, set its pragmas and, closing the last connection,
        checkpoint the WAL — most of a claim's cost. Forked children drop the parent's
        connections unclosed, as SQLAlchemy advises.

        Its connections delete with ``secure_delete=FAST``: a build that zeroes every
        freed page (Debian's does) would write each acked batch's pages a second time;
        FAST still zeroes what it can without extra I/O."""
        if not isinstance(engine.pool, NullPool):
            return engine
        pooled = create_engine(engine.url, poolclass=QueuePool, pool_size=4,
                               max_overflow=16, pool_use_lifo=True)
        setup = sqlite_setup(read_only=False)

        def connect(dbapi_connection: Any, record: Any) -> None:
            setup(dbapi_connection, record)
            dbapi_connection.execute("PRAGMA secure_delete=FAST")

        event.listen(pooled, "connect", connect)
        ref = weakref.ref(pooled)
        os.register_at_fork(after_in_child=lambda: (e := ref()) and e.dispose(close=False))
        return pooled

    def begin(self, conn: Connection) -> None:
        dbapi = conn.connection.dbapi_connection
        if not dbapi.in_transaction:  # a caller's connection may already hold it
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def run(self, conn: Connection, text: str, params: Any) -> Any:
        """Inside a transaction SQLAlchemy holds on ``conn`` (every queue transaction,
        begun by :meth:`begin`), on the driver's own connection: SQLAlchemy's result
        machinery costs more than SQLite's work on a hand-off's statements. The
        statement commits or rolls back with that transaction; outside one it goes
        through SQLAlchemy, which begins it. Driver errors are raised as SQLAlchemy's."""
        if not conn.in_transaction():
            return conn.exec_driver_sql(text, params)
        try:
            return _DriverRows(conn.connection.driver_connection.execute(text, params))
        except sqlite3.Error as exc:
            raise DBAPIError.instance(text, params, exc, sqlite3.Error) from exc

    def commit_without_flush(self, conn: Connection) -> None:
        """SQLite in WAL mode with ``synchronous=NORMAL`` does not sync a commit already."""
        return None


class PostgresQueueSql(_Dialect):
    """PostgreSQL: row locks; concurrent claimers skip each other's rows."""

    PARAM = "%({})s"
    _INSERT = (f"INSERT INTO queue_items ({_COLUMNS}) SELECT %(queue)s, k, u, p, "
               "%(priority)s, 'live', %(visible_at)s, %(created_at)s, %(deliveries)s, "
               "%(token)s, %(consumer)s, %(claimed_at)s FROM "
               "unnest(%(keys)s::text[], %(unique)s::text[], %(payloads)b::text[]) "
               "WITH ORDINALITY AS item(k, u, p, n) ORDER BY n")

    def insert_rows(self, conn: Connection, new: NewItems, ids: bool = True) -> list[int]:
        """One INSERT … SELECT FROM unnest(arrays) per 5,000 items; the payloads go as a
        binary array (``%(payloads)b``): in text form the driver escapes every quote of
        every JSON text with a regular expression, which took longer than the insert.
        Rows are inserted in the arrays' order, so their ids ascend in it (the ordering
        SQLAlchemy's own bulk RETURNING relies on); skipped duplicates leave no id. With
        ``ids=False`` nothing is read back (``[]``): the insert may then run in a
        :meth:`~sheetops.store.db.Database.pipeline` block."""
        sql = self._INSERT + (_ON_CONFLICT if new.dedupe else "")
        found: list[int] = []
        for start in range(0, len(new.keys), 5000):
            end = start + 5000
            params = {
                "queue": new.queue, "priority": new.priority, "visible_at": new.visible_at,
                "created_at": new.created_at, "deliveries": new.deliveries,
                "token": new.token, "consumer": new.consumer, "claimed_at": new.claimed_at,
                "keys": new.keys[start:end],
                "unique": new.unique_keys[start:end],
                "payloads": new.payloads[start:end]}
            if ids:
                found += sorted(conn.exec_driver_sql(sql + " RETURNING id", params).scalars())
            else:
                conn.exec_driver_sql(sql, params)
        return found

    @staticmethod
    def engine_for(engine: Engine) -> Engine:
        return engine

    def in_list(self, column: str, name: str, values: Sequence[Any],
                params: dict[str, Any]) -> str:
        """``column = ANY(array)``: one parameter, where an IN list needs one per value."""
        params[name] = list(values)
        cast = "bigint[]" if column == "id" else "text[]"
        return f"{column} = ANY(:{name}::{cast})"

    def begin(self, conn: Connection) -> None:
        return None

    def commit_without_flush(self, conn: Connection) -> None:
        """This transaction's commit does not wait for the WAL to reach the disk."""
        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")

    def claim_sql(self) -> str:
        """The picked rows are locked with SKIP LOCKED, so concurrent claimers take
        different rows without waiting."""
        return self.sql(
            f"WITH picked AS ({_CLAIMABLE} FOR UPDATE SKIP LOCKED) "
            f"UPDATE queue_items SET {_CLAIM_SET} FROM picked "
            f"WHERE queue_items.id = picked.id RETURNING "
            + ", ".join(f"queue_items.{c}" for c in _RETURNING.split(", ")))


#: The queue's SQL by SQLAlchemy dialect name.
DIALECTS: dict[str, type[SqliteQueueSql] | type[PostgresQueueSql]] = {
    "sqlite": SqliteQueueSql,
    "postgresql": PostgresQueueSql,
}
_SHARED: dict[str, _Dialect] = {}


def dialect_sql(conn: Connection) -> SqliteQueueSql | PostgresQueueSql:
    """The driver-SQL helper for ``conn``'s database (for the other store modules that
    run hot statements through the driver, like the pipeline ledger)."""
    name = conn.dialect.name
    if name not in _SHARED:
        _SHARED[name] = DIALECTS[name]()
    return _SHARED[name]  # type: ignore[return-value]


def put_in(connection: Connection, queue: str, payloads: Sequence[Payload], *,
           keys: Sequence[str | None] | None = None, ids: bool = True) -> list[int]:
    """Put ``payloads`` on ``queue`` inside the caller's transaction on ``connection``,
    for code that holds a connection of the store but not its :class:`Queues` (the rows
    it writes and the items commit together). Same as ``tx.put`` otherwise; with
    ``ids=False`` the new items' ids are not read back (``[]``)."""
    if keys is not None and len(keys) != len(payloads):
        raise QueueError(f"{len(keys)} keys for {len(payloads)} payloads")
    if not payloads:
        return []
    sql = DIALECTS[connection.dialect.name]()
    sql.begin(connection)
    now = time.time()
    batch = NewItems(queue, list(keys) if keys is not None else [None] * len(payloads),
                     _stored(payloads, sql.PACKS), 0, now, now, False)
    return sql.insert_rows(connection, batch, ids)


def _dumps(payload: Payload, index: int) -> str:
    try:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise QueueError(f"payload {index} cannot be stored as JSON: {exc}") from None


def _stored(payloads: Sequence[Payload], packs: bool) -> list[str | bytes]:
    """The payloads as the column keeps them: JSON text (a :class:`JsonText` as it is,
    anything else encoded), or a :class:`PackedJson` as it is where the database
    ``packs`` (else unpacked to its text)."""
    out: list[str | bytes] = []
    for i, p in enumerate(payloads):
        if isinstance(p, PackedJson):
            out.append(p if packs else PackedJson.unpack(p).decode())
        else:
            out.append(p if isinstance(p, JsonText) else _dumps(p, i))
    return out


def _raw(stored: str | bytes) -> str | bytes:
    """A payload as stored, for a ``raw`` claim: JSON text, or PackedJson bytes."""
    return stored if isinstance(stored, str | bytes) else str(stored)


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
        #: payload bytes this unit of work put (see :class:`~sheetops.store.wal.WalCheckpointer`)
        self.written = 0

    def without_flush(self) -> None:
        self._sql.commit_without_flush(self.connection)

    def put(self, queue: str, payloads: Sequence[Payload], *,
            keys: Sequence[str | None] | None = None, delay_s: float = 0,
            priority: int = 0, dedupe: bool = False) -> list[int]:
        if keys is not None and len(keys) != len(payloads):
            raise QueueError(f"{len(keys)} keys for {len(payloads)} payloads")
        if not payloads:
            return []
        now = self.queues.now()
        batch = NewItems(queue, list(keys) if keys is not None else [None] * len(payloads),
                         _stored(payloads, self.queues.packs), int(priority),
                         now + max(0.0, float(delay_s)), now, dedupe)
        self.written += sum(map(len, batch.payloads))
        return self._sql.insert_rows(self.connection, batch)

    def put_claimed(self, queue: str, payloads: Sequence[Payload], *,
                    keys: Sequence[str | None] | None = None, consumer: str,
                    lease_s: float, priority: int = 0) -> list[Claim]:
        if lease_s <= 0:
            raise QueueError(f"lease_s must be positive, not {lease_s!r}")
        if keys is not None and len(keys) != len(payloads):
            raise QueueError(f"{len(keys)} keys for {len(payloads)} payloads")
        if not payloads:
            return []
        now = self.queues.now()
        keys = list(keys) if keys is not None else [None] * len(payloads)
        token = uuid.uuid4().hex
        batch = NewItems(queue, keys, _stored(payloads, self.queues.packs),
                         int(priority), now + lease_s, now, False, token, consumer)
        self.written += sum(map(len, batch.payloads))
        ids = self._sql.insert_rows(self.connection, batch)
        return [Claim(i, queue, k, p, 1, now + lease_s, token, int(priority), now)
                for i, k, p in zip(ids, keys, payloads, strict=True)]

    def release(self, claims: Sequence[Claim]) -> int:
        return self._fenced(claims, {"token": None, "consumer": None,
                                     "visible_at": self.queues.now(),
                                     "deliveries": _Expr("CASE WHEN deliveries > 0 THEN "
                                                         "deliveries - 1 ELSE 0 END")},
                            strict=False)

    def release_consumer(self, consumer: str, blamed: Sequence[int] = ()) -> int:
        params: dict[str, Any] = {"consumer": consumer, "live": LIVE, "now": self.queues.now()}
        blame = (self._sql.in_list("id", "b", list(blamed), params) if blamed
                 else "1 = 0")
        text = ("UPDATE queue_items SET token = NULL, consumer = NULL, visible_at = :now, "
                f"deliveries = CASE WHEN {blame} OR deliveries = 0 THEN deliveries "
                "ELSE deliveries - 1 END WHERE consumer = :consumer AND state = :live")
        return self.connection.exec_driver_sql(self._sql.sql(text), params).rowcount

    def claim(self, queue: str, n: int, *, consumer: str, lease_s: float,
              raw: bool = False) -> list[Claim]:
        if lease_s <= 0:
            raise QueueError(f"lease_s must be positive, not {lease_s!r}")
        now = self.queues.now()
        until = now + lease_s
        limit = self.queues.max_deliveries(queue)
        params = {
            "queue": queue, "live": LIVE, "dead": DEAD, "now": now, "until": until,
            "token": uuid.uuid4().hex, "consumer": consumer, "limit": limit,
            "expired": f"delivered {limit} times and never acked: its worker died, hung "
                       "or outlived its lease each time"}
        decode = _raw if raw else load_payload
        claims: list[Claim] = []
        while len(claims) < n:
            rows = self._sql.claim(self.connection, {**params, "n": n - len(claims)})
            claims += [Claim(r[0], queue, r[1], decode(r[2]), r[3], until, params["token"],
                             r[4], r[5]) for r in rows if r[6] == LIVE]
            if all(r[6] == LIVE for r in rows):  # nothing dead-lettered: no more to take
                break
        claims.sort(key=lambda c: (-c.priority, c.id))
        return claims

    def _fenced(self, claims: Sequence[Claim], values: dict[str, Any] | None,
                strict: bool = True) -> int:
        """Update the claims' items with ``values`` (delete them when ``None``) where
        their lease still holds; raise :class:`StaleClaim` naming any that did not
        (unless not ``strict``). Returns how many were touched."""
        now = self.queues.now()
        stale: list[int] = []
        done = 0
        for token, ids in _by_token(claims).items():
            for chunk in _chunks(ids):
                touched = self._sql.fenced(self.connection, chunk, token, now, values)
                stale += [i for i in chunk if i not in touched]
                done += len(touched)
        if stale and strict:
            raise StaleClaim(stale)
        return done

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

    def dead_letter(self, claim: Claim, error: BaseException | str | ErrorInfo, *,
                    per_key: bool = False) -> None:
        info = ErrorInfo.of(error)
        now = self.queues.now()
        values = {"state": DEAD, "dead_at": now, "token": None, "consumer": None,
                  "error_type": info.type, "error": info.message,
                  "traceback": info.traceback}
        older = self._dead_with_key(claim) if per_key and claim.key is not None else None
        if older is None:
            self._fenced([claim], values)
            return
        self.connection.exec_driver_sql(self._sql.sql(
            "UPDATE queue_items SET payload = (SELECT payload FROM queue_items WHERE "
            "id = :item), deliveries = :deliveries, dead_at = :now, error_type = :type, "
            "error = :error, traceback = :traceback WHERE id = :older"), {
                "item": claim.id, "deliveries": claim.deliveries, "now": now,
                "type": info.type, "error": info.message, "traceback": info.traceback,
                "older": older})
        self._fenced([claim], None)

    def _dead_with_key(self, claim: Claim) -> int | None:
        """The id of a dead letter of the claim's queue with the claim's key."""
        return self.connection.exec_driver_sql(self._sql.sql(
            "SELECT id FROM queue_items WHERE queue = :queue AND state = :dead AND "
            "key = :key AND id <> :item ORDER BY id LIMIT 1"),
            {"queue": claim.queue, "dead": DEAD, "key": claim.key, "item": claim.id}
        ).scalar()


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

    def claim(self, n: int, *, consumer: str, lease_s: float,
              raw: bool = False) -> list[Claim]:
        """A claim on its own: its commit does not wait for the disk (PostgreSQL). A
        claim is a lease, redone if forgotten: only a database crash can forget it, and
        then its items are claimable again and the delivery it counted is not counted;
        what settles a claim (ack, nack, a hand-off) commits durably, and flushes it."""
        with self.queues.transaction() as tx:
            tx.without_flush()
            return tx.claim(self.name, n, consumer=consumer, lease_s=lease_s, raw=raw)

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

    def dead_letter(self, claim: Claim, error: BaseException | str | ErrorInfo, *,
                    per_key: bool = False) -> None:
        with self.queues.transaction() as tx:
            tx.dead_letter(claim, error, per_key=per_key)

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
        return [DeadLetter(r.id, r.queue, r.key, load_payload(r.payload), r.deliveries,
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

    def claimable(self) -> bool:
        with self.queues.engine.connect() as conn:
            return conn.exec_driver_sql(self.queues.sql.sql(_CLAIMABLE), {
                "queue": self.name, "live": LIVE, "now": self.queues.now(), "n": 1}
            ).first() is not None

    def oldest_age(self) -> float | None:
        with self.queues.engine.connect() as conn:
            oldest = conn.execute(select(func.min(q.created_at)).where(
                q.queue == self.name, q.state == LIVE)).scalar()
        return None if oldest is None else max(0.0, self.queues.now() - oldest)


def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    """The queue's own connections leave checkpoints to its :class:`WalCheckpointer`."""
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")


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

    def __init__(self, store_or_engine: Store | Engine, *,
                 now: Callable[[], float] = time.time) -> None:
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
        #: checkpoints the WAL off the writers' path (SQLite, on connections of our own)
        self.wal = checkpointer_for(self.engine) if self._own_engine else None
        if self.wal is not None:
            event.listen(self.engine, "connect", _no_autocheckpoint)
        self.now = now
        #: whether payloads may be put as :class:`PackedJson` (the dialect's ``PACKS``)
        self.packs = self.sql.PACKS
        self._max_deliveries: dict[str, int] = {}
        _create_table(self.engine)

    def dispose(self) -> None:
        """Close the connections this object opened (none when it uses the store's)."""
        if self.wal is not None:
            self.wal.stop()
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
            tx = SqlTransaction(self, conn)
            try:
                yield tx
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        if self.wal is not None:
            self.wal.wrote(tx.written + UNIT_BYTES)

    def depths(self, names: Sequence[str] | None = None) -> dict[str, QueueDepth]:
        """Depth of every queue (or of ``names``) in one query: for the Queues page,
        Prometheus and alert metrics."""
        with self.engine.connect() as conn:
            rows = self.sql.depths(conn, self.now(), None if names is None else list(names))
        return {r[0]: QueueDepth(*(int(v) for v in r[1:])) for r in rows}

    def names(self) -> list[str]:
        """Every queue with an item (live or dead)."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(q.queue).distinct().order_by(q.queue)).scalars())
