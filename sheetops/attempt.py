"""Run one attempt of an automation and describe what happened, wherever it runs.

This is the only place an automation function is called. Whatever it raises becomes an
:class:`AttemptResult`; secrets named in its params are masked in every message and
traceback that leaves this function.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sheetops.context import (
    AttemptRequest,
    AttemptResult,
    RecordFailure,
    RunContext,
    mask,
    mask_value,
    secret_values,
)
from sheetops.errors import PermanentError, UnknownAutomation
from sheetops.ratelimit import RateLimitSpec
from sheetops.registry import registry

_COUNTS = ("records_in", "records_out", "records_failed")
_PERMANENT = (PermanentError, UnknownAutomation)


def _clean_result(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"an automation must return a dict or None, not "
                        f"{type(value).__name__}")
    result = dict(value)
    for key in _COUNTS:
        if key in result:
            result[key] = int(result[key])
    return result


def run_attempt(request: AttemptRequest,
                throttle: Callable[[RateLimitSpec, str], float] | None = None
                ) -> AttemptResult:
    """Call the automation once; never raises."""
    started = time.time()
    secrets: set[str] = set()
    ctx: RunContext | None = None
    try:
        secrets = secret_values(request.params)
        fn = registry.get(request.automation).fn
        ctx = RunContext(request, throttle=throttle)
        secrets = ctx.secrets  # grows with each ctx.secret(NAME) the automation reads
        result = mask_value(_clean_result(fn(ctx)), secrets)
        failures = ctx.record_failures
        if failures:
            result["records_failed"] = max(result.get("records_failed", 0), len(failures))
        return AttemptResult(request.run_id, request.job, request.attempt, started,
                             time.time(), True, result,
                             record_failures=[_masked_failure(f, secrets) for f in failures])
    except Exception as exc:
        failures = ctx.record_failures if ctx is not None else []
        return AttemptResult(
            request.run_id, request.job, request.attempt, started, time.time(), False,
            error_type=type(exc).__name__,
            error_message=mask(str(exc), secrets)[:2000] or type(exc).__name__,
            traceback=mask("".join(traceback.format_exception(exc)), secrets)[-8000:],
            permanent=isinstance(exc, _PERMANENT),
            record_failures=[_masked_failure(f, secrets) for f in failures])


def _masked_failure(failure: RecordFailure, secrets: set[str]) -> RecordFailure:
    return replace(failure, message=mask(failure.message, secrets)[:1000],
                   record_key=mask(failure.record_key, secrets))
