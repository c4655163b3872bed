"""The config spreadsheet's tabs and columns: one definition used by ``init``, the
parser, the status writer and the docs.

Column notes are what an editor sees when hovering a header cell, so they say what to
type and give an example.
"""

from __future__ import annotations

import logging

from sheetops.sheets import ColumnSpec, SheetBackend, TabSpec
from sheetops.store.schema import RunStatus

log = logging.getLogger("sheetops.sheets")

C = ColumnSpec

# A job's state on the Status tab is a RunStatus value (queued or running while a run is
# in flight, else its last run's) or one of these.
IDLE = "idle"  # enabled, never run
DISABLED = "disabled"  # enabled is FALSE
INVALID = "invalid"  # its row has an error (the result column says which)

# Conditional formats of a run's state: green ok, red failed/invalid, amber timeout.
STATE_COLOURS = ((RunStatus.OK.value, "C6EFCE"), (RunStatus.FAILED.value, "FFC7CE"),
                 (RunStatus.TIMEOUT.value, "FFEB9C"), (INVALID, "FFC7CE"))
# What an `enabled` cell accepts: its dropdown offers these, its note names them, and
# the parser reads them (case-insensitively) as on / off.
TRUE_WORDS = ("TRUE", "yes", "1")
FALSE_WORDS = ("FALSE", "no", "0")
BOOLEAN_CHOICES = tuple(w for pair in zip(TRUE_WORDS, FALSE_WORDS, strict=True) for w in pair)
_BOOLEAN_HINT = "yes/no and 1/0 work too"

JOBS = "Jobs"
RATE_LIMITS = "RateLimits"
TEMPLATES = "Templates"
SETTINGS = "Settings"
ALERTS = "Alerts"
STAGES = "Stages"
STATUS = "Status"
RUNS = "Runs"
ERRORS = "Errors"
VALIDATION = "Validation"

CONFIG_TABS = (JOBS, RATE_LIMITS, TEMPLATES, SETTINGS, ALERTS, STAGES)
SYSTEM_TABS = (STATUS, RUNS, ERRORS, VALIDATION)

JOB_COLUMNS: tuple[ColumnSpec, ...] = (
    C("job", "Unique id of the job, e.g. nightly-crm-sync. Letters, digits, - _ .",
      width=22),
    C("automation", "Name of a registered automation (pick from the list). Never an "
                    "import path.", width=16),
    C("schedule", "When it runs: 5-field cron (0 6 * * 1-5), every 10m / every 30s / "
                  "every 2h, @hourly, @daily, or manual.", width=14),
    C("timezone", "IANA timezone for the schedule, e.g. Europe/Berlin. Empty: Settings "
                  "timezone.", width=16),
    C("enabled", f"TRUE to run it, FALSE to pause it ({_BOOLEAN_HINT}).",
      choices=BOOLEAN_CHOICES),
    C("params", 'JSON object handed to the automation, e.g. {"url": "https://..."}. '
                'Secrets by name only: "secret:SMTP_PASSWORD".', width=40),
    C("rate_limit", "Name of a row in RateLimits that throttles this job (optional)."),
    C("template", "Name of a row in Templates the automation renders (optional)."),
    C("max_attempts", "Attempts before the run fails (default 3). 1 = no retry."),
    C("backoff_initial_s", "Seconds before the first retry, doubling each time (default 1)."),
    C("backoff_max_s", "Longest wait between retries in seconds (default 300)."),
    C("timeout_s", "Seconds one attempt may take before it is stopped (default 600)."),
    C("concurrency", "How many runs of this job may run at once (default 1)."),
    C("catch_up", "After sheetops was down: skip missed runs, run once, or run all "
                  "(default once).", choices=("skip", "once", "all")),
    C("owner", "Who to ask about this job (free text)."),
    C("notes", "Anything else (free text, ignored by sheetops).", width=40),
)

RATE_LIMIT_COLUMNS = (
    C("name", "Name jobs use in their rate_limit column."),
    C("rate", "How many per period: 100/minute, 10 per second, 5000/day."),
    C("scope", "global = shared by every job naming it (default); job = each job "
               "gets its own budget.", choices=("global", "job")),
)

TEMPLATE_COLUMNS = (
    C("name", "Name jobs use in their template column."),
    C("subject", "Subject line (Jinja2), e.g. Report for {{ customer }}.", width=30),
    C("body", "Body text (Jinja2, sandboxed): {{ name }}, {% for x in items %}…",
      width=50),
    C("format", "text or html (default text).", choices=("text", "html")),
)

SETTINGS_COLUMNS = (
    C("key", "A setting name; see config_sheets/README.md for the list.", width=24),
    C("value", "Its value.", width=16),
)

