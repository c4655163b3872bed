"""Test helpers: a local Google Sheets API v4 emulator and fixtures around it.

``from sheetops.testing import SheetsEmulator``. The pytest plugin for automation
authors (fixtures ``run_automation``, ``sheetops_http``, ``sheetops_smtp``,
``sheetops_store``, ``sheetops_workbook``, ``sheetops_google_sheet``) is
:mod:`sheetops.testing.plugin`, loaded by its ``pytest11`` entry point; the emulator
fixtures of :mod:`sheetops.testing.fixtures` are imported explicitly by the tests that
use them.
"""

from sheetops.testing.emulator import Faults, SheetsEmulator, serve

__all__ = ["Faults", "SheetsEmulator", "serve"]
