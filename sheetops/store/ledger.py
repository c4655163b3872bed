"""SQL of the pipelines: source checkpoints, per-stage counts and the idempotency ledger.

Every function takes the SQLAlchemy ``Connection`` of the caller's transaction — in the
engine, the queue transaction that acks a batch and puts its output — so a checkpoint,
a count or a ledger entry commits together with the hand-off it describes, or not at
all. Works on SQLite and PostgreSQL (``INSERT … ON CONFLICT``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from sheetops.store.queue_sql import dialect_sql
from sheetops.store.schema import (
    CHECKPOINT_FINISHED as FINISHED,
)
from sheetops.store.schema import (
    CHECKPOINT_READ as READ,
)
from sheetops.store.schema import (
    CHECKPOINT_READING as READING,
)
from sheetops.store.schema import (
    DEAD,
    PIPELINE_COUNTS,
    PIPELINE_TABLES,
    pipeline_checkpoints,
    pipeline_counts,
    queue_items,
)

_INSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
#: keys per ``IN (…)`` list
_CHUNK = 500


def create_tables(engine: Engine) -> None:
    """Create the pipeline tables unless they exist (two processes may race to it)."""
    for table in PIPELINE_TABLES:
        try:
            table.create(engine, checkfirst=True)
        except DBAPIError:
            if not inspect(engine).has_table(table.name):
                raise


def _insert(conn: Connection, table):
    return _INSERT[conn.dialect.name](table)


@dataclass(frozen=True)
class Checkpoint:
    """Where a pipeline's current pass over its source stands."""

    pipeline: str
    generation: int
    position: Any
    state: str
    records: int
    started_at: float

    @property
    def reading(self) -> bool:
        """The source has more to read in this pass."""
        return self.state == READING


def checkpoint(conn: Connection, pipeline: str) -> Checkpoint | None:
    row = conn.execute(select(pipeline_checkpoints).where(
        pipeline_checkpoints.c.pipeline == pipeline)).first()
    if row is None:
        return None
    return Checkpoint(row.pipeline, row.generation,
                      None if row.position is None else json.loads(row.position),
                      row.state, row.records, row.started_at)


def begin_pass(conn: Connection, pipeline: str, new: bool = True) -> Checkpoint:
    """The pass to work on: the unfinished one (a run that was killed, or whose queues
    still hold work), else a new one reading the source from its beginning — or, with
    ``new=False`` (a replay), the last one, finished or not."""
    current = checkpoint(conn, pipeline)
    if current is not None and (current.state != FINISHED or not new):
        return current
    now = time.time()
    generation = 1 if current is None else current.generation + 1
    values = {"generation": generation, "position": None, "state": READING, "records": 0,
              "started_at": now, "updated_at": now}
    stmt = _insert(conn, pipeline_checkpoints).values(pipeline=pipeline, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["pipeline"], set_=values))
    return Checkpoint(pipeline, generation, None, READING, 0, now)


def save_position(conn: Connection, pipeline: str, position: Any, records: int,
                  exhausted: bool = False) -> None:
    """Note the source's position after a batch just put (same transaction)."""
    sql = dialect_sql(conn)
    sql.run(conn, sql.sql(
        "UPDATE pipeline_checkpoints SET position = :position, records = :records, "
        "state = :state, updated_at = :now WHERE pipeline = :pipeline"),
        {"position": json.dumps(position), "records": records,
         "state": READ if exhausted else READING, "now": time.time(),
         "pipeline": pipeline})


def finish_pass(conn: Connection, pipeline: str) -> None:
    """The pass is over: every queue drained. The next run reads the source anew; the
    pass's counts are folded into one row per stage (:func:`_fold_counts`)."""
    current = checkpoint(conn, pipeline)
    conn.execute(update(pipeline_checkpoints)
                 .where(pipeline_checkpoints.c.pipeline == pipeline)
                 .values(state=FINISHED, updated_at=time.time()))
    if current is not None:
        _fold_counts(conn, pipeline, current.generation)


_ADD_COUNTS = (
    "INSERT INTO pipeline_counts (pipeline, generation, stage, shard, records_in, "
    "records_out, records_failed, dead_letters) VALUES (:pipeline, :generation, :stage, "
    ":shard, :records_in, :records_out, :records_failed, :dead_letters) "
    "ON CONFLICT (pipeline, generation, stage, shard) DO UPDATE SET "
    + ", ".join(f"{c} = pipeline_counts.{c} + excluded.{c}" for c in PIPELINE_COUNTS))
