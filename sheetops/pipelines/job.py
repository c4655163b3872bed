"""A pipeline as a job: the automation the Jobs tab schedules.

The automation runs (or resumes) the pipeline in the worker on the run's store, with
the ``Stages`` tab's settings for this job, and returns the run's counts — records in
(read from the source in this pass), out (through the sink) and failed (dead letters),
per stage in ``result["stages"]``. Dead letters become the run's record failures, so
they reach the Errors tab (at most :data:`~sheetops.pipelines.engine.REPORTED_DEAD_LETTERS`
per run) through the same status path as any automation's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from sheetops.context import RecordFailure
from sheetops.errors import PermanentError
from sheetops.pipelines.model import Pipeline
from sheetops.registry import registry

#: Runs a pipeline job's pass: ``fn(pipe, store_url, **options)`` (the options of
#: :func:`sheetops.pipelines.engine.run`). In this process by default; a Celery worker sets
#: its own with :func:`use_pass_runner`, which hands the batches to stage tasks.
PassRunner = Callable[..., Any]
_pass_runner: PassRunner | None = None


def use_pass_runner(runner: PassRunner | None) -> None:
    """Run pipeline jobs' passes with ``runner`` in this process (``None``: in-process)."""
    global _pass_runner
    _pass_runner = runner


def _store_url(ctx: Any) -> str:
    url = getattr(ctx.request, "store_url", "") or ""
    if not url or ":memory:" in url or url.rstrip("/") == "sqlite:":
        raise PermanentError("a pipeline needs a store other processes can open (a "
                             "SQLite file or PostgreSQL), not an in-memory one")
    return url


def automation_for(pipe: Pipeline):
    """``fn(ctx)`` running ``pipe`` as the job ``ctx.job``."""

    def run_pipeline(ctx: Any) -> dict[str, Any]:
        overrides = getattr(ctx.request, "stages", None) or {}
        run = pipe.run if _pass_runner is None else functools.partial(_pass_runner, pipe)
        report = run(_store_url(ctx), job=ctx.job, run_id=ctx.run_id, dry_run=ctx.dry_run,
                     overrides=overrides, run_context=ctx)
        for letter in report.dead_letters:
            ctx.record_failures.append(RecordFailure(
                letter["key"], letter["error_type"], letter["message"][:1000],
                letter["stage"]))
        ctx.log.info("pipeline %s: %d read, %d out, %d dead letters in %.1fs", ctx.job,
                     report.records_read, report.records_out, report.dead, report.seconds)
        return report.result()

    run_pipeline.__doc__ = pipe.description or (
        f"Pipeline: {' → '.join(s.name for s in pipe.stages) or 'records through stages'}")
    run_pipeline.__qualname__ = f"pipeline:{pipe.name}"
    run_pipeline.stage_names = pipe.stage_names  # type: ignore[attr-defined]
    return run_pipeline


def register(pipe: Pipeline, module: str) -> None:
    """Register ``pipe`` as the automation ``pipe.name`` defined in ``module``."""
    fn = automation_for(pipe)
    fn.__module__ = module
    registry.register(pipe.name, fn, pipe.description or f"Pipeline {pipe.name}")


def job_context(snapshot: Any, job: str, store_url: str, trigger: str = "cli"
                ) -> tuple[Pipeline, Any]:
    """The pipeline Jobs row ``job`` runs and a run context with the row's params,
    template and Stages settings — for work on a pipeline job outside a run (replay);
    a job named like a pipeline and not on the Jobs tab gets no context."""
    from sheetops.context import AttemptRequest, RunContext
    from sheetops.pipelines.model import PIPELINES, PipelineError, get_pipeline
    from sheetops.runner import new_run_id

    spec = snapshot.jobs.get(job) if snapshot is not None else None
    if spec is None:
        if job in PIPELINES:
            return PIPELINES[job], None
        raise PipelineError(f"unknown job {job!r}; use a job id from the Jobs tab")
    request = AttemptRequest(
        new_run_id(), job, spec.automation, 1, spec.params, spec.timeout_s,
        template=snapshot.templates.get(spec.template) if spec.template else None,
        trigger=trigger, store_url=store_url, stages=snapshot.stages.get(job, {}))
    return get_pipeline(spec.automation), RunContext(request)
