"""Rate limits from the RateLimits tab, enforced with the ``limits`` library.

A :class:`RateLimiter` answers one question — may this key go now, and if not, how
long to wait — over a ``limits`` storage: this process's memory by default, or the one
``SHEETOPS_RATE_LIMIT_STORAGE`` names (``redis://host:6379/0``), shared by every
scheduler and worker of the fleet, so a RateLimits row of ``100/minute`` allows 100
calls a minute in all of them together. ``scope=global`` limits share one budget across
every job naming them, ``scope=job`` limits give each job its own. Google Sheets' own
per-user quota goes through the same storage (:func:`shared_limiter`), and so do the
pipeline stages' limits (:mod:`sheetops.pipelines.throttle`).

When one process serves several clients, a limit's key carries its client
(:func:`limit_key`): acme's ``api`` row and globex's ``api`` row are two budgets, each
shared by every process of the fleet serving that client. Google's Sheets quota is not
a client's: it is counted per Google user (the service account) and project, so its
key is the principal, whichever client's sheet a request is for.

A used-up limit waits, never fails; so does a storage that cannot be reached (logged
once per outage), since failing the run would only retry it sooner.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from sheetops.settings import get_settings

log = logging.getLogger("sheetops.ratelimit")
#: Keys in a shared storage start with this (a Redis shared with other users stays apart).
KEY_PREFIX = "sheetops"
#: How long to wait before asking a storage that could not be reached again.
STORAGE_RETRY_S = 1.0


@dataclass(frozen=True)
class RateLimitSpec:
    name: str
    rate: str
    scope: str = "global"
    #: the client whose row this is, when one process serves several ("" for one sheet)
    namespace: str = ""

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


def configured_storage() -> str:
    """The configured limits storage (``SHEETOPS_RATE_LIMIT_STORAGE``), else memory."""
    return get_settings().rate_limit_storage.strip() or "memory://"


def shared_limiter(url: str | None = None) -> MovingWindowRateLimiter:
    """One moving-window limiter per storage URL in this process (memory is per
    process; Redis is shared by every process pointing at it); the configured one by
    default."""
    return _limiter_for(url or configured_storage())


@functools.lru_cache(maxsize=8)
def _limiter_for(url: str) -> MovingWindowRateLimiter:
    return _new_limiter(url)


def _new_limiter(url: str) -> MovingWindowRateLimiter:
    options = {} if url.startswith("memory") else {"key_prefix": KEY_PREFIX}
    return MovingWindowRateLimiter(storage_from_string(url, wrap_exceptions=True, **options))


def limit_key(name: str, client: str = "") -> tuple[str, ...]:
    """The identifiers of a limit's windows in the storage: ``sheetops/<name>``, or
    ``sheetops/client/<client>/<name>`` for a client of several (so one client's limits
    never share a window with another's row of the same name)."""
    return (KEY_PREFIX, "client", client, name) if client else (KEY_PREFIX, name)


def wait_for_permit(limiter: MovingWindowRateLimiter, item: RateLimitItem,
                    *identifiers: str, cost: int = 1) -> float:
    """Take ``cost`` permits and return 0, or return the seconds until they are free
    (also while the storage cannot be reached: the caller waits and asks again)."""
    try:
        if limiter.hit(item, *identifiers, cost=cost):
            _storage_back(limiter)
            return 0.0
        reset_at = limiter.get_window_stats(item, *identifiers).reset_time
    except StorageError as exc:
        if limiter not in _unreachable:
            _unreachable.add(limiter)
            log.warning("rate limit storage unreachable (%s); calls wait until it is back",
                        exc)
        return STORAGE_RETRY_S
    _storage_back(limiter)
    return max(0.01, reset_at - time.time())


_unreachable: set[MovingWindowRateLimiter] = set()


def _storage_back(limiter: MovingWindowRateLimiter) -> None:
    if limiter in _unreachable:
        _unreachable.discard(limiter)
        log.warning("rate limit storage reachable again")


class RateLimiter:
    """Hands out permits for named limits; ``wait_time`` never blocks."""

    def __init__(self, storage_url: str | None = None) -> None:
        url = storage_url or configured_storage()
        # in memory each limiter keeps its own windows (one per executor, as before)
        self._limiter = _new_limiter(url) if url.startswith("memory") else _limiter_for(url)

    def wait_time(self, spec: RateLimitSpec, job: str) -> float:
        """Take a permit and return 0, or return the seconds until one is free."""
        name = spec.name if spec.scope != "job" else f"{spec.name}:{job}"
        return wait_for_permit(self._limiter, spec.item, *limit_key(name, spec.namespace))

    def acquire(self, spec: RateLimitSpec, job: str, sleep=time.sleep) -> float:
        """Block until a permit is free; return the seconds waited."""
        waited = 0.0
        while (delay := self.wait_time(spec, job)) > 0:
            sleep(delay)
            waited += delay
        return waited
