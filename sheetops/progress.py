"""Live progress in the terminal: one line per finished run (``run --progress``, demo)
and, while a pipeline job runs, a line per second of its stages (:class:`StageProgress`:
``run --progress``, ``run-job``), read from the store so it shows the worker process's
work as it happens."""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

from sheetops.client_context import carry, current
from sheetops.context import AttemptResult
from sheetops.hooks import RunHook, RunInfo, RunOutcome
from sheetops.registry import registry
from sheetops.store import pipeline_reads
from sheetops.store.schema import RunStatus

if TYPE_CHECKING:
    from sheetops.store import Store

_MARK = {RunStatus.OK: "✓", RunStatus.FAILED: "✗", RunStatus.TIMEOUT: "⏱"}


def _print_line(lock: threading.Lock, stream: TextIO, text: str) -> None:
    """One timestamped line; with several clients in the process, after its client's
    name (``acme: ✓ sync ok …``)."""
    client = current()
    with lock:
        print(f"{datetime.now():%H:%M:%S} {f'{client}: ' if client else ''}{text}",
              file=stream, flush=True)


class ConsoleProgress(RunHook):
    """Prints finished runs and failed attempts as they happen."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        self.counts: dict[RunStatus, int] = {}

    def _print(self, text: str) -> None:
        _print_line(self._lock, self.stream, text)

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


def stage_line(pipe: pipeline_reads.PipelineStats) -> str:
    """One pipeline's progress on a line: records read, then per stage records done,
    rate, queue depth and dead letters, source to sink."""
    stages = " → ".join(
        f"{s.stage} {s.records_out:,} done {s.rate:,.0f}/s q{s.depth:,}"
        + (f" dead {s.dead:,}" if s.dead else "") for s in pipe.stages)
    return f"  {pipe.job:<22} read {pipe.records_read:,} │ {stages}"


class StageProgress(RunHook):
    """While a pipeline job runs, prints its stages' progress every ``interval_s`` (when
    it changed) and once more at its end. Dry runs work on a scratch queue and are not
    followed."""

    def __init__(self, store: Store, stream: TextIO | None = None,
                 interval_s: float = 1.0) -> None:
        self.store = store
        self.stream = stream or sys.stdout
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._watching: dict[str, tuple[threading.Event, threading.Thread]] = {}

    def _print(self, text: str) -> None:
        _print_line(self._lock, self.stream, text)

    def on_run_start(self, run: RunInfo) -> None:
        # a pipeline's automation carries its stage names (sheetops.pipelines.job)
        names = (getattr(registry.get(run.automation).fn, "stage_names", None)
                 if run.automation in registry else None)
        if names is None or run.dry_run:
            return
        stop = threading.Event()
        thread = threading.Thread(target=carry(self._watch), args=(run.job, list(names()), stop),
                                  name=f"progress-{run.job}", daemon=True)
        with self._lock:
            self._watching[run.run_id] = (stop, thread)
        thread.start()

    def on_run_end(self, run: RunInfo, outcome: RunOutcome) -> None:
        """Stop following the run, after one last line with its final counts."""
        with self._lock:
            stop, thread = self._watching.pop(run.run_id, (None, None))
        if stop is not None and thread is not None:
            stop.set()
            thread.join(5)

    def _sample(self, job: str, order: list[str], before: tuple[float, list] | None
                ) -> tuple[float, list[pipeline_reads.PipelineStats]]:
        now = time.time()
        pipes = pipeline_reads.pipeline_stats(self.store, now, order={job: order},
                                              jobs=[job])
        if before is not None:
            pipes = pipeline_reads.with_rates(pipes, before[1], now - before[0])
        return now, pipes

    def _watch(self, job: str, order: list[str], stop: threading.Event) -> None:
        before = None
        shown: tuple = ()
        ended = False
        while not ended:
            ended = stop.wait(self.interval_s)
            try:
                before = self._sample(job, order, before)
            except Exception as exc:  # a busy or vanished store: progress is best effort
                self._print(f"  {job:<22} progress unavailable: {exc}")
                return
            for pipe in before[1]:
                counts = (pipe.generation, pipe.records_read,
                          *((s.records_out, s.depth, s.dead) for s in pipe.stages))
                if counts != shown or ended:
                    shown = counts
                    self._print(stage_line(pipe))
