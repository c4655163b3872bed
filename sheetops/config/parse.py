"""Rows of the config tabs → a :class:`Snapshot` plus every problem, each with its cell.

Bad config never stops good jobs: an invalid row is skipped (or, for a job that was
valid before, its last good version is kept) and reported. Header names are
case-insensitive, column order is free, unknown columns are ignored with a warning.
Parsing a row is cached on its values, so a refresh where one row changed re-parses
one row.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from functools import lru_cache

from openpyxl.utils import get_column_letter

from sheetops import plugins, secrets, tabs
from sheetops.config.cells import ERROR_VALUES, parse_params, timezone_problem
from sheetops.config.model import (
    CATCH_UP,
    AlertSpec,
    JobSpec,
    Problem,
    SheetSettings,
    Snapshot,
)
from sheetops.config.schedule import ScheduleError, parse_schedule
from sheetops.ratelimit import RateLimitSpec, parse_rate
from sheetops.templates import TemplateSpec, syntax_problem

# the words the `enabled` dropdown offers, plus a few older spellings still read
_TRUE = {w.lower() for w in tabs.TRUE_WORDS} | {"y", "on", "x", "✓"}
_FALSE = {w.lower() for w in tabs.FALSE_WORDS} | {"n", "off", ""}
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# every numeric Settings key's sane range (documented in config_sheets/README.md)
SETTING_RANGES: dict[str, tuple[float, float]] = {
    "refresh_interval_s": (0.1, 86_400),
    "status_flush_interval_s": (0.1, 3_600),
    "runs_tab_rows": (1, 10_000),
    "errors_tab_rows": (1, 10_000),
    "alert_interval_s": (0.1, 86_400),
    "alert_reminder_s": (0, 2_592_000),  # 0 = never remind; at most 30 days
    "catch_up_max_runs": (1, 10_000),
    "run_history_days": (1, 3_650),
    "worker_memory_mb": (256, 1_048_576),
}
_CHANNEL = re.compile(r"^(email:[^@\s]+@[^@\s]+|slack:[A-Za-z0-9_\-]+|webhook:[A-Za-z0-9_\-]+)$")
_BUILT_IN_CHANNELS = ("email", "slack", "webhook")


def _user_channel(channel: str) -> bool:
    """``SCHEME:TARGET`` for an alert channel a user's package registered by entry point
    (``sheetops.alert_channels``); the built-ins' targets are checked by ``_CHANNEL``."""
    scheme, colon, target = channel.partition(":")
    scheme = scheme.strip().lower()
    return (bool(colon and target.strip()) and scheme not in _BUILT_IN_CHANNELS
            and scheme in plugins.available(plugins.ALERT_CHANNELS))


class _Row:
    """One sheet row addressed by header name, collecting problems with cell addresses."""

    def __init__(self, tab: str, number: int, values: Sequence[str],
                 columns: Mapping[str, int], problems: list[Problem]) -> None:
        self.tab, self.number, self.values = tab, number, values
        self.columns, self.problems = columns, problems
        self._flagged: set[str] = set()  # cells with a problem already: one per cell

    def cell(self, name: str) -> str:
        index = self.columns.get(name)
        col = get_column_letter(index + 1) if index is not None else "A"
        return f"{col}{self.number}"

    def get(self, name: str) -> str:
        index = self.columns.get(name)
        if index is None or index >= len(self.values):
            return ""
        value = self.values[index]
        return "" if value is None else str(value).strip()

    def error(self, name: str, problem: str, severity: str = "error") -> None:
        cell = self.cell(name)
        if cell in self._flagged:
            return
        self._flagged.add(cell)
        self.problems.append(Problem(self.tab, cell, self.get(name), problem, severity))

    def error_values(self) -> bool:
        """Report every cell showing a spreadsheet error (``#DIV/0!``, ...); True if any.

        Such a cell is a broken formula, never an empty cell to fill with a default."""
        found = False
        for name in self.columns:
            if (value := self.get(name)) in ERROR_VALUES:
                self.error(name, f"{name} shows the error {value}; fix the formula or "
                                 "type a value")
                found = True
        return found

    def number_value(self, name: str, default: float, *, minimum: float = 0,
                     maximum: float = math.inf, integer: bool = False,
                     label: str = "") -> float | None:
        text = self.get(name)
        name_text = label or name
        if text == "":
            return default
        try:
            value = float(text)
        except ValueError:
            self.error(name, f"{name_text} must be a number, got {text!r}")
            return None
        if math.isnan(value) or math.isinf(value):
            self.error(name, f"{name_text} must be a finite number")
            return None
        if integer and value != int(value):
            self.error(name, f"{name_text} must be a whole number, got {text!r}")
            return None
        if value < minimum:
            self.error(name, f"{name_text} must be at least {minimum:g}, got {text!r}")
            return None
        if value > maximum:
            self.error(name, f"{name_text} must be at most {maximum:,g}, got {text!r}")
            return None
        return int(value) if integer else value

    def boolean(self, name: str, default: bool) -> bool | None:
        text = self.get(name).lower()
        if text == "":
            return default
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        others = ", ".join(tabs.BOOLEAN_CHOICES[2:])
        self.error(name, f"{name} must be TRUE or FALSE (or {others}), got {text!r}")
        return None


