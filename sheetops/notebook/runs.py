"""Dry runs and real runs from a notebook cell.

``dry_run(target, params=…)`` runs the real code in this process, with every outgoing
effect captured (:mod:`sheetops.dryrun`) and returned as a DataFrame, plus the
sheet cells the run would change. ``run(target, params=…)`` runs for real through the
engine's runner (worker processes, the job's timeout and retries, rows in the store and
on the Runs tab), and returns the attempts and errors as DataFrames.

``target`` is a job id of the config (its automation, params, template and rate limit
are used; ``params`` given here override the row's), an automation name, or the
function a cell decorated with ``@automation``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from sheetops.config.model import JobSpec
from sheetops.dryrun import CHANGE_COLUMNS, dry_run_job
from sheetops.errors import SheetopsError
from sheetops.notebook import history
from sheetops.notebook.capture import effects_frame
from sheetops.notebook.config import Config
from sheetops.notebook.display import section
from sheetops.notebook.pipelines import StageDryRun, dry_run_stage
from sheetops.notebook.quota import QuotaMeter
from sheetops.pipelines import PIPELINES, Pipeline
from sheetops.registry import registry
from sheetops.store.schema import RunStatus
from sheetops.templates import TemplateSpec

if TYPE_CHECKING:
    from sheetops.store import Store

Target = str | Callable[..., Any] | Pipeline


def automation_name(target: Target) -> str:
    """The registered name of ``target`` (a name, a decorated function, a pipeline)."""
    if isinstance(target, Pipeline):
        return target.name
    if isinstance(target, str):
        registry.get(target)
        return target
    for name in registry.names():
        if registry.get(name).fn is target:
            return name
    raise SheetopsError(f"{getattr(target, '__name__', target)!r} is not a registered "
                        "automation; decorate it with @automation('name') first")


def _job_for(target: Target, params: Mapping[str, Any] | None,
             config: Config | None) -> tuple[JobSpec, TemplateSpec | None]:
    """The job row to run: the config's row ``target``, or an ad-hoc manual job."""
    if isinstance(target, str) and config is not None and target in config.snapshot.jobs:
        spec = config.job(target)
        if params is not None:
            spec = replace(spec, params_json=json.dumps({**spec.params, **params}))
        template = config.snapshot.templates.get(spec.template) if spec.template else None
        return spec, template
    name = automation_name(target)
    job = name if name in PIPELINES else f"notebook-{name}"  # a pipeline's queues: its name
    spec = JobSpec(job=job, automation=name, schedule="manual",
                   timezone="UTC", params_json=json.dumps(dict(params or {})))
    return spec, None


@dataclass
class DryRun:
    """What a dry run returned, what it would have sent and which cells it would change."""

    job: str
    automation: str
    result: dict[str, Any]
    effects: pd.DataFrame
    sheet_diff: pd.DataFrame
    record_failures: pd.DataFrame
    error: str = ""
    traceback: str = ""
    quota: QuotaMeter | None = None  # the config's Google Sheets quota, shown with it

    @property
    def ok(self) -> bool:
        return not self.error

    def __repr__(self) -> str:
        state = "ok" if self.ok else f"failed: {self.error}"
        return (f"DryRun({self.automation} as {self.job}: {state}; "
                f"{len(self.effects)} effect(s) captured, result {self.result})")

    def _repr_html_(self) -> str:
        note = self.error or f"result: {json.dumps(self.result, default=str)}"
        return section(f"Dry run of {self.automation} ({self.job})",
                       {"Captured effects": self.effects, "Sheet cells it would change":
                        self.sheet_diff, "Failed records": self.record_failures},
                       note=note, ok=self.ok) + _quota_html(self.quota)


