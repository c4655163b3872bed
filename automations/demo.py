"""Demonstration automations that fail, retry and time out on purpose.

They let an ops team see on the Status, Runs and Errors tabs what retries, permanent
failures and timeouts look like before a real automation shows them.
"""

from __future__ import annotations

import time
from typing import Any

from sheetops.errors import PermanentError, RetryableError
from sheetops.registry import automation


def _number(ctx: Any, name: str, default: float, *, minimum: float = 0) -> float:
    value = ctx.params.get(name, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PermanentError(f"params.{name} must be a number, not {value!r}") from None
    if number < minimum:
        raise PermanentError(f"params.{name} must be at least {minimum:g}, not {number:g}")
    return number


@automation("flaky")
def flaky(ctx: Any) -> dict[str, Any]:
    """Fail on purpose until attempt succeed_on_attempt (default 2), then succeed.

    Shows retries with backoff: with ``max_attempts`` 3 the run succeeds on attempt 2;
    with ``succeed_on_attempt`` above ``max_attempts`` it fails after all its attempts.
    """
    succeed_on = int(_number(ctx, "succeed_on_attempt", 2, minimum=1))
    if ctx.attempt < succeed_on:
        raise RetryableError(f"flaky: attempt {ctx.attempt} fails on purpose; "
                             f"attempt {succeed_on} will succeed")
    return {"records_out": 1, "succeeded_on_attempt": ctx.attempt}


@automation("sleep")
def sleep(ctx: Any) -> dict[str, Any]:
    """Sleep for params.seconds (default 1), then succeed; shows what a timeout looks like.

    Shows timeouts: give the job a ``timeout_s`` below ``seconds`` and the attempt is
    stopped and reported as timed out.
    """
    seconds = _number(ctx, "seconds", 1.0)
    time.sleep(seconds)
    return {"records_out": 1, "slept_s": seconds}


@automation("always_fails")
def always_fails(ctx: Any) -> None:
    """Fail at once with params.message and no retries (a permanent error).

    Shows how a failure reaches the Errors tab and alerts.
    """
    raise PermanentError(str(ctx.params.get("message") or "always_fails: failing on purpose"))