def _header_map(tab: str, header: Sequence[str], known: Sequence[str],
                problems: list[Problem]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for index, raw in enumerate(header):
        name = str(raw or "").strip().lower().replace(" ", "_")
        cell = f"{get_column_letter(index + 1)}1"
        if not name:
            continue
        if name not in known:
            problems.append(Problem(tab, cell, str(raw), f"unknown column {raw!r} is ignored; "
                                    f"known columns: {', '.join(known)}", "warning"))
        elif name in columns:
            problems.append(Problem(tab, cell, str(raw),
                                    f"column {name!r} appears twice; the first one is used"))
        else:
            columns[name] = index
    return columns


def _required_columns(tab: str, columns: Mapping[str, int], required: Sequence[str],
                      problems: list[Problem]) -> bool:
    missing = [c for c in required if c not in columns]
    if missing:
        problems.append(Problem(tab, "A1", "", f"missing column(s) {', '.join(missing)} in "
                                "the header row; the tab is ignored"))
        return False
    return True


def _rows(tab: str, rows: Sequence[Sequence[str]], known: Sequence[str],
          required: Sequence[str], problems: list[Problem]):
    """Yield ``(row_number, values, columns)`` for every non-empty data row."""
    if not rows:
        return
    columns = _header_map(tab, rows[0], known, problems)
    if not _required_columns(tab, columns, required, problems):
        return
    for offset, values in enumerate(rows[1:], start=2):
        if any(str(v).strip() for v in values if v is not None):
            yield offset, values, columns


@lru_cache(maxsize=200_000)
def _parse_job_row(values: tuple[str, ...], columns: tuple[tuple[str, int], ...],
                   default_tz: str, automations: frozenset[str], number: int
                   ) -> tuple[JobSpec | None, str, tuple[Problem, ...]]:
    """Parse one Jobs row on its own; cached, so an unchanged row costs a lookup."""
    problems: list[Problem] = []
    r = _Row(tabs.JOBS, number, values, dict(columns), problems)
    ok = not r.error_values()
    job = r.get("job")
    if not _JOB_ID.match(job):
        r.error("job", "job id must be 1-128 letters, digits, '-', '_' or '.', starting with "
                       "a letter or digit" if job else "job id is empty")
        ok, job = False, ""  # the rest of the row is still checked: every problem at once
    automation = r.get("automation")
    if not automation:
        r.error("automation", "automation is empty; pick a registered automation name")
        ok = False
    elif automation not in automations:
        hint = ("an import path is not allowed; " if "." in automation or ":" in automation
                else "")
        r.error("automation", f"unknown automation {automation!r}; {hint}registered: "
                              f"{', '.join(sorted(automations)) or 'none'}")
        ok = False
    schedule = r.get("schedule")
    try:
        parse_schedule(schedule)
    except ScheduleError as exc:
        r.error("schedule", str(exc))
        ok = False
    timezone = r.get("timezone") or default_tz
    if problem := timezone_problem(timezone):
        r.error("timezone", problem)
        ok = False
    params, problem = parse_params(r.get("params") or "{}")
    params_text = "{}"
    if params is None or (problem := secrets.params_problem(params)):
        r.error("params", problem)
        ok = False
    else:
        params_text = json.dumps(params, sort_keys=True, separators=(",", ":"))
    enabled = r.boolean("enabled", True)
    max_attempts = r.number_value("max_attempts", 3, minimum=1, integer=True)
    backoff_initial = r.number_value("backoff_initial_s", 1.0)
    backoff_max = r.number_value("backoff_max_s", 300.0)
    timeout = r.number_value("timeout_s", 600.0, minimum=0.1)
    concurrency = r.number_value("concurrency", 1, minimum=1, integer=True)
    catch_up = r.get("catch_up").lower() or "once"
    if catch_up not in CATCH_UP:
        r.error("catch_up", f"catch_up must be skip, once or all, got {catch_up!r}")
        ok = False
    values_ok = None not in (enabled, max_attempts, backoff_initial, backoff_max, timeout,
                             concurrency)
    if values_ok and backoff_max < backoff_initial:
        r.error("backoff_max_s", "backoff_max_s must be at least backoff_initial_s")
        ok = False
    if not (ok and values_ok):
        return None, job, tuple(problems)
    spec = JobSpec(
        job=job, automation=automation, schedule=schedule, timezone=timezone,
        enabled=bool(enabled), params_json=params_text, rate_limit=r.get("rate_limit"),
        template=r.get("template"), max_attempts=int(max_attempts),
        backoff_initial_s=float(backoff_initial), backoff_max_s=float(backoff_max),
        timeout_s=float(timeout), concurrency=int(concurrency), catch_up=catch_up,
        owner=r.get("owner"), notes=r.get("notes"), row=number)
    return spec, job, tuple(problems)


def parse_settings(rows, problems: list[Problem]) -> SheetSettings:
    defaults = SheetSettings()
    values: dict[str, object] = {}
    types = {f.name: type(getattr(defaults, f.name)) for f in fields(SheetSettings)}
    seen: dict[str, int] = {}
    for number, row_values, columns in _rows(tabs.SETTINGS, rows,
                                             [c.name for c in tabs.SETTINGS_COLUMNS],
                                             ("key", "value"), problems):
        r = _Row(tabs.SETTINGS, number, row_values, columns, problems)
        if r.error_values():
            continue
        key = r.get("key").lower()
        if key not in tabs.SETTING_KEYS:
            r.error("key", f"unknown setting {key!r}; known settings: "
                           f"{', '.join(tabs.SETTING_KEYS)}")
            continue
        if key not in types:
            continue
        if key in seen:
            r.error("key", f"setting {key!r} is set twice (first on row {seen[key]}); "
                           "the first one is used")
            continue
        seen[key] = number
        kind = types[key]
        if kind is str:
            text = r.get("value")
            if key == "timezone" and (problem := timezone_problem(text or "UTC")):
                r.error("value", f"{problem}; keeping UTC")
                continue
            values[key] = text or getattr(defaults, key)
        else:
            low, high = SETTING_RANGES[key]
            number_value = r.number_value("value", getattr(defaults, key), minimum=low,
                                          maximum=high, integer=kind is int, label=key)
            if number_value is not None:
                values[key] = kind(number_value)
    return replace(defaults, **values)


def parse_duration(text: str) -> int:
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise ValueError(f"{text!r} is not a duration; write e.g. 15m, 1h, 1d")
    return int(float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"])


def parse_config(
    rows_by_tab: Mapping[str, Sequence[Sequence[str]]],
    automations: frozenset[str] | set[str],
    previous: Snapshot | None = None,
) -> Snapshot:
    """Build a snapshot from the config tabs' rows (header first)."""
    automations = frozenset(automations)
    problems: list[Problem] = []
    if tabs.JOBS not in rows_by_tab:
        problems.append(Problem(tabs.JOBS, "A1", "", "the Jobs tab is missing; run "
                                "'sheetops init' to create it"))
    settings = parse_settings(rows_by_tab.get(tabs.SETTINGS, []), problems)

    rate_limits: dict[str, RateLimitSpec] = {}
    for number, values, columns in _rows(tabs.RATE_LIMITS, rows_by_tab.get(tabs.RATE_LIMITS, []),
                                         [c.name for c in tabs.RATE_LIMIT_COLUMNS],
                                         ("name", "rate"), problems):
        r = _Row(tabs.RATE_LIMITS, number, values, columns, problems)
        if r.error_values():
            continue
        name, rate, scope = r.get("name"), r.get("rate"), (r.get("scope").lower() or "global")
        if not name:
            r.error("name", "rate limit name is empty")
            continue
        if name in rate_limits:
            r.error("name", f"rate limit {name!r} is defined twice; the first one is used")
            continue
        try:
            parse_rate(rate)
        except ValueError as exc:
            r.error("rate", str(exc))
            continue
        if scope not in ("global", "job"):
            r.error("scope", f"scope must be global or job, got {scope!r}")
            continue
        rate_limits[name] = RateLimitSpec(name, rate, scope)

    templates: dict[str, TemplateSpec] = {}
    for number, values, columns in _rows(tabs.TEMPLATES, rows_by_tab.get(tabs.TEMPLATES, []),
                                         [c.name for c in tabs.TEMPLATE_COLUMNS],
                                         ("name", "body"), problems):
        r = _Row(tabs.TEMPLATES, number, values, columns, problems)
        if r.error_values():
            continue
        name = r.get("name")
        if not name:
            r.error("name", "template name is empty")
            continue
        if name in templates:
            r.error("name", f"template {name!r} is defined twice; the first one is used")
            continue
        fmt = r.get("format").lower() or "text"
        bad = False
        for column in ("subject", "body"):
            if problem := syntax_problem(r.get(column)):
                r.error(column, problem)
                bad = True
        if fmt not in ("text", "html"):
            r.error("format", f"format must be text or html, got {fmt!r}")
            bad = True
        if not bad:
            templates[name] = TemplateSpec(name, r.get("subject"), r.get("body"), fmt)

    jobs: dict[str, JobSpec] = {}
    invalid: dict[str, tuple[Problem, ...]] = {}
    jobs_rows = rows_by_tab.get(tabs.JOBS, [])
    known_jobs = [c.name for c in tabs.JOB_COLUMNS]
    seen: dict[str, int] = {}
    if jobs_rows:
        columns = _header_map(tabs.JOBS, jobs_rows[0], known_jobs, problems)
        if _required_columns(tabs.JOBS, columns, ("job", "automation", "schedule"), problems):
            column_key = tuple(sorted(columns.items()))
            width = max(columns.values()) + 1
            for number, values in enumerate(jobs_rows[1:], start=2):
                cells = tuple("" if v is None else str(v) for v in values[:width])
                if not any(c.strip() for c in cells):
                    continue
                spec, job_id, row_problems = _parse_job_row(
                    cells, column_key, settings.timezone, automations, number)
                found = list(row_problems)
                row = _Row(tabs.JOBS, number, cells, columns, found)
                if job_id and job_id in seen:
                    row.error("job", f"duplicate job id {job_id!r} (first defined on row "
                                     f"{seen[job_id]}); this row is skipped")
                    problems.extend(found[-1:])
                    continue
                if job_id:
                    seen[job_id] = number
                # checked on every row, valid or not, so validate names all its problems
                rate_limit, template = row.get("rate_limit"), row.get("template")
                if rate_limit and rate_limit not in rate_limits.keys() | ERROR_VALUES:
                    row.error("rate_limit", f"unknown rate limit {rate_limit!r}; add it "
                                            "to the RateLimits tab or clear the cell")
                    spec = None
                if template and template not in templates.keys() | ERROR_VALUES:
                    row.error("template", f"unknown template {template!r}; add it to "
                                          "the Templates tab or clear the cell")
                    spec = None
                if spec is None and job_id:
                    invalid[job_id] = tuple(p for p in found if p.is_error)
                if spec is None and previous is not None and job_id in previous.jobs:
                    found = [replace(p, problem=p.problem + "; the last good version keeps "
                                     "running") if p.is_error else p for p in found]
                    spec = previous.jobs[job_id]
                problems.extend(found)
                if spec is not None:
                    jobs[job_id] = spec if spec.row == number else replace(spec, row=number)

    alerts: list[AlertSpec] = []
    for number, values, columns in _rows(tabs.ALERTS, rows_by_tab.get(tabs.ALERTS, []),
                                         [c.name for c in tabs.ALERT_COLUMNS],
                                         ("name", "metric", "threshold"), problems):
        r = _Row(tabs.ALERTS, number, values, columns, problems)
        if r.error_values():
            continue
        alert = _parse_alert(r, jobs, settings)
        if alert is not None:
            alerts.append(alert)

    from sheetops.config.stages import parse_stages

    stages = parse_stages(rows_by_tab.get(tabs.STAGES, []), jobs, rate_limits, problems)
    return Snapshot(jobs=jobs, rate_limits=rate_limits, templates=templates,
                    alerts=tuple(alerts), settings=settings, problems=tuple(problems),
                    invalid=invalid, stages=stages)


def _parse_alert(r: _Row, jobs: Mapping[str, JobSpec], settings: SheetSettings
                 ) -> AlertSpec | None:
    name = r.get("name")
    if not name:
        r.error("name", "alert name is empty")
        return None
    job = r.get("job") or "*"
    if job != "*" and job not in jobs:
        r.error("job", f"unknown job {job!r}; use a job id from the Jobs tab or *")
        return None
    metric = r.get("metric").lower()
    allowed = tabs.ALERT_METRICS
    if metric not in allowed:
        r.error("metric", f"unknown metric {metric!r}; use one of {', '.join(allowed)}")
        return None
    threshold = r.number_value("threshold", 0.0)
    if threshold is None:
        return None
    try:
        window = parse_duration(r.get("window") or "1h")
    except ValueError as exc:
        r.error("window", str(exc))
        return None
    channel = r.get("channel") or settings.alert_default_channel
    if not _CHANNEL.match(channel) and not _user_channel(channel):
        r.error("channel", f"channel must be email:ADDRESS, slack:NAME or webhook:NAME, got "
                           f"{channel!r}")
        return None
    enabled = r.boolean("enabled", True)
    if enabled is None:
        return None
    return AlertSpec(name, job, metric, float(threshold), window, channel, enabled, r.number)

