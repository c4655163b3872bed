"""The Stages tab: per job and stage settings of pipelines, so ops tune a stage (batch
size, threads, processes, retries, timeout, rate limit, high-water mark) without a deploy.

A row names a pipeline job and one of its stages; each non-empty cell overrides the
code's setting for that stage. A row with a bad cell is skipped — the stage keeps the
code's settings — and its problems carry cell addresses (``Stages!C4: …``); other rows
and every job still run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sheetops import tabs
from sheetops.config.model import JobSpec, Problem
from sheetops.ratelimit import RateLimitSpec, parse_rate

#: column → (minimum, maximum, whole number)
RANGES: dict[str, tuple[float, float, bool]] = {
    "batch_size": (1, 100_000, True),
    "concurrency": (1, 64, True),
    "retries": (0, 20, True),
    "timeout_s": (0.1, 86_400, False),
    "high_water": (0, 1_000_000_000, True),
    "processes": (0, 64, True),
}


def _pipeline_stages(automation: str) -> list[str] | None:
    """The stages of the pipeline registered as ``automation``; None if it is not one.
    Asked through the registry, so config never imports the pipelines (their sources use
    connectors)."""
    from sheetops.registry import registry

    if automation not in registry:
        return None
    stage_names = getattr(registry.get(automation).fn, "stage_names", None)
    return None if stage_names is None else list(stage_names())


def parse_stages(rows: Sequence[Sequence[Any]], jobs: Mapping[str, JobSpec],
                 rate_limits: Mapping[str, RateLimitSpec], problems: list[Problem]
                 ) -> dict[str, dict[str, dict[str, Any]]]:
    """job → stage → settings from the Stages tab's rows (header first)."""
    from sheetops.config.parse import _Row, _rows

    found: dict[str, dict[str, dict[str, Any]]] = {}
    seen: dict[tuple[str, str], int] = {}
    for number, values, columns in _rows(tabs.STAGES, rows,
                                         [c.name for c in tabs.STAGE_COLUMNS],
                                         ("job", "stage"), problems):
        r = _Row(tabs.STAGES, number, values, columns, problems)
        if r.error_values():
            continue
        job, stage = r.get("job"), r.get("stage")
        before = len(problems)
        spec = jobs.get(job)
        if not job:
            r.error("job", "job is empty; name a pipeline job from the Jobs tab")
        elif spec is None:
            r.error("job", f"unknown job {job!r}; use a job id from the Jobs tab")
        else:
            stages = _pipeline_stages(spec.automation)
            if stages is None:
                r.error("job", f"job {job!r} runs {spec.automation!r}, which is not a "
                               "pipeline; only pipeline jobs have stages")
            elif not stage:
                r.error("stage", f"stage is empty; {job!r} has the stages "
                                 f"{', '.join(stages)}")
            elif stage not in stages:
                r.error("stage", f"unknown stage {stage!r} of {job!r}; its stages are "
                                 f"{', '.join(stages)}")
        if (job, stage) in seen:
            r.error("stage", f"stage {stage!r} of {job!r} is set twice (first on row "
                             f"{seen[(job, stage)]}); the first row is used")
        settings: dict[str, Any] = {}
        for column, (low, high, whole) in RANGES.items():
            if r.get(column) == "":
                continue
            value = r.number_value(column, 0, minimum=low, maximum=high, integer=whole)
            if value is not None:
                settings[column] = value
        rate = r.get("rate_limit")
        if rate:
            if rate in rate_limits:
                settings["rate_limit"] = rate_limits[rate].rate
            else:
                try:
                    parse_rate(rate)
                    settings["rate_limit"] = rate
                except ValueError:
                    r.error("rate_limit", f"{rate!r} is neither a RateLimits name nor a "
                                          "rate; write e.g. smtp or 10/second")
        if len(problems) > before:
            for index in range(before, len(problems)):
                p = problems[index]
                if p.is_error:
                    problems[index] = Problem(p.tab, p.cell, p.value, p.problem +
                                              "; the stage keeps the code's settings",
                                              p.severity)
            continue
        seen[(job, stage)] = number
        found.setdefault(job, {})[stage] = settings
    return found
