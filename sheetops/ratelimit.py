"""Rate limits from the RateLimits tab, enforced with the ``limits`` library.

A :class:`RateLimiter` answers one question — may this key go now, and if not, how
long to wait — over a ``limits`` storage (memory here; Redis when workers span
machines). ``scope=global`` limits share one budget across every job naming them,
``scope=job`` limits give each job its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter


@dataclass(frozen=True)
class RateLimitSpec:
    name: str
    rate: str
    scope: str = "global"

    @property
    def item(self) -> RateLimitItem:
        return parse_rate(self.rate)


def parse_rate(text: str) -> RateLimitItem:
    """Parse ``100/minute``, ``10 per second``, ``5000/day`` (raises ``ValueError``)."""
    cleaned = " ".join(str(text).strip().lower().split())
    if not cleaned:
        raise ValueError("empty rate")
    try:
        return parse(cleaned)
    except ValueError:
        raise ValueError(f"{text!r} is not a rate; write e.g. 100/minute, 10 per second, "
                         "5000/day") from None


class RateLimiter:
    """Hands out permits for named limits; ``wait_time`` never blocks."""

    def __init__(self, storage_url: str = "memory://") -> None:
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage_url))

    def wait_time(self, spec: RateLimitSpec, job: str) -> float:
        """Take a permit and return 0, or return the seconds until one is free."""
        item = spec.item
        key = spec.name if spec.scope != "job" else f"{spec.name}:{job}"
        if self._limiter.hit(item, "sheetops", key):
            return 0.0
        reset_at = self._limiter.get_window_stats(item, "sheetops", key).reset_time
        return max(0.01, reset_at - time.time())

    def acquire(self, spec: RateLimitSpec, job: str, sleep=time.sleep) -> float:
        """Block until a permit is free; return the seconds waited."""
        waited = 0.0
        while (delay := self.wait_time(spec, job)) > 0:
            sleep(delay)
            waited += delay
        return waited
