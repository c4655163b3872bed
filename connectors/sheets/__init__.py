"""Config-sheet backends. Pick one with :func:`open_sheet`; the engine sees only
:class:`~sheetops.connectors.sheets.base.SheetBackend`."""

from sheetops.connectors.sheets.base import (
    CellValue,
    ColumnSpec,
    InitReport,
    SheetBackend,
    TabSpec,
    TabWrite,
)
from sheetops.connectors.sheets.factory import open_sheet

__all__ = [
    "CellValue",
    "ColumnSpec",
    "InitReport",
    "SheetBackend",
    "TabSpec",
    "TabWrite",
    "open_sheet",
]
