"""Config-sheet backends (an ``.xlsx`` workbook, a Google Sheet). Pick one with
:func:`open_sheet`; the engine sees only :class:`sheetops.sheets.SheetBackend`."""

from sheetops.connectors.sheets.factory import open_sheet

__all__ = ["open_sheet"]
