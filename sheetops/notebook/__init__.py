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

Store reads (run history, errors) are in :mod:`sheetops.notebook.history`.
"""

from sheetops.notebook.capture import capture_effects, cell_diff
from sheetops.notebook.config import Config, open_config
from sheetops.notebook.runs import DryRun, RunResult, dry_run, run, store_of
from sheetops.registry import automation

__all__ = ["Config", "DryRun", "RunResult", "automation", "capture_effects", "cell_diff",
           "dry_run", "open_config", "run", "store_of"]
