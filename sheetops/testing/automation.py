"""Call one registered automation the way a worker would, in this process.

The test plugin's ``run_automation`` fixture and the notebook's ``dry_run``/``run`` both
go through :func:`call_automation`, so an automation behaves the same in a test, in a
notebook cell and on a worker: a real :class:`~sheetops.context.RunContext` (secrets
resolved, template rendered, rate limit honoured), the function's own return value.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sheetops.context import AttemptRequest, RecordFailure, RunContext
from sheetops.ratelimit import RateLimiter, RateLimitSpec
from sheetops.registry import registry
from sheetops.templates import TemplateSpec


@dataclass
class AutomationCall:
    """One call: the context the automation saw and what it returned."""

    ctx: RunContext
    result: dict[str, Any]

    @property
    def record_failures(self) -> list[RecordFailure]:
        return self.ctx.record_failures


def call_automation(name: str, params: Mapping[str, Any] | None = None, *,
                    template: TemplateSpec | None = None, dry_run: bool = False,
                    attempt: int = 1, job: str | None = None, run_id: str | None = None,
                    rate_limit: RateLimitSpec | None = None, timeout_s: float = 600,
                    store_url: str = "", trigger: str = "test",
                    stages: Mapping[str, Any] | None = None) -> AutomationCall:
    """Run automation ``name`` with ``params``; its exceptions propagate unchanged."""
    request = AttemptRequest(
        run_id=run_id or f"test-{uuid.uuid4().hex[:12]}", job=job or name,
        automation=name, attempt=attempt, params=dict(params or {}), timeout_s=timeout_s,
        dry_run=dry_run, template=template, rate_limit=rate_limit, trigger=trigger,
        store_url=store_url, stages={k: dict(v) for k, v in (stages or {}).items()})
    ctx = RunContext(request, throttle=RateLimiter().acquire)
    result = registry.get(name).fn(ctx)
    return AutomationCall(ctx, dict(result or {}))