def _failures_frame(failures: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(failures,
                        columns=["record_key", "error_type", "message", "stage"])


def dry_run(target: Target, params: Mapping[str, Any] | None = None, *,
            config: Config | None = None, template: TemplateSpec | None = None,
            stage: str | None = None, records: Sequence[Any] | pd.DataFrame | None = None
            ) -> DryRun | StageDryRun:
    """Run ``target`` here with its effects captured; nothing is sent or written (the
    same mechanism as ``sheetops run-job --dry-run``: :func:`sheetops.dryrun.dry_run_job`).

    With ``stage`` and ``records``, ``target`` is a pipeline (or its name, or a job of
    ``config`` that runs one) and only that stage runs, on those records
    (:func:`sheetops.notebook.pipelines.dry_run_stage`)."""
    if stage is not None or records is not None:
        if stage is None or records is None:
            raise SheetopsError("a stage's dry run needs both stage= and records=")
        job = target if isinstance(target, str) else None
        pipe = target
        if isinstance(target, str) and config is not None and target in config.snapshot.jobs:
            pipe = config.snapshot.jobs[target].automation
        return dry_run_stage(pipe, stage, records, params=params, config=config, job=job)
    spec, row_template = _job_for(target, params, config)
    snapshot = config.snapshot if config is not None else None
    rate = snapshot.rate_limits.get(spec.rate_limit) if snapshot and spec.rate_limit \
        else None
    outcome = dry_run_job(spec, template=template or row_template, rate_limit=rate,
                          stages=snapshot.stages.get(spec.job, {}) if snapshot else None,
                          trigger="notebook")
    return DryRun(outcome.job, outcome.automation, outcome.result,
                  effects_frame(outcome.effects),
                  pd.DataFrame(outcome.changes, columns=list(CHANGE_COLUMNS)),
                  _failures_frame(outcome.record_failures), outcome.error, outcome.traceback,
                  config.quota if config is not None else None)


@dataclass
class RunResult:
    """A real run: its store record, attempts and errors."""

    run_id: str
    record: dict[str, Any]
    attempts: pd.DataFrame
    errors: pd.DataFrame
    result: dict[str, Any] = field(default_factory=dict)
    automation: str = ""
    quota: QuotaMeter | None = None  # the config's Google Sheets quota, shown with it

    @property
    def status(self) -> str:
        return str(self.record.get("status", ""))

    @property
    def ok(self) -> bool:
        return self.status == RunStatus.OK

    @property
    def stages(self) -> pd.DataFrame:
        """A pipeline's run: records in/out/failed and dead letters per stage (index:
        stage, in pipeline order); empty for other automations."""
        stages = self.result.get("stages") or {}
        pipe = PIPELINES.get(self.automation)
        order = pipe.stage_names() if pipe else []
        names = sorted(stages, key=lambda n: order.index(n) if n in order else len(order))
        return pd.DataFrame.from_dict({n: stages[n] for n in names}, orient="index", columns=[
            "records_in", "records_out", "records_failed", "dead_letters"]).rename_axis(
            "stage")

    def __repr__(self) -> str:
        return (f"RunResult({self.record.get('job')} run {self.run_id}: {self.status} after "
                f"{self.record.get('attempts')} attempt(s))")

    def _repr_html_(self) -> str:
        note = (f"{self.record.get('attempts')} attempt(s) in "
                f"{self.record.get('duration_s') or 0:.2f}s; result {self.result}")
        return section(f"Run {self.run_id} of {self.record.get('job')}: {self.status}",
                       {"Stages": self.stages.reset_index(),
                        "Attempts": self.attempts.drop(columns=["traceback"],
                                                       errors="ignore"),
                        "Errors": self.errors.drop(columns=["traceback"], errors="ignore")},
                       note=note, ok=self.ok) + _quota_html(self.quota)


def run(target: Target, params: Mapping[str, Any] | None = None, *,
        config: Config, timeout_s: float | None = None) -> RunResult:
    """Run ``target`` for real through the runner, with the job's retries and timeout,
    recorded in the store and on the sheet's status tabs; waits for it to end."""
    from sheetops.engine import Engine, EngineOptions
    from sheetops.settings import get_settings

    spec, _ = _job_for(target, params, config)
    if timeout_s is not None:
        spec = replace(spec, timeout_s=timeout_s)
    settings = get_settings()
    store = store_of(config)
    engine = Engine(config.sheet, store, EngineOptions(executor=settings.executor, workers=1))
    engine.runner.start()
    try:
        snapshot = _with_kernel_headroom(engine.refresh_without_scheduling())
        run_id = engine.runner.submit(spec, snapshot, "notebook", time.time(), False)
        if run_id is None:
            raise SheetopsError(f"{spec.job} is already running (concurrency "
                                f"{spec.concurrency}); try again when it ends")
        engine.runner.wait(run_id)
    finally:
        engine.runner.stop()
        engine.runner.flush()
        engine.status.flush()
    record = store.run(run_id) or {}
    raw = record.get("result") or "{}"
    return RunResult(run_id, record, history.attempts(store, [run_id]),
                     history.errors(store, run_ids=[run_id]),
                     json.loads(raw) if isinstance(raw, str) else dict(raw), spec.automation,
                     config.quota)


def _quota_html(quota: QuotaMeter | None) -> str:
    """The Google Sheets quota meter under a result, so a notebook sees what it spends."""
    return quota._repr_html_() if quota is not None else ""


def _address_space_mb() -> int:
    """This process's address space (VmSize) in MB; 0 where /proc does not tell."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _with_kernel_headroom(snapshot: Any) -> Any:
    """The snapshot with ``worker_memory_mb`` counted on top of this process's address
    space: a worker forked from a Jupyter kernel starts with the kernel's mappings
    (libraries, thread stacks, malloc arenas), which would otherwise eat the job's
    limit before it allocates anything (SQLite then cannot even map its WAL index)."""
    limit = snapshot.settings.worker_memory_mb
    if limit <= 0:
        return snapshot
    settings = replace(snapshot.settings, worker_memory_mb=limit + _address_space_mb())
    return replace(snapshot, settings=settings)


def store_of(config: Config) -> Store:
    """The store ``sheetops run`` would use for this sheet (same settings), opened once
    per config."""
    from sheetops.settings import get_settings
    from sheetops.store import Store

    url = get_settings().resolved_store_url(config.location)
    cached = getattr(config, "_store", None)
    if cached is None or cached.url != url:
        config._store = Store(url)
    return config._store
