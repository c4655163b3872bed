"""SQL of the pipelines: source checkpoints, per-stage counts and the idempotency ledger.

Every function takes the SQLAlchemy ``Connection`` of the caller's transaction — in the
engine, the queue transaction that acks a batch and puts its output — so a checkpoint,
a count or a ledger entry commits together with the hand-off it describes, or not at
all. Works on SQLite and PostgreSQL (``INSERT … ON CONFLICT``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

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
    PIPELINE_TABLES,
    pipeline_checkpoints,
    pipeline_counts,
    pipeline_ledger,
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
    conn.execute(update(pipeline_checkpoints)
                 .where(pipeline_checkpoints.c.pipeline == pipeline)
                 .values(position=json.dumps(position), records=records,
                         state=READ if exhausted else READING, updated_at=time.time()))


def finish_pass(conn: Connection, pipeline: str) -> None:
    """The pass is over: every queue drained. The next run reads the source anew."""
    conn.execute(update(pipeline_checkpoints)
                 .where(pipeline_checkpoints.c.pipeline == pipeline)
                 .values(state=FINISHED, updated_at=time.time()))


def add_counts(conn: Connection, pipeline: str, generation: int, stage: str, *,
               records_in: int = 0, records_out: int = 0, records_failed: int = 0,
               dead_letters: int = 0) -> None:
    """Add to one stage's counts for the pass (same transaction as the hand-off)."""
    c = pipeline_counts.c
    stmt = _insert(conn, pipeline_counts).values(
        pipeline=pipeline, generation=generation, stage=stage, records_in=records_in,
        records_out=records_out, records_failed=records_failed, dead_letters=dead_letters)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=["pipeline", "generation", "stage"],
        set_={"records_in": c.records_in + stmt.excluded.records_in,
              "records_out": c.records_out + stmt.excluded.records_out,
              "records_failed": c.records_failed + stmt.excluded.records_failed,
              "dead_letters": c.dead_letters + stmt.excluded.dead_letters}))


def counts(conn: Connection, pipeline: str, generation: int) -> dict[str, dict[str, int]]:
    """Stage → its counts for the pass."""
    c = pipeline_counts.c
    rows = conn.execute(select(pipeline_counts).where(
        c.pipeline == pipeline, c.generation == generation)).all()
    return {r.stage: {"records_in": r.records_in, "records_out": r.records_out,
                      "records_failed": r.records_failed, "dead_letters": r.dead_letters}
            for r in rows}


def dead_since(conn: Connection, queues: Sequence[str], since: float) -> dict[str, int]:
    """Dead letters per queue made since ``since`` — those the queue made itself when a
    record's worker kept dying (``LeaseExpired``) included."""
    q = queue_items.c
    rows = conn.execute(select(q.queue, func.count()).where(
        q.queue.in_(list(queues)), q.state == DEAD, q.dead_at >= since).group_by(q.queue))
    return {name: int(n) for name, n in rows}


def done_keys(conn: Connection, pipeline: str, stage: str, keys: Iterable[str]) -> set[str]:
    """Which of ``keys`` the ledger already holds for (pipeline, stage)."""
    c = pipeline_ledger.c
    found: set[str] = set()
    keys = list(keys)
    for start in range(0, len(keys), _CHUNK):
        found.update(conn.execute(select(c.key).where(and_(
            c.pipeline == pipeline, c.stage == stage,
            c.key.in_(keys[start:start + _CHUNK])))).scalars())
    return found


def mark_done(conn: Connection, pipeline: str, stage: str, keys: Iterable[str]) -> None:
    """Put ``keys`` in the ledger for (pipeline, stage); a key already there stays."""
    now = time.time()
    rows = [{"pipeline": pipeline, "stage": stage, "key": k, "done_at": now} for k in keys]
    if rows:
        conn.execute(_insert(conn, pipeline_ledger).on_conflict_do_nothing(), rows)
