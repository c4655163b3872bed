"""The structural batchUpdate requests gspread sends, through real gspread calls over HTTP."""

# pytest fixtures are imported by name and then requested as arguments.
# ruff: noqa: F811

from __future__ import annotations

import gspread
import pytest
from gspread.exceptions import APIError
from test_emulator import sh  # noqa: F401  (fixture: a new spreadsheet)

from sheetops.testing.fixtures import emulator  # noqa: F401


def _sheet_meta(sh: gspread.Spreadsheet) -> dict:
    return sh.fetch_sheet_metadata()["sheets"][0]


def test_merge_and_unmerge_keep_the_top_left_value(sh: gspread.Spreadsheet) -> None:
    ws = sh.sheet1
    ws.update([[1, 2, "x"], [3, 4, "y"]], "A1:C2")
    ws.merge_cells("A1:B2", merge_type="MERGE_ROWS")
    assert len(_sheet_meta(sh)["merges"]) == 2
    ws.merge_cells("A1:B2")  # a bigger merge replaces the ones inside it
    assert _sheet_meta(sh)["merges"] == [{"sheetId": 0, "startRowIndex": 0, "endRowIndex": 2,
                                          "startColumnIndex": 0, "endColumnIndex": 2}]
    assert ws.get_all_values() == [["1", "", "x"], ["", "", "y"]]
    assert ws.get_values(combine_merged_cells=True) == [["1", "1", "x"], ["1", "1", "y"]]
    with pytest.raises(APIError, match="partially overlap"):
        ws.merge_cells("B2:C2")
    ws.unmerge_cells("A1:B2")
    assert "merges" not in _sheet_meta(sh)


def test_insert_and_delete_rows_and_columns_shift_cells(sh: gspread.Spreadsheet) -> None:
    ws = sh.sheet1
    ws.update([["a1", "b1"], ["a2", "b2"]], "A1:B2")
    ws.insert_row(["new"], 2)
    assert ws.col_values(1) == ["a1", "new", "a2"] and ws.row_count == 1001
    ws.insert_cols([["x"]], 1)
    assert ws.row_values(1) == ["x", "a1", "b1"] and ws.col_count == 27
    ws.delete_rows(2)
    ws.delete_columns(1)
    assert ws.get_all_values() == [["a1", "b1"], ["a2", "b2"]]
    assert (ws.row_count, ws.col_count) == (1000, 26)
    with pytest.raises(APIError, match="can't delete all the rows"):
        ws.delete_rows(1, 1000)


def test_named_ranges_are_listed_readable_and_deleted(sh: gspread.Spreadsheet) -> None:
    ws = sh.sheet1
    ws.update([["x", "y"]], "A1:B1")
    reply = ws.define_named_range("A1:B1", "Header")
    named_id = reply["replies"][0]["addNamedRange"]["namedRange"]["namedRangeId"]
    listed = sh.fetch_sheet_metadata(params={"fields": "namedRanges"})
    assert listed["namedRanges"][0]["name"] == "Header"
    assert listed["namedRanges"][0]["range"]["endColumnIndex"] == 2
    assert sh.values_get("Header")["values"] == [["x", "y"]]
    with pytest.raises(APIError, match="already exists"):
        ws.define_named_range("A2", "Header")
    ws.delete_named_range(named_id)
    assert sh.fetch_sheet_metadata(params={"fields": "namedRanges"}) == {}


def test_protected_ranges_are_listed_and_deleted(sh: gspread.Spreadsheet) -> None:
    ws = sh.sheet1
    ws.add_protected_range("A1:B2", warning_only=True, description="totals")
    (prot,) = _sheet_meta(sh)["protectedRanges"]
    assert prot["warningOnly"] is True and prot["description"] == "totals"
    assert prot["range"]["endRowIndex"] == 2 and prot["range"]["startColumnIndex"] == 0
    assert sh.list_protected_ranges(ws.id)[0]["protectedRangeId"] == prot["protectedRangeId"]
    ws.delete_protected_range(prot["protectedRangeId"])
    assert "protectedRanges" not in _sheet_meta(sh)


def test_sort_numbers_before_text_and_empty_cells_last(sh: gspread.Spreadsheet) -> None:
    ws = sh.sheet1
    ws.update([["pear", 3], ["", 1], ["Apple", 10], ["banana", 2]], "A1:B4")
    ws.sort((1, "asc"), range="A1:B4")
    assert ws.get_all_values() == [["Apple", "10"], ["banana", "2"], ["pear", "3"], ["", "1"]]
    ws.sort((2, "des"), range="A1:B4")
    assert ws.col_values(2) == ["10", "3", "2", "1"]


