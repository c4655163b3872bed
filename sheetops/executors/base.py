"""Executors run attempts somewhere (worker processes here, Celery workers later).

An executor takes :class:`AttemptRequest` values, runs each under its hard deadline
and reports back through two callbacks. It knows nothing of runs, retries or the
store: that is the runner's job.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

from sheetops import plugins
from sheetops.context import AttemptRequest, AttemptResult
from sheetops.errors import SheetopsError
from sheetops.hooks import Hooks
from sheetops.retry import JobPolicy

if TYPE_CHECKING:
    from sheetops.recorder import Recorder

OnStart = Callable[[AttemptRequest, float], None]
OnResult = Callable[[AttemptResult], None]


class Executor(ABC):
    """Runs attempts; ``on_start`` and ``on_result`` are called from one thread.

    An executor whose workers record runs in the store themselves (``records_runs``,
    Celery) also retries there: the runner records only the hand-off, gives the job's
    retry policy with :meth:`set_policy`, and hears of each run's end (``on_result``
    with its last attempt) once a worker recorded it."""

    #: Whether the workers record starts, attempts, retries and outcomes themselves.
    records_runs: bool = False

    def __init__(self, on_start: OnStart, on_result: OnResult, hooks: Hooks | None = None,
                 workers: int = 0) -> None:
        self.on_start = on_start
        self.on_result = on_result
        self.hooks = hooks or Hooks()
        self.workers = workers

    @abstractmethod
    def start(self) -> None:
        """Start workers; callbacks may fire from now on."""

    @abstractmethod
    def submit(self, request: AttemptRequest, eta: float | None = None) -> None:
        """Run ``request`` as soon as a worker is free, but not before ``eta``
        (epoch seconds)."""

    def submit_many(self, requests: list[AttemptRequest]) -> None:
        """Submit attempts due now, in order (executors may do this in one step)."""
        for request in requests:
            self.submit(request)

    def bind_recorder(self, recorder: Recorder) -> None:  # noqa: B027
        """The runner's recorder, given before :meth:`start` (an executor whose tasks
        must find their runs in the store flushes it before handing them off)."""

    def set_policy(self, run_id: str, policy: JobPolicy) -> None:  # noqa: B027
        """The retry policy of ``run_id``'s job, for executors that retry (``records_runs``);
        called before the run's first attempt is submitted."""

    def adopt(self, request: AttemptRequest, queued_at: float | None = None) -> None:  # noqa: B027
        """Follow a run in flight that another scheduler handed off (``records_runs``
        executors, on a takeover); with ``queued_at`` the run is queued and may never
        have been handed to a worker (its policy given by :meth:`set_policy`), so the
        executor hands it over unless a worker takes it up soon."""

    def recorded(self, result: AttemptResult) -> bool:
        """Whether ``result`` (and its run's end) is in the store already, recorded by a
        worker: true for every result of a ``records_runs`` executor except those it
        failed itself (an attempt it could not send)."""
        return False

    @abstractmethod
    def stop(self, timeout: float | None = None) -> list[AttemptRequest]:
        """Let running attempts finish (up to their deadlines) and stop the workers.

        Returns the requests that never started, so the caller can account for them."""

    @property
    @abstractmethod
    def queue_depth(self) -> int:
        """Attempts waiting for a worker (including those waiting for their eta)."""

    @property
    @abstractmethod
    def running(self) -> int:
        """Attempts running now."""


def executor_class(name: str) -> type[Executor]:
    """Look up an executor by its alias in the ``sheetops.executors`` entry points
    (:class:`~sheetops.plugins.UnknownPluginError` names the aliases there are)."""
    cls = plugins.load(plugins.EXECUTORS, name)
    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        raise SheetopsError(f"executor {name!r} is not an Executor")
    return cls
