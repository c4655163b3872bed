"""Logging set-up: one line per event, as text or JSON (``SHEETOPS_LOG_FORMAT=json``).

Failures carry job, run id, attempt, stage, record key and error type as fields, so a
log search finds everything about one run. :class:`LoggingHook` writes the lines the
runner does not: a run's final failure and each record that failed.

When one process serves several clients, :class:`ClientFilter` (on the handler
:func:`setup_logging` installs) gives every line the ``client`` field of the code that
wrote it (:mod:`sheetops.client_context`), so each job, run, status flush, config
problem and alert line names its client: ``[client=acme]`` in text, ``"client"`` in JSON.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from sheetops import client_context
from sheetops.context import AttemptResult, known_secrets, mask
from sheetops.hooks import RunHook, RunInfo, RunOutcome
from sheetops.store.schema import RunStatus

CONTEXT_FIELDS = ("client", "job", "run_id", "attempt", "stage", "record_key",
                  "error_type")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value not in (None, ""):
                payload[name] = value
        if record.exc_info:
            payload["traceback"] = self.formatException(record.exc_info)
        return mask(json.dumps(payload, default=str), known_secrets)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s%(context)s",
                         "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        parts = [f"{n}={getattr(record, n)}" for n in CONTEXT_FIELDS
                 if getattr(record, n, None) not in (None, "")
                 and _said(n, f"{getattr(record, n)}") not in message]
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return mask(super().format(record), known_secrets)


def _said(field: str, value: str) -> str:
    """What a message must contain to name ``field`` already: ``client acme`` for a
    client (a job may be called ``acme-sync``), the value itself for the others."""
    return f"client {value}" if field == "client" else value


class ClientFilter(logging.Filter):
    """Sets ``record.client`` to the client whose code logs it (none set: left out)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "client", None):
            record.client = client_context.current()
        return True


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt.lower() == "json" else TextFormatter())
    handler.addFilter(ClientFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("apscheduler", "urllib3", "google", "gspread", "mail.log", "aiosmtpd"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class LoggingHook(RunHook):
    """One line per failure with its context fields.

    The runner logs each failed attempt it retries; this hook logs the run's final
    failure (``WARNING``), each failed record (``WARNING``, at most
    ``max_record_lines`` per attempt, then one summary line) and, at ``DEBUG``, each
    successful run. (Which client a line is about comes from :class:`ClientFilter`.)"""

    def __init__(self, logger: logging.Logger | None = None,
                 max_record_lines: int = 20) -> None:
        self.log = logger or logging.getLogger("sheetops.runs")
        self.max_record_lines = max_record_lines

    def on_attempt_end(self, run: RunInfo, result: AttemptResult) -> None:
        failures = result.record_failures
        for failure in failures[:self.max_record_lines]:
            self.log.warning(
                "job %s run %s attempt %d: record %s failed in stage %s (%s: %s)",
                run.job, run.run_id, result.attempt, failure.record_key, failure.stage,
                failure.error_type, failure.message,
                extra={"job": run.job, "run_id": run.run_id,
                       "attempt": result.attempt, "stage": failure.stage,
                       "record_key": failure.record_key, "error_type": failure.error_type})
        if len(failures) > self.max_record_lines:
            self.log.warning("job %s run %s attempt %d: %d more failed records (see the "
                             "Errors tab)", run.job, run.run_id, result.attempt,
                             len(failures) - self.max_record_lines,
                             extra={"job": run.job, "run_id": run.run_id,
                                    "attempt": result.attempt})

    def on_run_end(self, run: RunInfo, outcome: RunOutcome) -> None:
        fields = {"job": run.job, "run_id": run.run_id,
                  "attempt": outcome.attempts, "stage": "run"}
        if outcome.status == RunStatus.OK:
            self.log.debug("job %s run %s ok after %d attempt(s) in %.2fs", run.job,
                           run.run_id, outcome.attempts, outcome.duration_s, extra=fields)
            return
        self.log.warning("job %s run %s %s after %d attempt(s) in %.2fs: %s: %s",
                         run.job, run.run_id, outcome.status, outcome.attempts,
                         outcome.duration_s, outcome.error_type, outcome.error_message,
                         extra={**fields, "error_type": outcome.error_type})