#: The metrics an Alerts-tab rule may watch (sheetops.alerts.metrics computes them).
ALERT_METRICS = ("failure_rate", "consecutive_failures", "duration_p95_s", "queue_depth",
                 "no_success_for_s", "dead_letters", "stage_lag_s")

ALERT_COLUMNS = (
    C("name", "Name of the alert rule."),
    C("job", "Job id it watches, or * for every job."),
    C("metric", "failure_rate, consecutive_failures, duration_p95_s, queue_depth, "
                "no_success_for_s, dead_letters or stage_lag_s.", choices=ALERT_METRICS),
    C("threshold", "Fires when the metric is at or above this number (failure_rate: "
                   "0.5 = 50%)."),
    C("window", "Time window the metric looks at, e.g. 15m, 1h, 1d (default 1h)."),
    C("channel", "Where to send it: email:ops@example.com, slack:NAME or webhook:NAME "
                 "(URL from env SHEETOPS_WEBHOOK_NAME).", width=24),
    C("enabled", f"TRUE to evaluate this rule, FALSE to pause it ({_BOOLEAN_HINT}).",
      choices=BOOLEAN_CHOICES),
)

STAGE_COLUMNS = (
    C("job", "Job id of a pipeline job (its automation is a pipeline)."),
    C("stage", "Name of one of that pipeline's stages, e.g. validate."),
    C("batch_size", "Records per batch (1-100000). Empty: the code's setting."),
    C("concurrency", "Threads working on this stage at once (1-64)."),
    C("retries", "Retries of a failing batch before it is split to find the bad "
                 "records (0-20)."),
    C("timeout_s", "Seconds one batch may take; its lease is this plus a grace."),
    C("rate_limit", "Records per period this stage may take: a RateLimits name or a "
                    "rate such as 10/second."),
    C("high_water", "Records waiting in this stage's queue at which the stages feeding "
                    "it wait (0 = ten batches)."),
    C("processes", "Processes working on this stage (0-64), each with its concurrency "
                   "threads, for CPU-bound stages; 0 = the run's own process."),
)

STATUS_COLUMNS = (
    C("job", "Job id.", width=24),
    C("state", "idle, queued, running, ok, failed, timeout, disabled or invalid.",
      colours=STATE_COLOURS),
    C("last_start", "When the last run started (job's timezone).", width=23),
    C("last_end", "When the last run ended.", width=23),
    C("duration_s", "How long the last run took."),
    C("result", "Summary of the last run's result or error.", width=40),
    C("records_in", "Records the last run read."),
    C("records_out", "Records the last run wrote."),
    C("records_failed", "Records the last run could not process."),
    C("consecutive_failures", "Failed runs in a row (0 after a success)."),
    C("next_run_1", "Next scheduled run (job's timezone).", width=23),
    C("next_run_2", "The run after that.", width=23),
    C("next_run_3", "And the one after.", width=23),
    C("schedule", "The schedule in words.", width=30),
    C("updated_at", "When sheetops wrote this row (UTC).", width=23),
)

RUN_COLUMNS = (
    C("run_id", "Unique id of the run.", width=32),
    C("job", "Job id.", width=24),
    C("trigger", "schedule, catch_up, manual, dashboard or cli."),
    C("start", "When it started (UTC).", width=23),
    C("end", "When it ended (UTC).", width=23),
    C("status", "queued (waiting for a worker), running, ok, failed or timeout.",
      colours=STATE_COLOURS),
    C("attempts", "How many attempts it took."),
    C("records_in", "Records the run read."),
    C("records_out", "Records the run wrote."),
    C("records_failed", "Records the run could not process."),
    C("duration_s", "Total duration in seconds."),
    C("error", "Short error summary when it failed.", width=60),
    C("output", "What the run kept for people to open, e.g. a report notebook's executed "
      "HTML (a path on the machine that ran it; the dashboard's Job detail shows it).",
      width=60),
)

ERROR_COLUMNS = (
    C("time", "When the error happened (UTC).", width=23),
    C("job", "Job id.", width=24),
    C("run_id", "The run it belongs to.", width=32),
    C("stage", "Where it happened: run, or a pipeline stage."),
    C("attempt", "Attempt number."),
    C("error_type", "Python exception type."),
    C("message", "Error message (secrets are masked).", width=60),
    C("record_key", "The record that failed, when the automation names one."),
)

VALIDATION_COLUMNS = (
    C("tab", "Tab with the problem."),
    C("cell", "Cell address (A1)."),
    C("value", "What the cell holds.", width=30),
    C("problem", "What is wrong and how to fix it.", width=60),
    C("severity", "error (row skipped) or warning (row used)."),
)

