"""Retry policies as values (tenacity), built in one place.

The runner uses :func:`job_policy` to decide whether and when a failed attempt runs
again; connectors use :func:`call_policy` for transient 429/5xx answers. Both share the
same wait: exponential from ``initial`` doubling up to ``maximum``, plus jitter.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base

from sheetops.errors import PermanentError


def backoff_wait(initial: float, maximum: float, jitter: float | None = None) -> wait_base:
    """Exponential backoff from ``initial`` seconds capped at ``maximum``, plus up to
    ``jitter`` seconds of random jitter (default: ``initial``, capped at 1s)."""
    jitter = min(initial, 1.0) if jitter is None else jitter
    return wait_exponential(multiplier=initial, min=initial, max=maximum) + wait_random(0, jitter)


@dataclass(frozen=True)
class JobPolicy:
    """When a job's failed attempt is tried again: attempts, backoff and what is final."""

    max_attempts: int
    backoff_initial_s: float
    backoff_max_s: float

    def delay_after(self, attempt: int, permanent: bool,
                    rng: random.Random | None = None) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or ``None`` when the run is over.

        ``rng`` makes the jitter reproducible in tests."""
        if permanent or attempt >= self.max_attempts:
            return None
        state = RetryCallState(retry_object=Retrying(), fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        exponential = wait_exponential(multiplier=self.backoff_initial_s,
                                       min=self.backoff_initial_s, max=self.backoff_max_s)
        jitter = min(self.backoff_initial_s, 1.0)
        return float(exponential(state)) + (rng or random).uniform(0, jitter)

    def latest_delay_after(self, attempt: int) -> float | None:
        """The longest :meth:`delay_after` can be (its jitter at the top): by then attempt
        ``attempt + 1`` was due, whatever jitter it drew; ``None`` when the run is over."""
        return self.delay_after(attempt, False, _TopOfRange())


class _TopOfRange(random.Random):
    """A random source whose ``uniform`` is the top of its range."""

    def uniform(self, a: float, b: float) -> float:
        return b


def call_policy(
    is_transient: Callable[[BaseException], bool],
    *,
    attempts: int = 6,
    initial: float = 0.5,
    maximum: float = 32.0,
    deadline_s: float | None = None,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> Retrying:
    """A bounded ``Retrying`` for calls to an outside service; never retries a
    :class:`PermanentError`, always stops after ``attempts`` (and ``deadline_s``)."""
    stop = stop_after_attempt(attempts)
    if deadline_s is not None:
        stop = stop | stop_after_delay(deadline_s)
    return Retrying(
        stop=stop,
        wait=backoff_wait(initial, maximum),
        retry=retry_if_exception(
            lambda e: not isinstance(e, PermanentError) and is_transient(e)),
        before_sleep=before_sleep,
        reraise=True,
    )