def test_copy_and_cut_paste(sh: gspread.Spreadsheet) -> None:
    ws = sh.sheet1
    ws.update([["a"], ["b"]], "A1:A2")
    ws.copy_range("A1:A2", "B1:C4")  # repeated to fill the destination
    assert ws.get("B1:C4") == [["a", "a"], ["b", "b"], ["a", "a"], ["b", "b"]]
    ws.cut_range("A1:A2", "E1")
    assert ws.col_values(1) == [] and ws.col_values(5) == ["a", "b"]


def test_basic_filter_and_dimension_groups(sh: gspread.Spreadsheet) -> None:
    ws = sh.sheet1
    ws.set_basic_filter("B1:C2")
    assert _sheet_meta(sh)["basicFilter"]["range"] == {
        "sheetId": 0, "startRowIndex": 0, "endRowIndex": 2,
        "startColumnIndex": 1, "endColumnIndex": 3}
    ws.clear_basic_filter()
    assert "basicFilter" not in _sheet_meta(sh)
    ws.add_dimension_group_rows(0, 4)
    ws.add_dimension_group_rows(1, 2)
    assert [(g["range"]["startIndex"], g["depth"]) for g in ws.list_dimension_group_rows()] \
        == [(0, 1), (1, 2)]
    ws.delete_dimension_group_rows(1, 2)
    ws.delete_dimension_group_rows(0, 4)
    ws.add_dimension_group_columns(0, 2)
    assert ws.list_dimension_group_rows() == []
    assert ws.list_dimension_group_columns()[0]["range"]["dimension"] == "COLUMNS"


def test_formats_and_column_widths_read_back(sh: gspread.Spreadsheet) -> None:
    ws = sh.sheet1
    ws.format("A2:B2", {"backgroundColor": {"green": 1}, "textFormat": {"bold": True}})
    ws.update_acell("A2", "kept")  # writing a value keeps the format
    got = sh.fetch_sheet_metadata(params={
        "ranges": "Sheet1!A2", "fields": "sheets.data.rowData.values.userEnteredFormat"})
    fmt = got["sheets"][0]["data"][0]["rowData"][0]["values"][0]["userEnteredFormat"]
    assert fmt == {"backgroundColor": {"green": 1},
                   "backgroundColorStyle": {"rgbColor": {"green": 1}},
                   "textFormat": {"bold": True}}
    ws.update_acell("A1", "x" * 200)
    widths = {"fields": "sheets.data.columnMetadata"}
    before = sh.fetch_sheet_metadata(params=widths)["sheets"][0]["data"][0]["columnMetadata"]
    ws.columns_auto_resize(0, 1)
    after = sh.fetch_sheet_metadata(params=widths)["sheets"][0]["data"][0]["columnMetadata"]
    assert after[0]["pixelSize"] > before[0]["pixelSize"] == 100


def test_sheet_and_spreadsheet_properties(sh: gspread.Spreadsheet) -> None:
    ws = sh.sheet1
    with pytest.raises(APIError, match="can't hide all the sheets"):
        ws.hide()
    ws.hide_gridlines()
    assert _sheet_meta(sh)["properties"]["gridProperties"]["hideGridlines"] is True
    sh.update_timezone("Europe/Paris")
    sh.update_locale("fr_FR")
    props = sh.fetch_sheet_metadata()["properties"]
    assert (props["timeZone"], props["locale"]) == ("Europe/Paris", "fr_FR")


def test_modified_time_moves_on_every_write(sh: gspread.Spreadsheet) -> None:
    seen = {sh.get_lastUpdateTime()}
    for i in range(3):
        sh.sheet1.update_acell("A1", i)
        seen.add(sh.get_lastUpdateTime())
    assert len(seen) == 4


def test_unformatted_numbers_and_spaced_formulas(sh: gspread.Spreadsheet) -> None:
    ws = sh.sheet1
    ws.update([["= 1 / 4", "2.0", "2,000,000.01"]], "A1:C1", raw=False)
    assert ws.get("A1:C1", value_render_option="UNFORMATTED_VALUE") == [[0.25, 2, 2000000.01]]
    assert ws.acell("A1").numeric_value == 0.25


def test_append_around_empty_cells_as_google_does(sh: gspread.Spreadsheet) -> None:
    """gspread issue #537: an empty cell splits the row into two tables."""
    ws = sh.sheet1
    ws.append_row(["a", "", "c"])
    ws.append_row(["a", "", "c"])  # appended to the last table: the one at C1
    assert ws.row_values(2) == ["", "", "a", "", "c"]
    ws.append_row(["z"], table_range="A1")  # the table at A1 is one row high
    assert ws.row_values(2)[0] == "z"
