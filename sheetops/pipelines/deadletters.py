"""Dead letters of a pipeline job, for people: list, filter, export, replay.

A pipeline's dead letters are its queues' dead items (``<job>.<stage>``), each holding
one record (the engine splits a failing batch down to single records before it
gives up on one). ``sheetops dead-letters`` and ``sheetops replay`` are built on this.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from sheetops.errors import SheetopsError
from sheetops.pipelines import batch as batches
from sheetops.pipelines.model import Pipeline
from sheetops.store.queue_sql import Queues

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from sheetops.store import Store

FORMATS = ("text", "csv", "json")


class ReplayError(SheetopsError):
    """A replay that cannot be done as asked (an edited file that names no dead letter)."""


@dataclass(frozen=True)
class Letter:
    """One dead record, as listed and exported."""

    id: int
    job: str
    stage: str
    key: str
    error_type: str
    message: str
    attempts: int
    dead_at: float
    record: Any
    traceback: str

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.dead_at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def stage_queues(queues: Queues, job: str, stage: str | None = None) -> dict[str, str]:
    """stage → queue name of ``job``'s queues that hold items (or only ``stage``'s)."""
    prefix = f"{job}."
    found = {name[len(prefix):]: name for name in queues.names() if name.startswith(prefix)}
    return {s: n for s, n in found.items() if stage is None or s == stage}


def letters(queues: Queues, job: str, *, stage: str | None = None,
            error_type: str | None = None, since: float | None = None,
            keys: Sequence[str] | None = None, limit: int = 100_000) -> list[Letter]:
    """Dead letters of ``job``, oldest first, filtered by stage, error type, time, keys."""
    out: list[Letter] = []
    for stage_name, queue_name in sorted(stage_queues(queues, job, stage).items()):
        for dead in queues.queue(queue_name).dead_letters(limit, keys=keys):
            if error_type and dead.error.type != error_type:
                continue
            if since is not None and dead.dead_at < since:
                continue
            try:
                item_keys, records = batches.decode(dead.payload)
            except (orjson.JSONDecodeError, KeyError, TypeError):
                item_keys, records = [dead.key or ""], [dead.payload]
            for key, record in zip(item_keys, records, strict=False):
                out.append(Letter(dead.id, job, stage_name, key, dead.error.type,
                                  dead.error.message, dead.deliveries, dead.dead_at, record,
                                  dead.error.traceback))
    out.sort(key=lambda letter: (letter.dead_at, letter.id))
    return out[:limit]


def render(found: Iterable[Letter], fmt: str) -> str:
    """``found`` as a text table, CSV or JSON (tracebacks in JSON only)."""
    found = list(found)
    if fmt == "json":
        return json.dumps([asdict(letter) | {"dead_at": letter.when} for letter in found],
                          indent=2, ensure_ascii=False, default=str)
    columns = ("dead_at", "stage", "key", "error_type", "message", "attempts", "record")
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for letter in found:
            writer.writerow([letter.when, letter.stage, letter.key, letter.error_type,
                             letter.message, letter.attempts,
                             json.dumps(letter.record, ensure_ascii=False)])
        return buffer.getvalue().rstrip("\n")
    lines = [f"{letter.when}  {letter.stage:12} {letter.key:20} {letter.error_type}: "
             f"{letter.message[:80]}" for letter in found]
    return "\n".join(lines)


def read_edited(path: Path) -> list[Any]:
    """Records from a JSON list or a JSON-lines file."""
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        return []
    if text.startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def requeue(queues: Queues, pipe: Pipeline | None, job: str, *, stage: str | None = None,
            keys: Sequence[str] | None = None, edited: Sequence[Any] | None = None) -> int:
    """Put dead letters back on their queues: every one (of ``stage``), those with
    ``keys``, or those whose key an ``edited`` record carries — with that record as
    their new payload (which needs ``pipe``, to key the records; a plain replay, as
    the dashboard does, needs none). Returns how many were requeued."""
    total = 0
    by_stage = stage_queues(queues, job, stage)
    if edited is not None:
        if pipe is None:
            raise ReplayError(f"an edited replay of {job} needs its pipeline")
        fixed = {pipe.key_of(record): record for record in edited}
        matched: set[str] = set()
        for queue_name in by_stage.values():
            queue = queues.queue(queue_name)
            dead = queue.dead_letters(100_000, keys=list(fixed))
            payloads = {d.id: batches.encode([d.key], [fixed[d.key]]) for d in dead
                        if d.key in fixed}
            matched |= {d.key for d in dead if d.key in fixed}
            if payloads:
                total += queue.requeue(list(payloads), edited=payloads)
        missing = sorted(set(fixed) - matched)
        if missing:
            raise ReplayError(f"no dead letter of {job} has the key(s) "
                              f"{', '.join(missing[:10])}; {total} requeued")
        return total
    for queue_name in by_stage.values():
        total += queues.queue(queue_name).requeue(keys=list(keys) if keys else None)
    return total


@dataclass(frozen=True)
class Replayed:
    """What :func:`replay` did: records requeued, and how many of them died again."""

    requeued: int
    dead_again: int

    @property
    def through(self) -> int:
        return self.requeued - self.dead_again


def replay(store: Store | Engine, pipe: Pipeline, job: str, *, stage: str | None = None,
           keys: Sequence[str] | None = None, edited: Sequence[Any] | None = None,
           run_context: Any = None, overrides: Any = None) -> Replayed:
    """Requeue dead letters of ``job`` in ``store`` (a Store or an engine): all of them
    (of ``stage``), or those with ``keys`` and those an ``edited`` record replaces (see
    :func:`requeue`); then run them through the rest of the pipeline now.
    ``sheetops replay`` and the notebook's ``replay`` are this."""
    import time

    queues = Queues(store)
    try:
        if keys is None and edited is None:
            count = requeue(queues, pipe, job, stage=stage)
        else:
            count = ((requeue(queues, pipe, job, stage=stage, edited=edited) if edited else 0)
                     + (requeue(queues, pipe, job, stage=stage, keys=keys) if keys else 0))
        if not count:
            return Replayed(0, 0)
        started = time.time()
        pipe.run(store, job=job, drain_only=True, run_context=run_context,
                 overrides=overrides)
        return Replayed(count, len(letters(queues, job, since=started)))
    finally:
        queues.dispose()
