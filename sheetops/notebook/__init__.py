"""Prototype automations in Jupyter against the real config sheet.

::

    from sheetops.notebook import automation, dry_run, open_config, run

    cfg = open_config("ops.xlsx")          # or a Google Sheet URL
    cfg.jobs                               # the Jobs tab, typed
    cfg.problems                           # validation problems with their cells

    @automation("count_items")             # the same decorator as in automations/
    def count_items(ctx):
        ...

    dry_run("count_items", params={...})   # effects captured, nothing sent
    run("my-job", config=cfg)              # for real: attempts and errors as DataFrames

    dry_run(pipe, stage="validate", records=[...])   # one pipeline stage, sample records
    run(pipe, config=cfg).stages           # records per stage
    letters = dead_letters(pipe.name, config=cfg)    # edit letters.record, then
    replay(letters, config=cfg)

Store reads (run history, errors) are in :mod:`sheetops.notebook.history`; pipelines
(stage dry runs, queue figures, dead letters, replay) in
:mod:`sheetops.notebook.pipelines`.
"""

from sheetops.notebook.capture import capture_effects, cell_diff
from sheetops.notebook.config import Config, open_config
from sheetops.notebook.pipelines import StageDryRun, dead_letters, replay, stage_figures
from sheetops.notebook.runs import DryRun, RunResult, dry_run, run, store_of
from sheetops.registry import automation

__all__ = ["Config", "DryRun", "RunResult", "StageDryRun", "automation", "capture_effects",
           "cell_diff", "dead_letters", "dry_run", "open_config", "replay", "run",
           "stage_figures", "store_of"]
