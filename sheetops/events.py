"""What happens to a run, as typed events: the runner's only way to record anything.

The runner (and, later, a Celery worker on another machine) emits these; the
:class:`~sheetops.recorder.Recorder` turns them into store rows and sheet refreshes. Each
event is a frozen dataclass of plain values with a JSON form (:meth:`RunEvent.to_dict`,
:func:`event_from_dict`), so it can cross a process or a broker unchanged.

A run's life: :class:`RunQueued` (handed off, waiting for a slot or a worker) →
:class:`RunStarted` (its first attempt began) → one :class:`AttemptFinished` per attempt
→ :class:`RunFinished`. :class:`FireTimes` notes the latest fire handled per job.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sheetops.context import AttemptResult, RecordFailure
from sheetops.store.schema import RunStatus

__all__ = ["AttemptFinished", "FireTimes", "RecordError", "RunEvent", "RunFinished",
           "RunQueued", "RunStarted", "RunStatus", "attempt_status", "event_from_dict"]

_KINDS: dict[str, type[RunEvent]] = {}


class UnknownEventError(ValueError):
    """A dict that names no known event type (another version's event, or garbage)."""


@dataclass(frozen=True)
class RunEvent:
    """Base of every event; ``kind`` names it in the JSON form."""

    kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            _KINDS[cls.kind] = cls

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (``RunStatus`` as its string), with ``type`` = :attr:`kind`."""
        values: dict[str, Any] = {"type": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, RunStatus):
                value = value.value
            elif isinstance(value, tuple):
                value = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                         for v in value]
            values[f.name] = value
        return values

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunEvent:
        """The event ``data`` describes (as made by :meth:`to_dict`); called on a
        subclass it also checks the type."""
        event = event_from_dict(data)
        if not isinstance(event, cls):
            raise UnknownEventError(f"expected a {cls.kind or 'run'} event, got "
                                    f"{data.get('type')!r}")
        return event

    @classmethod
    def _from_values(cls, values: dict[str, Any]) -> RunEvent:
        return cls(**values)


def event_from_dict(data: dict[str, Any]) -> RunEvent:
    """Rebuild any event from its :meth:`RunEvent.to_dict` form."""
    values = dict(data)
    kind = values.pop("type", None)
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UnknownEventError(f"unknown run event type {kind!r} (known: "
                                f"{', '.join(sorted(_KINDS))})")
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls._from_values({k: v for k, v in values.items() if k in names})
    except (TypeError, ValueError) as exc:
        raise UnknownEventError(f"bad {kind} event: {exc}") from None


@dataclass(frozen=True)
class RecordError:
    """One record an attempt could not process (a row of the Errors tab)."""

    record_key: str
    error_type: str
    message: str
    stage: str = "run"


def attempt_status(result: AttemptResult) -> RunStatus:
    """The status of one attempt: ok, timeout (killed at its deadline) or failed."""
    if result.ok:
        return RunStatus.OK
    return RunStatus.TIMEOUT if result.timed_out else RunStatus.FAILED


@dataclass(frozen=True)
class RunQueued(RunEvent):
    """A run was handed off and waits for a concurrency slot or a free worker."""

    kind: ClassVar[str] = "run_queued"
    run_id: str
    job: str
    automation: str
    trigger: str
    queued_at: float
    scheduled_for: float | None = None
    dry_run: bool = False
    requested_by: str = ""


@dataclass(frozen=True)
class RunStarted(RunEvent):
    """The run's first attempt began (emitted again with a later time when the worker
    reports it really began later than it was handed over)."""

    kind: ClassVar[str] = "run_started"
    run_id: str
    job: str
    started_at: float


@dataclass(frozen=True)
class AttemptFinished(RunEvent):
    """One attempt ended: its status, error, records and result."""

    kind: ClassVar[str] = "attempt_finished"
    run_id: str
    job: str
    attempt: int
    status: RunStatus
    started_at: float
    finished_at: float
    error_type: str = ""
    error_message: str = ""
    traceback: str = ""
    records_in: int = 0
    records_out: int = 0
    records_failed: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    record_errors: tuple[RecordError, ...] = ()

    @property
    def duration_s(self) -> float:
        return max(0.0, self.finished_at - self.started_at)

    @classmethod
    def of(cls, result: AttemptResult) -> AttemptFinished:
        """The event of an executor's :class:`AttemptResult`."""
        values = result.result or {}
        return cls(result.run_id, result.job, result.attempt, attempt_status(result),
                   result.started_at, result.finished_at, result.error_type,
                   result.error_message, result.traceback,
                   int(values.get("records_in", 0)), int(values.get("records_out", 0)),
                   int(values.get("records_failed", 0)), values,
                   tuple(_record_error(f) for f in result.record_failures))

    @classmethod
    def _from_values(cls, values: dict[str, Any]) -> RunEvent:
        values["status"] = RunStatus(values["status"])
        values["record_errors"] = tuple(RecordError(**e) if isinstance(e, dict) else e
                                        for e in values.get("record_errors", ()))
        return cls(**values)


def _record_error(failure: RecordFailure) -> RecordError:
    return RecordError(failure.record_key, failure.error_type, failure.message,
                       failure.stage)


@dataclass(frozen=True)
class RunFinished(RunEvent):
    """The run ended: ok, or failed/timeout after its last attempt (or never started:
    ``started_at`` is ``None`` then)."""

    kind: ClassVar[str] = "run_finished"
    run_id: str
    job: str
    status: RunStatus
    attempts: int
    started_at: float | None
    finished_at: float
    dry_run: bool = False
    records_in: int = 0
    records_out: int = 0
    records_failed: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    error_type: str = ""
    error_message: str = ""

    @property
    def duration_s(self) -> float:
        start = self.finished_at if self.started_at is None else self.started_at
        return max(0.0, self.finished_at - start)

    @classmethod
    def _from_values(cls, values: dict[str, Any]) -> RunEvent:
        values["status"] = RunStatus(values["status"])
        return cls(**values)


@dataclass(frozen=True)
class FireTimes(RunEvent):
    """The latest fire time handled per job (what catch-up after downtime starts from)."""

    kind: ClassVar[str] = "fire_times"
    times: dict[str, float]
