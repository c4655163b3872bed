"""Hooks around a run, Dramatiq-middleware style.

Each concern (metrics, logs, alerts) is a small class overriding what it needs. A hook
that raises is logged and skipped: a broken hook never fails a run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sheetops.context import AttemptResult
from sheetops.store.schema import RunStatus

log = logging.getLogger("sheetops.hooks")


@dataclass(frozen=True)
class RunInfo:
    """A run as its hooks see it from its start on."""

    run_id: str
    job: str
    automation: str
    trigger: str
    scheduled_for: float | None
    started_at: float
    dry_run: bool = False


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended. ``status`` is :attr:`RunStatus.OK`, ``FAILED`` or ``TIMEOUT`` (a
    ``StrEnum``: it also compares equal to ``"ok"`` and friends)."""

    status: RunStatus
    attempts: int
    finished_at: float
    duration_s: float
    records_in: int = 0
    records_out: int = 0
    records_failed: int = 0
    error_type: str = ""
    error_message: str = ""


class RunHook:
    """Override what you need; every method is a no-op by default."""

    def on_run_start(self, run: RunInfo) -> None: ...

    def on_attempt_end(self, run: RunInfo, result: AttemptResult) -> None: ...

    def on_run_end(self, run: RunInfo, outcome: RunOutcome) -> None: ...

    def on_throttle(self, job: str, limit: str, waited_s: float) -> None: ...


class Hooks:
    """Calls every hook in turn; logs, never raises."""

    def __init__(self, hooks: Sequence[RunHook] = ()) -> None:
        self.hooks = list(hooks)

    def add(self, hook: RunHook) -> None:
        self.hooks.append(hook)

    def emit(self, name: str, *args) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, name)(*args)
            except Exception:
                log.exception("hook %s.%s failed", type(hook).__name__, name)
