"""Test helpers: a local Google Sheets API v4 emulator and fixtures around it.

``from sheetops.testing import SheetsEmulator``; pytest fixtures live in
:mod:`sheetops.testing.fixtures` and are imported explicitly by the tests that use them.
"""

from sheetops.testing.emulator import Faults, SheetsEmulator, serve

__all__ = ["Faults", "SheetsEmulator", "serve"]
