"""A stage's rate limit: records per period, shared by the stage's threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from limits import RateLimitItem
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from sheetops.ratelimit import parse_rate


class Throttle:
    """Hands out permits for ``rate`` (``10/second``); ``acquire(n)`` blocks until ``n``
    records may go. A batch larger than the rate's amount goes in parts, so a limit
    of 10/second still lets a batch of 500 through, at 10 a second."""

    def __init__(self, rate: str, name: str, *, sleep: Callable[[float], None] = time.sleep
                 ) -> None:
        self.item: RateLimitItem = parse_rate(rate)
        self.name = name
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._lock = threading.Lock()
        self._sleep = sleep

    def acquire(self, n: int, stop: threading.Event | None = None) -> float:
        """Wait until ``n`` permits are taken; return the seconds waited."""
        waited, left = 0.0, n
        while left > 0:
            take = min(left, self.item.amount)
            with self._lock:
                if self._limiter.hit(self.item, self.name, cost=take):
                    left -= take
                    continue
                reset = self._limiter.get_window_stats(self.item, self.name).reset_time
            delay = min(max(0.005, reset - time.time()), 1.0)
            if stop is not None and stop.wait(delay):
                return waited
            if stop is None:
                self._sleep(delay)
            waited += delay
        return waited
