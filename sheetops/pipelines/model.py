"""The pipeline model: a named source, stages and a sink, registered like an automation.

    pipe = pipeline("welcome", source=json_pages("http://…/contacts"), key="id")

    @pipe.stage(batch_size=500)
    def validate(records): ...

    @pipe.sink(idempotent=True)
    def deliver(records, ctx): ...

``pipeline(name, …)`` registers an automation ``name`` (the Jobs tab schedules it like
any other); each decorator adds a stage in the order written, the sink last. A stage
takes a list of records and returns (or yields) the records for the next stage —
``None`` passes its input on unchanged; raising fails the batch (retried, then split
to isolate the bad records). Settings given here are the code's defaults; the sheet's
``Stages`` tab overrides them per job and stage.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from sheetops.errors import SheetopsError
from sheetops.pipelines.batch import Keyed, RecordError
from sheetops.pipelines.sources import IterableSource, Source

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from sheetops.store import Store

#: Stage settings the Stages tab may set (its columns after ``job`` and ``stage``).
TUNABLE = ("batch_size", "concurrency", "retries", "timeout_s", "rate_limit", "high_water",
           "processes")


class PipelineError(SheetopsError):
    """A pipeline defined in a way that cannot run (no stages, a duplicate name)."""


@dataclass(frozen=True)
class StageSettings:
    """How one stage runs. ``high_water``: records waiting in the stage's queue at
    which the stage (or source) feeding it waits; 0 means ten batches. ``rate_limit``:
    records per period the stage may take (``10/second``, ``500/minute``); empty, no
    limit. ``processes``: forked processes working the stage, each with ``concurrency``
    threads (for stages whose Python work would take turns on one core in threads);
    0, the run's own process (see :mod:`sheetops.pipelines.processes`)."""

    batch_size: int = 500
    concurrency: int = 1
    retries: int = 2
    timeout_s: float = 60.0
    rate_limit: str = ""
    high_water: int = 0
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    max_deliveries: int = 5
    processes: int = 0

    def merged(self, overrides: Mapping[str, Any]) -> StageSettings:
        """These settings with ``overrides`` (e.g. from the Stages tab) applied."""
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in overrides.items() if k in known})

    @property
    def high_water_records(self) -> int:
        return self.high_water or 10 * self.batch_size


@dataclass
class Stage:
    """One step: ``fn(records)`` or ``fn(records, ctx)``."""

    name: str
    fn: Callable[..., Any]
    settings: StageSettings
    sink: bool = False
    idempotent: bool = False
    sql: bool = False
    takes_ctx: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        params = [p for p in inspect.signature(self.fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self.takes_ctx = len(params) >= 2


KeyFn = Callable[[Any], Any]


class Pipeline:
    """A named source → stages → sink. See the module docstring."""

    def __init__(self, name: str, source: Source | Iterable[Any] | Callable[[], Iterable[Any]],
                 key: str | KeyFn, description: str = "") -> None:
        self.name = name
        self.source: Source = source if hasattr(source, "read") else IterableSource(source)
        self.key = key
        self.description = description
        self.stages: list[Stage] = []

    # -- building ---------------------------------------------------------------
    def _add(self, stage: Stage) -> None:
        for index, existing in enumerate(self.stages):
            if existing.name == stage.name:  # a notebook cell run again, or a stage fixed
                self.stages[index] = stage
                return
        if self.stages and self.stages[-1].sink:
            raise PipelineError(f"pipeline {self.name!r} already ends in the sink "
                                f"{self.stages[-1].name!r}; add stages before it")
        self.stages.append(stage)

    def stage(self, fn: Callable[..., Any] | None = None, *, name: str | None = None,
              **settings: Any) -> Any:
        """Add a stage (decorator, with or without settings)."""

        def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
            self._add(Stage(name or f.__name__, f, StageSettings(**settings)))
            return f

        return decorate(fn) if fn is not None else decorate

    def sink(self, fn: Callable[..., Any] | None = None, *, name: str | None = None,
             idempotent: bool = False, sql: bool = False, **settings: Any) -> Any:
        """Add the last stage, where records leave the pipeline.

        ``idempotent=True``: keys the ledger holds for this sink are skipped, and each
        record the sink yields (or all of them, when it returns) is entered in the
        ledger — a record is delivered once across redeliveries, restarts and replays.
        ``sql=True``: the sink is called inside the hand-off transaction with
        ``ctx.connection``; what it writes there commits with the ack, exactly once."""

        def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
            self._add(Stage(name or f.__name__, f, StageSettings(**settings), sink=True,
                            idempotent=idempotent, sql=sql))
            return f

        return decorate(fn) if fn is not None else decorate

    # -- records ----------------------------------------------------------------
    def key_of(self, record: Any) -> str:
        """The record's stable key (a :class:`Keyed` record carries its own)."""
        if isinstance(record, Keyed):
            return str(record.key)
        try:
            value = self.key(record) if callable(self.key) else record[self.key]
        except (KeyError, IndexError, TypeError) as exc:
            raise RecordError(f"record has no key {self.key!r}: {exc!r}") from None
        if value is None or value == "":
            raise RecordError(f"record's key {self.key!r} is empty")
        return str(value)

    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    def queue_names(self, job: str | None = None) -> list[str]:
        """One durable queue per stage: ``<job>.<stage>``."""
        return [f"{job or self.name}.{s.name}" for s in self.stages]

    def check(self) -> None:
        if not self.stages:
            raise PipelineError(f"pipeline {self.name!r} has no stages")
        if not self.stages[-1].sink:
            raise PipelineError(f"pipeline {self.name!r} has no sink; mark its last "
                                "stage with @pipe.sink")

    # -- running ----------------------------------------------------------------
    def run(self, store: Store | Engine | str, **options: Any):
        """Run (or resume) the pipeline on ``store`` (a Store, an Engine or a URL) until
        every queue is drained; returns a :class:`~sheetops.pipelines.engine.RunReport`.
        Options: ``job``, ``run_id``, ``dry_run``, ``overrides`` (stage → settings),
        ``lease_grace_s``, ``drain_only``; see :func:`sheetops.pipelines.engine.run`."""
        from sheetops.pipelines.engine import run

        return run(self, store, **options)

    def __repr__(self) -> str:
        return f"<Pipeline {self.name}: {' → '.join(self.stage_names()) or 'no stages'}>"


#: Every pipeline defined in this process, by name (the automation's name).
PIPELINES: dict[str, Pipeline] = {}


def pipeline(name: str, source: Any, key: str | KeyFn = "id",
             description: str = "") -> Pipeline:
    """Define the pipeline ``name`` and register it as the automation ``name``."""
    from sheetops.pipelines.job import register

    pipe = Pipeline(name, source, key, description)
    PIPELINES[name] = pipe
    register(pipe, sys._getframe(1).f_globals.get("__name__", "__main__"))
    return pipe


def get_pipeline(name: str) -> Pipeline:
    try:
        return PIPELINES[name]
    except KeyError:
        raise PipelineError(f"no pipeline named {name!r}; defined: "
                            f"{', '.join(sorted(PIPELINES)) or 'none'}") from None
