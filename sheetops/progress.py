"""Live progress in the terminal: one line per finished run (``run --progress``, demo)."""

from __future__ import annotations

import sys
import threading
from datetime import datetime

from sheetops.context import AttemptResult
from sheetops.hooks import RunHook, RunInfo, RunOutcome
from sheetops.store.schema import RunStatus

_MARK = {RunStatus.OK: "✓", RunStatus.FAILED: "✗", RunStatus.TIMEOUT: "⏱"}


class ConsoleProgress(RunHook):
    """Prints finished runs and failed attempts as they happen."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        self.counts: dict[RunStatus, int] = {}

    def _print(self, text: str) -> None:
        with self._lock:
            print(f"{datetime.now():%H:%M:%S} {text}", file=self.stream, flush=True)

    def on_attempt_end(self, run: RunInfo, result: AttemptResult) -> None:
        if not result.ok:
            self._print(f"  {run.job:<22} attempt {result.attempt} failed: "
                        f"{result.error_type}: {result.error_message[:80]}")

    def on_run_end(self, run: RunInfo, outcome: RunOutcome) -> None:
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        records = (f" records {outcome.records_in}/{outcome.records_out}/"
                   f"{outcome.records_failed}" if (outcome.records_in or outcome.records_out
                                                   or outcome.records_failed) else "")
        error = f" — {outcome.error_type}: {outcome.error_message[:80]}" \
            if outcome.error_type else ""
        self._print(f"{_MARK.get(outcome.status, '?')} {run.job:<22} {outcome.status:<7} "
                    f"{outcome.duration_s:6.2f}s attempts {outcome.attempts}{records}{error}")
