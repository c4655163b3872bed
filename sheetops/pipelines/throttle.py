"""A stage's rate limit: records per period, shared by the stage's threads — and, with
``SHEETOPS_RATE_LIMIT_STORAGE`` set (Redis), by every process running the stage.

In memory (the default) each :class:`Throttle` keeps its own window, so a stage's limit
holds within one process. With a shared storage the window lives there, keyed by the
pipeline job and stage (and client, when one process serves several:
:func:`~sheetops.ratelimit.limit_key`), so on the Celery tier a stage's ``10/second``
is ten records a second across every worker running its batches, as a RateLimits row
is. A storage that cannot be reached makes the stage wait, never fail
(:func:`~sheetops.ratelimit.wait_for_permit`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from limits import RateLimitItem
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from sheetops.ratelimit import (
    configured_storage,
    limit_key,
    parse_rate,
    shared_limiter,
    wait_for_permit,
)

#: The longest single wait, so a stop is seen promptly.
MAX_WAIT_S = 1.0


class Throttle:
    """Hands out permits for ``rate`` (``10/second``); ``acquire(n)`` blocks until ``n``
    records may go. A batch larger than the rate's amount goes in parts, so a limit
    of 10/second still lets a batch of 500 through, at 10 a second.

    ``name`` is the stage (``<job>.<stage>``), ``client`` its client of several;
    ``storage_url`` defaults to ``SHEETOPS_RATE_LIMIT_STORAGE`` (memory when unset)."""

    def __init__(self, rate: str, name: str, *, client: str = "",
                 storage_url: str | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.item: RateLimitItem = parse_rate(rate)
        self.name = name
        url = storage_url or configured_storage()
        if url.startswith("memory"):
            self._limiter = MovingWindowRateLimiter(MemoryStorage())  # this stage's own
            self._key: tuple[str, ...] = (name,)
        else:
            self._limiter = shared_limiter(url)
            self._key = limit_key(f"stage:{name}", client)
        self._lock = threading.Lock()
        self._sleep = sleep

    def acquire(self, n: int, stop: threading.Event | None = None) -> float:
        """Wait until ``n`` permits are taken; return the seconds waited."""
        waited, left = 0.0, n
        while left > 0:
            take = min(left, self.item.amount)
            with self._lock:
                delay = wait_for_permit(self._limiter, self.item, *self._key, cost=take)
            if delay <= 0:
                left -= take
                continue
            delay = min(max(0.005, delay), MAX_WAIT_S)
            if stop is not None and stop.wait(delay):
                return waited
            if stop is None:
                self._sleep(delay)
            waited += delay
        return waited
