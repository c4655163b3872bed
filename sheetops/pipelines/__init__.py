"""Pipelines: records from a source through stages to a sink, on durable queues.

    from sheetops.pipelines import pipeline, json_pages

    pipe = pipeline("welcome", source=json_pages("http://…/contacts"), key="id")

    @pipe.stage(batch_size=500)
    def validate(records): ...

    @pipe.sink(idempotent=True)
    def deliver(records, ctx): ...

See docs/pipelines.md.
"""

from sheetops.pipelines.batch import Keyed, RecordError
from sheetops.pipelines.engine import RunReport, StageRuntime, process_claim, run
from sheetops.pipelines.model import (
    PIPELINES,
    Pipeline,
    PipelineError,
    StageSettings,
    get_pipeline,
    pipeline,
)
from sheetops.pipelines.sheet_tab import SheetTab, sheet_tab
from sheetops.pipelines.sources import (
    csv_file,
    from_params,
    iterable,
    json_pages,
    jsonl_file,
)

__all__ = [
    "PIPELINES",
    "Keyed",
    "Pipeline",
    "PipelineError",
    "RecordError",
    "RunReport",
    "SheetTab",
    "StageRuntime",
    "StageSettings",
    "csv_file",
    "from_params",
    "get_pipeline",
    "iterable",
    "json_pages",
    "jsonl_file",
    "pipeline",
    "process_claim",
    "run",
    "sheet_tab",
]
