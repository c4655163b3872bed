"""The old home of the sheet interface, kept so connectors written against it still import.

:class:`SheetBackend` and the tab specs live with the engine, in :mod:`sheetops.sheets`;
import them from there. Nothing in sheetops imports this module.
"""

from sheetops.sheets import CellValue, ColumnSpec, InitReport, SheetBackend, TabSpec, TabWrite

__all__ = ["CellValue", "ColumnSpec", "InitReport", "SheetBackend", "TabSpec", "TabWrite"]