#: The pass's end folds its shards into one row per stage (shard '').
_FOLD_COUNTS = (
    "INSERT INTO pipeline_counts (pipeline, generation, stage, shard, "
    + ", ".join(PIPELINE_COUNTS) + ") SELECT pipeline, generation, stage, '', "
    + ", ".join(f"SUM({c})" for c in PIPELINE_COUNTS) + " FROM pipeline_counts "
    "WHERE pipeline = :pipeline AND generation = :generation AND shard <> '' "
    "GROUP BY pipeline, generation, stage "
    "ON CONFLICT (pipeline, generation, stage, shard) DO UPDATE SET "
    + ", ".join(f"{c} = pipeline_counts.{c} + excluded.{c}" for c in PIPELINE_COUNTS))
_HOST = socket.gethostname()[:64]


def _shard() -> str:
    """This thread's counts row: a thread commits one hand-off at a time, so no two
    concurrent transactions ever update the same row (one would wait for the other's
    commit to reach the disk); a reader sums a stage's shards."""
    return f"{_HOST}:{os.getpid()}:{threading.get_native_id()}"


def add_counts(conn: Connection, pipeline: str, generation: int, stage: str, *,
               records_in: int = 0, records_out: int = 0, records_failed: int = 0,
               dead_letters: int = 0) -> None:
    """Add to one stage's counts for the pass (same transaction as the hand-off), in this
    thread's shard (:func:`_shard`). Runs once per batch, so it is SQL written once,
    not an expression built per call."""
    sql = dialect_sql(conn)
    sql.run(conn, sql.sql(_ADD_COUNTS), {
        "pipeline": pipeline, "generation": generation, "stage": stage, "shard": _shard(),
        "records_in": records_in, "records_out": records_out,
        "records_failed": records_failed, "dead_letters": dead_letters})


def _fold_counts(conn: Connection, pipeline: str, generation: int) -> None:
    """Fold the pass's shards into one row per stage (shard ''), so the table keeps a
    row per stage and pass however many threads counted. Sums are unchanged."""
    sql = dialect_sql(conn)
    params = {"pipeline": pipeline, "generation": generation}
    conn.exec_driver_sql(sql.sql(_FOLD_COUNTS), params)
    conn.exec_driver_sql(sql.sql(
        "DELETE FROM pipeline_counts WHERE pipeline = :pipeline AND "
        "generation = :generation AND shard <> ''"), params)


def counts(conn: Connection, pipeline: str, generation: int) -> dict[str, dict[str, int]]:
    """Stage → its counts for the pass (its shards summed)."""
    c = pipeline_counts.c
    rows = conn.execute(select(c.stage, *(func.sum(c[n]).label(n) for n in PIPELINE_COUNTS))
                        .where(c.pipeline == pipeline, c.generation == generation)
                        .group_by(c.stage)).all()
    return {r.stage: {n: int(r._mapping[n] or 0) for n in PIPELINE_COUNTS} for r in rows}


def dead_since(conn: Connection, queues: Sequence[str], since: float) -> dict[str, int]:
    """Dead letters per queue made since ``since`` — those the queue made itself when a
    record's worker kept dying (``LeaseExpired``) included."""
    q = queue_items.c
    rows = conn.execute(select(q.queue, func.count()).where(
        q.queue.in_(list(queues)), q.state == DEAD, q.dead_at >= since).group_by(q.queue))
    return {name: int(n) for name, n in rows}


def done_keys(conn: Connection, pipeline: str, stage: str, keys: Iterable[str]) -> set[str]:
    """Which of ``keys`` the ledger already holds for (pipeline, stage)."""
    sql = dialect_sql(conn)
    found: set[str] = set()
    keys = list(keys)
    for start in range(0, len(keys), _CHUNK):
        params: dict[str, Any] = {"pipeline": pipeline, "stage": stage}
        among = sql.in_list("key", "k", keys[start:start + _CHUNK], params)
        found.update(conn.exec_driver_sql(sql.sql(
            f"SELECT key FROM pipeline_ledger WHERE pipeline = :pipeline AND "
            f"stage = :stage AND {among}"), params).scalars())
    return found


def mark_done(conn: Connection, pipeline: str, stage: str, keys: Iterable[str]) -> None:
    """Put ``keys`` in the ledger for (pipeline, stage); a key already there stays."""
    now = time.time()
    rows = [{"pipeline": pipeline, "stage": stage, "key": k, "done_at": now} for k in keys]
    if rows:
        conn.exec_driver_sql(dialect_sql(conn).sql(
            "INSERT INTO pipeline_ledger (pipeline, stage, key, done_at) VALUES "
            "(:pipeline, :stage, :key, :done_at) ON CONFLICT DO NOTHING"), rows)