SETTING_KEYS: dict[str, tuple[str, str]] = {
    # key: (default, what it does)
    "timezone": ("UTC", "Default timezone for job schedules and Status times."),
    "refresh_interval_s": ("30", "Seconds between re-reads of the config tabs."),
    "status_flush_interval_s": ("5", "Seconds between writes of the status tabs."),
    "runs_tab_rows": ("200", "Rows kept on the Runs tab (newest first)."),
    "errors_tab_rows": ("200", "Rows kept on the Errors tab (newest first)."),
    "alert_interval_s": ("60", "Seconds between alert evaluations."),
    "alert_reminder_s": ("3600", "Seconds before a still-firing alert is sent again."),
    "alert_default_channel": ("", "Channel for alert rules that leave channel empty."),
    "catch_up_max_runs": ("100", "Upper bound of runs started by catch_up=all per job."),
    "run_history_days": ("90", "Days of runs kept in the store."),
    "worker_memory_mb": ("2048", "Memory (address space, MB) one worker process may use; "
                                 "a run past it fails with MemoryError."),
}


def _automation_names() -> tuple[str, ...]:
    from sheetops.registry import registry

    return tuple(sorted(registry.names()))


def live_dropdowns() -> dict[tuple[str, str], tuple[str, ...]]:
    """Dropdowns whose list comes from the deployment rather than from this file:
    (tab, column) -> choices. ``validate`` and ``run`` keep the sheet's copy current."""
    return {(JOBS, "automation"): _automation_names()}


def keep_dropdowns(sheet: SheetBackend) -> None:
    """Bring the sheet's live dropdowns up to date with the registry (a newly registered
    automation can be picked and typed). Backends write only when a list changed; a
    failure is logged and never stops the caller's refresh or validation."""
    keep = getattr(sheet, "keep_choices", None)
    if keep is None:
        return
    for (tab, column), choices in live_dropdowns().items():
        try:
            keep(tab, column, choices)
        except Exception as exc:
            log.warning("could not update the %s dropdown on %s of %s: %s", column, tab,
                        sheet.location, exc)


def config_tab_specs(examples: bool = True) -> list[TabSpec]:
    """Specs of every tab, with the automation dropdown filled from the registry."""
    live = live_dropdowns()
    jobs_cols = tuple(
        ColumnSpec(c.name, c.note, live[(JOBS, c.name)]) if (JOBS, c.name) in live else c
        for c in JOB_COLUMNS)
    ex = examples
    return [
        TabSpec(JOBS, jobs_cols, (
            ("heartbeat-1m", "heartbeat", "every 1m", "", True, "{}", "", "", 3, 1, 300,
             60, 1, "once", "ops", "proves the scheduler is alive"),
            ("daily-report", "send_email", "0 7 * * 1-5", "Europe/London", False,
             '{"recipients": [{"email": "ops@example.com", "name": "Ops"}]}', "smtp",
             "daily-report", 3, 5, 300, 120, 1, "once", "ops", "enable after SMTP setup"),
        ) if ex else ()),
        TabSpec(RATE_LIMITS, RATE_LIMIT_COLUMNS,
                (("smtp", "30/minute", "global"), ("api", "10 per second", "job"))
                if ex else ()),
        TabSpec(TEMPLATES, TEMPLATE_COLUMNS, (
            ("daily-report", "Daily report for {{ name }}",
             "Hello {{ name }},\n\nAll {{ jobs | default(0) }} jobs ran.\n", "text"),
        ) if ex else ()),
        TabSpec(SETTINGS, SETTINGS_COLUMNS,
                tuple((k, v[0]) for k, v in SETTING_KEYS.items()
                      if k in ("timezone", "refresh_interval_s", "status_flush_interval_s",
                               "runs_tab_rows", "errors_tab_rows")) if ex else ()),
        TabSpec(ALERTS, ALERT_COLUMNS, (
            ("failures", "*", "consecutive_failures", 3, "1h", "email:ops@example.com",
             False),
        ) if ex else ()),
        TabSpec(STAGES, STAGE_COLUMNS),
        TabSpec(STATUS, STATUS_COLUMNS, system=True),
        TabSpec(RUNS, RUN_COLUMNS, system=True),
        TabSpec(ERRORS, ERROR_COLUMNS, system=True),
        TabSpec(VALIDATION, VALIDATION_COLUMNS, system=True),
    ]


def columns_of(tab: str) -> tuple[ColumnSpec, ...]:
    return {
        JOBS: JOB_COLUMNS, RATE_LIMITS: RATE_LIMIT_COLUMNS, TEMPLATES: TEMPLATE_COLUMNS,
        SETTINGS: SETTINGS_COLUMNS, ALERTS: ALERT_COLUMNS, STAGES: STAGE_COLUMNS,
        STATUS: STATUS_COLUMNS,
        RUNS: RUN_COLUMNS, ERRORS: ERROR_COLUMNS, VALIDATION: VALIDATION_COLUMNS,
    }[tab]
