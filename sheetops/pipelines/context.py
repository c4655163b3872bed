"""What a stage sees as ``ctx``: the job, the run, the batch's keys, the template, and
for a SQL sink the transaction's connection."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sheetops.errors import PermanentError

if TYPE_CHECKING:
    from sheetops.pipelines.engine import StageRuntime


class StageContext:
    """``ctx`` of a stage function ``fn(records, ctx)``.

    ``keys`` are the batch's record keys, in order; ``connection`` is the SQLAlchemy
    connection of the hand-off transaction (SQL sinks only: what you write there
    commits with the ack); ``params``, ``render`` and ``template`` come from the job's
    row when the pipeline runs as a job; ``dry_run`` is true when nothing may leave."""

    def __init__(self, rt: StageRuntime, keys: list[str], connection: Any = None) -> None:
        self._rt = rt
        self.keys = keys
        self.connection = connection
        self.job = rt.job
        self.stage = rt.stage.name
        self.run_id = rt.run_id
        self.dry_run = rt.dry_run
        run = rt.run_context
        self.params: dict[str, Any] = rt.params
        self.log = getattr(run, "log", None) or logging.getLogger(
            f"sheetops.pipelines.{rt.job}.{rt.stage.name}")

    @property
    def template(self) -> Any:
        return getattr(self._rt.run_context, "template", None)

    def render(self, **variables: Any) -> Any:
        """Render the job's template (Templates tab) with ``variables``."""
        run = self._rt.run_context
        if run is None:
            raise PermanentError(f"pipeline {self.job!r} runs outside a job, so it has "
                                 "no template to render")
        return run.render(**variables)

    def done(self, key: str) -> bool:
        """Whether this sink's ledger already holds ``key`` (delivered before)."""
        from sheetops.store import ledger

        with self._rt.queues.engine.connect() as conn:
            return bool(ledger.done_keys(conn, self.job, self.stage, [key]))
