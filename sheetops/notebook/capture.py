"""Captured effects as DataFrames.

The capture itself is :mod:`sheetops.dryrun` (shared with ``sheetops run-job
--dry-run``); this module only turns what it recorded into frames for a notebook.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from sheetops.dryrun import CHANGE_COLUMNS, EFFECT_COLUMNS, Captured, capture_effects, cell_changes
from sheetops.sheets import TabWrite

__all__ = ["Captured", "capture_effects", "cell_diff", "effects_frame"]


def effects_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Effect rows (kind, target, summary, detail) as a DataFrame."""
    return pd.DataFrame(list(rows), columns=list(EFFECT_COLUMNS))


def cell_diff(sheet_writes: Sequence[tuple[Any, TabWrite]]) -> pd.DataFrame:
    """The cells the captured writes would change: tab, cell, before, after."""
    return pd.DataFrame(cell_changes(sheet_writes), columns=list(CHANGE_COLUMNS))
