"""The worker memory limit (Settings ``worker_memory_mb``).

One job must not take the machine's memory: before each attempt a worker process caps its
own address space with ``RLIMIT_AS``, so an allocation past the limit raises
``MemoryError`` inside that attempt (a failed run, recorded) instead of growing until the
machine swaps or the kernel kills something else. Only the soft limit changes, so a later
attempt with a higher setting can raise it again.
"""

from __future__ import annotations

import dataclasses

from sheetops.context import AttemptResult

try:
    import resource
except ImportError:  # not on Windows: no limit there
    resource = None  # type: ignore[assignment]

_MB = 1024 * 1024


def limit_memory(memory_mb: int) -> None:
    """Cap this process's address space at ``memory_mb`` (0 = as high as allowed)."""
    if resource is None:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = memory_mb * _MB if memory_mb > 0 else hard
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if wanted != soft:
        resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))


def explain_memory_error(result: AttemptResult, memory_mb: int) -> AttemptResult:
    """Name the limit in a ``MemoryError`` result (its own message is empty)."""
    if result.ok or result.error_type != "MemoryError" or memory_mb <= 0:
        return result
    detail = "" if result.error_message in ("", "MemoryError") else f" ({result.error_message})"
    return dataclasses.replace(result, error_message=(
        f"the run needed more memory than the worker limit of {memory_mb} MB "
        f"(Settings worker_memory_mb){detail}"))
