"""Drive's export, copy and CSV import on the emulator, through real gspread calls."""

# pytest fixtures are imported by name and then requested as arguments.
# ruff: noqa: F811

from __future__ import annotations

from gspread.utils import ExportFormat

from sheetops.testing import SheetsEmulator
from sheetops.testing.fixtures import emulator  # noqa: F401


def test_export_copy_and_import_csv(emulator: SheetsEmulator) -> None:
    gc = emulator.gspread_client()
    sh = gc.create("Ops")
    sh.sheet1.update([["a", "b, c"], ["1"]], "A1:B2")
    sh.sheet1.merge_cells("A3:B3")
    assert bytes(gc.export(sh.id, ExportFormat.CSV)).decode() == 'a,"b, c"\r\n1,'

    copied = gc.copy(sh.id, title="Ops copy")
    assert copied.title == "Ops copy" and copied.id != sh.id
    assert copied.fetch_sheet_metadata()["sheets"] == sh.fetch_sheet_metadata()["sheets"]
    assert copied.sheet1.get_all_values() == [["a", "b, c"], ["1", ""]]

    gc.import_csv(sh.id, "x,y\n2,3")
    assert gc.open_by_key(sh.id).sheet1.get_all_values() == [["x", "y"], ["2", "3"]]
    assert copied.sheet1.acell("A1").value == "a"  # the copy is its own spreadsheet
