"""The configuration as the engine uses it: immutable values built once per refresh."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import tzinfo
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

from sheetops.config.schedule import Schedule, parse_schedule
from sheetops.ratelimit import RateLimitSpec
from sheetops.templates import TemplateSpec

CATCH_UP = ("skip", "once", "all")


@dataclass(frozen=True)
class Problem:
    """One config problem, as shown on the Validation tab and by ``sheetops validate``."""

    tab: str
    cell: str
    value: str
    problem: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        return f"{self.tab}!{self.cell}: {self.problem}"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


@dataclass(frozen=True)
class JobSpec:
    """One valid row of the Jobs tab. Equality is what reconcile compares."""

    job: str
    automation: str
    schedule: str
    timezone: str
    enabled: bool = True
    params_json: str = "{}"
    rate_limit: str = ""
    template: str = ""
    max_attempts: int = 3
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    timeout_s: float = 600.0
    concurrency: int = 1
    catch_up: str = "once"
    owner: str = ""
    notes: str = field(default="", compare=False)
    row: int = field(default=0, compare=False)

    @cached_property
    def params(self) -> dict[str, Any]:
        """The params JSON, parsed once (callers must not mutate it)."""
        return json.loads(self.params_json)

    @cached_property
    def parsed_schedule(self) -> Schedule:
        return parse_schedule(self.schedule)

    @cached_property
    def tz(self) -> tzinfo:
        return ZoneInfo(self.timezone)

    def trigger(self):
        return self.parsed_schedule.trigger(self.tz)

    def schedule_key(self) -> tuple:
        """What the scheduler's trigger depends on; other fields change without
        rescheduling."""
        return (self.schedule, self.timezone, self.enabled)


@dataclass(frozen=True)
class AlertSpec:
    name: str
    job: str
    metric: str
    threshold: float
    window_s: int
    channel: str
    enabled: bool = True
    row: int = field(default=0, compare=False)


@dataclass(frozen=True)
class SheetSettings:
    """The Settings tab, typed, with defaults for what it leaves out."""

    timezone: str = "UTC"
    refresh_interval_s: float = 30.0
    status_flush_interval_s: float = 5.0
    runs_tab_rows: int = 200
    errors_tab_rows: int = 200
    alert_interval_s: float = 60.0
    alert_reminder_s: float = 3600.0
    alert_default_channel: str = ""
    catch_up_max_runs: int = 100
    run_history_days: int = 90
    worker_memory_mb: int = 2048


@dataclass(frozen=True)
class Snapshot:
    """Everything read from the sheet in one refresh, plus what was wrong with it."""

    jobs: dict[str, JobSpec] = field(default_factory=dict)
    rate_limits: dict[str, RateLimitSpec] = field(default_factory=dict)
    templates: dict[str, TemplateSpec] = field(default_factory=dict)
    alerts: tuple[AlertSpec, ...] = ()
    settings: SheetSettings = field(default_factory=SheetSettings)
    problems: tuple[Problem, ...] = ()
    #: job id → the errors of its row, for rows that are invalid now (a job listed here
    #: may still be in ``jobs`` with its last good version)
    invalid: dict[str, tuple[Problem, ...]] = field(default_factory=dict)
    #: rows the sheet's Validation tab showed when this was read (header included)
    validation_rows: int = 0
    #: the Stages tab: job → stage → the settings its row sets (pipelines only)
    stages: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]
