"""Pipelines in a notebook: one stage on sample records, queue figures, dead letters,
replay.

::

    from sheetops.notebook import dry_run, dead_letters, replay, run, stage_figures

    dry_run(welcome, stage="validate", records=[{...}, {...}])  # effects captured
    run(welcome, config=cfg).stages          # records in/out/failed per stage
    letters = dead_letters("welcome", config=cfg)
    letters.loc[0, "record"]["email"] = "fixed@example.com"
    replay(letters, config=cfg)              # the edited ones with their new record

A stage's dry run is the engine's own :func:`~sheetops.pipelines.process_claim` on a
scratch store: the records go on the stage's queue as a batch, the stage (a sink too)
runs with its retries and the splitting that isolates bad records, under
:func:`~sheetops.dryrun.capture_effects`; what it handed on, the records it set aside
and what it would have sent come back as DataFrames. A SQL sink writes to the scratch
database; its statements are shown as ``sql`` effects. The stage's rate limit is not
applied (nothing leaves, so nothing is spent). Replay goes through
:func:`sheetops.pipelines.deadletters.replay`, as ``sheetops replay`` does.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from sheetops.dryrun import CHANGE_COLUMNS, Effect, capture_effects, cell_changes
from sheetops.errors import SheetopsError
from sheetops.notebook.capture import effects_frame
from sheetops.notebook.config import Config
from sheetops.notebook.display import section
from sheetops.pipelines import Pipeline, StageRuntime, deadletters, get_pipeline, process_claim
from sheetops.pipelines import batch as batches
from sheetops.pipelines.batch import RecordError

if TYPE_CHECKING:
    from sheetops.store import Store

LETTER_COLUMNS = ["id", "job", "stage", "key", "error_type", "message", "attempts",
                  "dead_at", "record", "traceback"]
FIGURE_COLUMNS = ["stage", "queue", "waiting", "ready", "delayed", "claimed", "dead",
                  "records_in", "records_out", "records_failed"]
#: tables of the queues and pipelines themselves: their statements are not the sink's
_INTERNAL = ("queue_items", "pipeline_checkpoints", "pipeline_counts", "pipeline_ledger")


def pipeline_of(target: Pipeline | str) -> Pipeline:
    """``target`` itself, or the pipeline of that name."""
    return target if isinstance(target, Pipeline) else get_pipeline(str(target))


def records_of(records: Sequence[Any] | pd.DataFrame) -> list[Any]:
    """Records from a list or a DataFrame (a blank cell is ``None``, not NaN)."""
    if isinstance(records, pd.DataFrame):
        clean = records.astype(object).where(records.notna(), None)
        return clean.to_dict("records")
    return list(records)


def _records_frame(keys: Sequence[str], records: Sequence[Any]) -> pd.DataFrame:
    if records and all(isinstance(r, Mapping) for r in records):
        frame = pd.DataFrame([dict(r) for r in records])
    else:
        frame = pd.DataFrame({"record": list(records)})
    frame.insert(0, "key", list(keys))
    return frame


def _letters_frame(found: Sequence[deadletters.Letter]) -> pd.DataFrame:
    frame = pd.DataFrame([vars(letter) for letter in found], columns=LETTER_COLUMNS)
    frame["dead_at"] = pd.to_datetime(frame["dead_at"], unit="s", utc=True)
    return frame


@dataclass
class StageDryRun:
    """One stage's dry run: what went in, what it handed on, what it set aside (dead
    letters, with their errors) and the effects it would have had."""

    pipeline: str
    stage: str
    records_in: pd.DataFrame
    records_out: pd.DataFrame
    dead_letters: pd.DataFrame
    effects: pd.DataFrame
    sheet_diff: pd.DataFrame

    @property
    def ok(self) -> bool:
        return self.dead_letters.empty

    def __repr__(self) -> str:
        return (f"StageDryRun({self.pipeline}.{self.stage}: {len(self.records_in)} in, "
                f"{len(self.records_out)} out, {len(self.dead_letters)} dead letter(s), "
                f"{len(self.effects)} effect(s) captured)")

    def _repr_html_(self) -> str:
        letters = self.dead_letters.drop(columns=["traceback", "id", "job"], errors="ignore")
        return section(f"Dry run of stage {self.stage} of {self.pipeline}",
                       {"Records out": self.records_out, "Dead letters": letters,
                        "Captured effects": self.effects,
                        "Sheet cells it would change": self.sheet_diff},
                       note=f"{len(self.records_in)} record(s) in", ok=self.ok)


@contextlib.contextmanager
def _scratch_queues() -> Iterator[Any]:
    from sheetops.store import ledger
    from sheetops.store.db import make_engine
    from sheetops.store.queue_sql import Queues

    with tempfile.TemporaryDirectory(prefix="sheetops-stage-") as folder:
        engine = make_engine(f"sqlite:///{folder}/stage.db")
        ledger.create_tables(engine)
        queues = Queues(engine)
        try:
            yield queues
        finally:
            queues.dispose()
            engine.dispose()


def _sql_effects(engine: Any, effects: list[Effect]) -> Any:
    """Record the statements a SQL sink runs on the scratch database."""
    from sqlalchemy import event

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        lowered = statement.lower()
        if not any(name in lowered for name in _INTERNAL) and not lowered.startswith(
                ("pragma", "begin", "select")):
            effects.append(Effect("sql", statement.split()[0].upper(), statement.strip(),
                                  parameters))

    event.listen(engine, "before_cursor_execute", record)
    return lambda: event.remove(engine, "before_cursor_execute", record)


def _keys(pipe: Pipeline, records: Sequence[Any]) -> list[str]:
    keys = []
    for number, record in enumerate(records, start=1):
        try:
            keys.append(pipe.key_of(record))
        except RecordError:
            keys.append(f"@{number}")  # as the engine keys a source's unkeyed record
    return keys


def _run_context(config: Config | None, job: str) -> Any:
    if config is None or job not in config.snapshot.jobs:
        return None
    from sheetops.pipelines.job import job_context

    return job_context(config.snapshot, job, "", trigger="notebook")[1]


def dry_run_stage(target: Pipeline | str, stage: str, records: Sequence[Any] | pd.DataFrame,
                  *, params: Mapping[str, Any] | None = None, config: Config | None = None,
                  job: str | None = None) -> StageDryRun:
    """Run stage ``stage`` of pipeline ``target`` on ``records``; nothing leaves.

    With ``config`` and a ``job`` of its Jobs tab (default: the pipeline's name), the
    stage gets the row's params and template and the Stages tab's settings."""
    pipe = pipeline_of(target)
    pipe.check()
    names = pipe.stage_names()
    if stage not in names:
        raise SheetopsError(f"pipeline {pipe.name!r} has no stage {stage!r}; its stages: "
                            f"{', '.join(names)}")
    index = names.index(stage)
    job = job or pipe.name
    context = _run_context(config, job)
    overrides = context.request.stages.get(stage, {}) if context is not None else {}
    step = pipe.stages[index]
    settings = step.settings.merged(overrides)
    following = pipe.stages[index + 1].settings.batch_size if index + 1 < len(names) else 1
    items = records_of(records)
    keys = _keys(pipe, items)
    queue = f"{job}.{stage}"
    next_queue = f"{job}.{names[index + 1]}" if index + 1 < len(names) else None
    with _scratch_queues() as queues, capture_effects() as captured:
        forget = _sql_effects(queues.engine, captured.effects)
        try:
            rt = StageRuntime(pipe, step, settings, queues, job, queue, next_queue,
                              following, 1, "notebook-dry-run",
                              run_context=context, stop=threading.Event(),
                              params=dict(params if params is not None else
                                          getattr(context, "params", None) or {}))
            work = queues.queue(queue, max_deliveries=settings.max_deliveries)
            for start in range(0, len(items), settings.batch_size):
                chunk = slice(start, start + settings.batch_size)
                work.put([batches.encode(keys[chunk], items[chunk])],
                         keys=[batches.item_key(keys[chunk])])
            while claims := work.claim(1, consumer="notebook", lease_s=rt.lease_s):
                process_claim(rt, claims[0])
        finally:
            forget()
        out_keys, out_records = _in_input_order(
            keys, *_handed_on(queues, next_queue, keys, items, queue))
        letters = deadletters.letters(queues, job, stage=stage)
        changes = cell_changes(captured.sheet_writes)
    return StageDryRun(pipe.name, stage, _records_frame(keys, items),
                       _records_frame(out_keys, out_records), _letters_frame(letters),
                       effects_frame(captured.rows()),
                       pd.DataFrame(changes, columns=list(CHANGE_COLUMNS)))


def _in_input_order(keys: list[str], out_keys: list[str], out_records: list[Any]
                    ) -> tuple[list[str], list[Any]]:
    """Output in the order of the input records it came from (a split batch's halves
    come back out of order); records with new keys last."""
    position = {key: i for i, key in enumerate(keys)}
    pairs = sorted(zip(out_keys, out_records, strict=True),
                   key=lambda pair: position.get(pair[0], len(position)))
    return [k for k, _ in pairs], [r for _, r in pairs]


def _handed_on(queues: Any, next_queue: str | None, keys: list[str], records: list[Any],
               queue: str) -> tuple[list[str], list[Any]]:
    """What the stage put on the next queue; for a sink, the records it took that did
    not become dead letters."""
    if next_queue is None:
        dead = {d.key for d in queues.queue(queue).dead_letters(100_000)}
        kept = [(k, r) for k, r in zip(keys, records, strict=True) if k not in dead]
        return [k for k, _ in kept], [r for _, r in kept]
    out_keys: list[str] = []
    out_records: list[Any] = []
    following = queues.queue(next_queue)
    while claims := following.claim(100, consumer="notebook", lease_s=60):
        for claim in claims:
            item_keys, item_records = batches.decode(claim.payload)
            out_keys += item_keys
            out_records += item_records
        following.ack(claims)
    return out_keys, out_records


# -- the store: queue figures, dead letters, replay -------------------------------------

def _store(config: Config | None, store: Store | None) -> Store:
    if store is not None:
        return store
    if config is None:
        raise SheetopsError("give config= (the sheet whose store to read) or store=")
    from sheetops.notebook.runs import store_of

    return store_of(config)


def dead_letters(job: str, *, config: Config | None = None, store: Store | None = None,
                 stage: str | None = None, error_type: str | None = None,
                 since: float | None = None, limit: int = 100_000) -> pd.DataFrame:
    """Dead letters of pipeline job ``job``, oldest first: one row per record, with its
    stage, error, attempts, ``dead_at`` (UTC) and the record itself (``record``)."""
    from sheetops.store.queue_sql import Queues

    queues = Queues(_store(config, store))
    try:
        found = deadletters.letters(queues, job, stage=stage, error_type=error_type,
                                    since=since, limit=limit)
    finally:
        queues.dispose()
    return _letters_frame(found)


def stage_figures(job: str, *, config: Config | None = None, store: Store | None = None
                  ) -> pd.DataFrame:
    """Per stage of pipeline job ``job``: its queue now (waiting, ready, delayed,
    claimed, dead) and the current pass's records in/out/failed."""
    from sheetops.store import ledger
    from sheetops.store.queue_sql import Queues

    target = _store(config, store)
    queues = Queues(target)
    try:
        by_stage = {name: f"{job}.{name}" for name in _stage_order(job, config)}
        by_stage |= deadletters.stage_queues(queues, job)
        depths = queues.depths(list(by_stage.values()))
        with queues.engine.connect() as conn:
            point = ledger.checkpoint(conn, job)
            counts = ledger.counts(conn, job, point.generation) if point else {}
    finally:
        queues.dispose()
    rows = []
    for name, queue in by_stage.items():
        depth = depths.get(queue)
        count = counts.get(name, {})
        rows.append({"stage": name, "queue": queue,
                     "waiting": depth.waiting if depth else 0,
                     **{k: getattr(depth, k, 0) for k in ("ready", "delayed", "claimed",
                                                          "dead")},
                     **{k: count.get(k, 0) for k in ("records_in", "records_out",
                                                     "records_failed")}})
    return pd.DataFrame(rows, columns=FIGURE_COLUMNS)


def _stage_order(job: str, config: Config | None) -> list[str]:
    from sheetops.pipelines import PIPELINES

    name = job
    if config is not None and job in config.snapshot.jobs:
        name = config.snapshot.jobs[job].automation
    return PIPELINES[name].stage_names() if name in PIPELINES else []


@dataclass(frozen=True)
class Replayed:
    """What a replay did."""

    job: str
    requeued: int
    through: int
    dead_again: int

    def __repr__(self) -> str:
        return (f"Replayed({self.job}: {self.requeued} record(s) requeued, {self.through} "
                f"went through, {self.dead_again} dead again)")


def replay(letters: pd.DataFrame, *, config: Config | None = None, store: Store | None = None
           ) -> Replayed:
    """Replay the dead letters in ``letters`` (a frame from :func:`dead_letters`, rows
    dropped or records edited as you like): a row whose ``record`` was edited replaces
    its dead letter's record; the others go again as they were. They run through the
    rest of the pipeline now (the job's params, template and Stages settings)."""
    from sheetops.store.queue_sql import Queues

    if letters.empty:
        raise SheetopsError("no dead letters to replay: the frame is empty")
    jobs = sorted(set(letters["job"]))
    if len(jobs) != 1:
        raise SheetopsError(f"replay one job's dead letters at a time, not {jobs}")
    job = jobs[0]
    target = _store(config, store)
    snapshot = config.snapshot if config is not None else None
    from sheetops.pipelines.job import job_context

    pipe, context = job_context(snapshot, job, getattr(target, "url", ""), "notebook")
    queues = Queues(target)
    try:
        stored = {(d.id, d.key): d.record for d in deadletters.letters(queues, job)}
    finally:
        queues.dispose()
    keys: list[str] = []
    edited: list[Any] = []
    for row in letters.itertuples(index=False):
        if (row.id, row.key) not in stored:
            raise SheetopsError(f"dead letter {row.key!r} of {job} is not dead any more "
                                "(replayed already?); read dead_letters() again")
        if "record" in letters.columns and row.record != stored[(row.id, row.key)]:
            edited.append(row.record)
        else:
            keys.append(str(row.key))
    done = deadletters.replay(target, pipe, job, keys=keys or None,
                              edited=edited or None, run_context=context,
                              overrides=context.request.stages if context else None)
    return Replayed(job, done.requeued, done.through, done.dead_again)
