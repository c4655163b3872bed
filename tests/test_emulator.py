"""The Sheets emulator, driven by the real gspread client over HTTP."""

# pytest fixtures are imported by name and then requested as arguments.
# ruff: noqa: F811

from __future__ import annotations

from pathlib import Path

import gspread
import openpyxl
import pytest
import requests
from gspread.exceptions import APIError

from sheetops.testing import SheetsEmulator
from sheetops.testing.a1 import Bounds, format_range, parse_bounds, quote_sheet, split_range
from sheetops.testing.fixtures import emulator  # noqa: F401


@pytest.fixture
def sh(emulator: SheetsEmulator) -> gspread.Spreadsheet:
    return emulator.gspread_client().create("Ops")


def test_a1_parsing_and_formatting() -> None:
    assert split_range("'My ''Tab'''!A1:C3") == ("My 'Tab'", "A1:C3")
    assert split_range("'My Tab'") == ("My Tab", None)
    assert parse_bounds("A:C") == Bounds(0, 0, None, 3)
    assert parse_bounds("2:5") == Bounds(1, 0, 5, None)
    assert parse_bounds("B2") == Bounds(1, 1, 2, 2)
    assert parse_bounds("C3:A1") == Bounds(0, 0, 3, 3)
    assert quote_sheet("Jobs") == "Jobs" and quote_sheet("My Tab") == "'My Tab'"
    assert quote_sheet("A1") == "'A1'"
    assert format_range("Jobs", Bounds(0, 0, 20, 17)) == "Jobs!A1:Q20"


def test_create_open_and_metadata(emulator: SheetsEmulator) -> None:
    gc = emulator.gspread_client()
    sh = gc.create("Ops config")
    assert sh.title == "Ops config" and sh.sheet1.title == "Sheet1"
    assert sh.sheet1.row_count == 1000 and sh.sheet1.col_count == 26
    assert gc.open("Ops config").id == sh.id
    assert gc.open_by_url(emulator.sheet_url(sh.id)).id == sh.id
    meta = sh.fetch_sheet_metadata()
    assert meta["spreadsheetUrl"].endswith(f"/spreadsheets/d/{sh.id}/edit")
    assert "data" not in meta["sheets"][0]
    assert emulator.counts["drive.create"] == 1 and emulator.counts["drive.list"] == 1


def test_trimming_gaps_and_missing_values_key(sh: gspread.Spreadsheet) -> None:
    ws = sh.sheet1
    ws.update([["a", "b", ""], ["", "", ""], ["c", "", ""]], "A1")
    raw = sh.values_get("Sheet1!A1:D5")
    assert raw["range"] == "Sheet1!A1:D5"
    assert raw["values"] == [["a", "b"], [], ["c"]]
    assert "values" not in sh.values_get("Sheet1!F10:G12")
    cols = sh.values_get("Sheet1", params={"majorDimension": "COLUMNS"})
    assert cols["range"] == "Sheet1!A1:Z1000" and cols["values"] == [["a", "", "c"], ["b"]]


def test_raw_versus_user_entered_and_render_options(sh: gspread.Spreadsheet) -> None:
    ws = sh.sheet1
    ws.update([["=1+1", "12", "true", 7]], "A1", raw=True)
    ws.update([["=1+1", "12", "true", "'12", "2024-01-05"]], "A2", raw=False)
    assert ws.get("A1:E2") == [["=1+1", "12", "true", "7"], ["2", "12", "TRUE", "12", "2024-01-05"]]
    unformatted = ws.get("A1:E2", value_render_option="UNFORMATTED_VALUE")
    assert unformatted == [["=1+1", "12", "true", 7], [2, 12, True, "12", 45296]]
    assert ws.get("A2:E2", value_render_option="FORMULA") == [["=1+1", 12, True, "12", 45296]]
    assert ws.get("E2", value_render_option="UNFORMATTED_VALUE",
                  date_time_render_option="FORMATTED_STRING") == [["2024-01-05"]]


def test_quoted_names_batch_get_and_batch_update(sh: gspread.Spreadsheet) -> None:
    ws = sh.add_worksheet("My 'Tab'", rows=20, cols=5)
    ws.batch_update([{"range": "A1:B1", "values": [["x", "y"]]},
                     {"range": "C3", "values": [["z"]]}])
    got = ws.batch_get(["A1:B1", "C3", "A:A"])
    assert [vr.range for vr in got] == ["'My ''Tab'''!A1:B1", "'My ''Tab'''!C3",
                                        "'My ''Tab'''!A1:A20"]
    assert got[0] == [["x", "y"]] and got[1] == [["z"]] and got[2] == [["x"]]
    assert sh.values_get("'my ''tab'''!2:3")["values"] == [[], ["", "", "z"]]


def test_append_finds_the_table_and_grows_the_grid(sh: gspread.Spreadsheet) -> None:
    ws = sh.add_worksheet("Log", rows=3, cols=2)
    ws.update([["h1", "h2"], ["a", "b"]], "A1")
    reply = ws.append_rows([["c", "d"], ["e", "f", "g"]])
    assert reply["tableRange"] == "Log!A1:B2"
    assert reply["updates"]["updatedRange"] == "Log!A3:C4"
    assert ws.get_all_values() == [["h1", "h2", ""], ["a", "b", ""], ["c", "d", ""],
                                   ["e", "f", "g"]]
    props = sh.worksheet("Log")
    assert (props.row_count, props.col_count) == (4, 3)


def test_writes_beyond_the_grid_are_refused(sh: gspread.Spreadsheet) -> None:
    ws = sh.add_worksheet("Small", rows=2, cols=2)
    with pytest.raises(APIError) as err:
        ws.update([["a", "b", "c"]], "A1")
    assert err.value.code == 400 and "exceeds grid limits" in str(err.value)
    with pytest.raises(APIError):
        ws.update([["a"], ["b"]], "A1:B1")
    assert "values" not in sh.values_get("Small")


def test_errors_have_googles_shape(emulator: SheetsEmulator, sh: gspread.Spreadsheet
                                  ) -> None:
    r = requests.get(f"{emulator.url}/v4/spreadsheets/nope",
                     headers={"Authorization": "Bearer x"}, timeout=5)
    assert r.status_code == 404
    assert r.json() == {"error": {"code": 404, "message": "Requested entity was not found.",
                                  "status": "NOT_FOUND"}}
    assert requests.get(f"{emulator.url}/v4/spreadsheets/{sh.id}", timeout=5).status_code == 401
    with pytest.raises(APIError) as err:
        sh.values_get("Missing!A1")
    assert err.value.code == 400 and err.value.error["status"] == "INVALID_ARGUMENT"
    with pytest.raises(gspread.SpreadsheetNotFound):
        emulator.gspread_client().open_by_key("x" * 44)


def test_batch_update_is_atomic(sh: gspread.Spreadsheet) -> None:
    body = {"requests": [{"addSheet": {"properties": {"title": "New"}}},
                         {"deleteSheet": {"sheetId": 424242}}]}
    with pytest.raises(APIError) as err:
        sh.batch_update(body)
    assert err.value.code == 400 and "requests[1].deleteSheet" in str(err.value)
    assert [w.title for w in sh.worksheets()] == ["Sheet1"]
    with pytest.raises(APIError):
        sh.add_worksheet("sheet1", rows=5, cols=5)  # names are case-insensitive


def test_structural_requests(sh: gspread.Spreadsheet) -> None:
    ws = sh.add_worksheet("Jobs", rows=5, cols=3)
    ws.update([["a", "b", "c"]] * 5, "A1")
    ws.freeze(rows=1)
    ws.resize(rows=3)
    ws.update_title("Work")
    sh.batch_update({"requests": [
        {"appendDimension": {"sheetId": ws.id, "dimension": "COLUMNS", "length": 2}},
        {"setDataValidation": {"range": {"sheetId": ws.id, "startRowIndex": 1,
                                         "startColumnIndex": 0, "endColumnIndex": 1},
                               "rule": {"condition": {"type": "ONE_OF_LIST", "values": [
                                   {"userEnteredValue": "a"}]}, "strict": True}}},
    ]})
    ws.update_note("B1", "the b column")
    again = sh.worksheet("Work")
    assert (again.row_count, again.col_count, again.frozen_row_count) == (3, 5, 1)
    assert again.get_all_values() == [["a", "b", "c"]] * 3
    assert again.get_note("B1") == "the b column" and again.get_notes() == [["", "the b column"]]
    cell = sh.fetch_sheet_metadata({"ranges": "Work!A2", "includeGridData": "true"})
    assert cell["sheets"][0]["data"][0]["rowData"][0]["values"][0]["dataValidation"][
        "condition"]["type"] == "ONE_OF_LIST"
    sh.del_worksheet(again)
    assert [w.title for w in sh.worksheets()] == ["Sheet1"]


def test_clear_and_batch_clear(sh: gspread.Spreadsheet) -> None:
    ws = sh.sheet1
    ws.update([["a", "b"], ["c", "d"]], "A1")
    sh.values_clear("Sheet1!A1")
    sh.values_batch_clear(body={"ranges": ["Sheet1!B2"]})
    assert ws.get_all_values() == [["", "b"], ["c", ""]]
    ws.clear()
    assert "values" not in sh.values_get("Sheet1")


def test_faults_and_counts(emulator: SheetsEmulator, sh: gspread.Spreadsheet
                           ) -> None:
    ws = sh.sheet1
    emulator.reset_counts()
    emulator.faults.set(error_rate=0.5, codes=(429,), seed=7, retry_after=2)
    codes = []
    for _ in range(20):
        try:
            sh.values_batch_get(["Sheet1!A1"])
            codes.append(200)
        except APIError as e:
            codes.append(e.code)
            assert e.response.headers["Retry-After"] == "2"
    assert set(codes) == {200, 429} and emulator.counts["values.batchGet"] == 20
    emulator.faults.set(error_rate=0.0, outage=True)
    with pytest.raises(APIError) as err:
        ws.update([["x"]], "A1")
    assert err.value.code == 503
    emulator.faults.clear()
    ws.update([["x"]], "A1")
    assert emulator.counts["values.update"] == 2
    emulator.reset_counts()
    assert emulator.total_requests == 0


def test_sqlite_persistence_across_restart(tmp_path: Path) -> None:
    data = tmp_path / "sheets.db"
    with SheetsEmulator(data=data) as emu:
        sh = emu.gspread_client().create("Kept")
        sh.sheet1.update([["kept", 1]], "A1")
        sh.add_worksheet("Second", rows=10, cols=2)
        key = sh.id
    with SheetsEmulator(data=data) as emu:
        sh = emu.gspread_client().open_by_key(key)
        assert sh.sheet1.get_all_values() == [["kept", "1"]]
        assert [w.title for w in sh.worksheets()] == ["Sheet1", "Second"]


def test_seed_from_xlsx(emulator: SheetsEmulator, tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Jobs"
    ws.append(["job", "enabled", "max_attempts"])
    ws.append(["ping", True, 3])
    ws.freeze_panes = "A2"
    wb.create_sheet("Settings").append(["key", "value"])
    path = tmp_path / "ops.xlsx"
    wb.save(path)
    key = emulator.seed_xlsx(path)
    sh = emulator.gspread_client().open_by_url(emulator.sheet_url(key))
    assert sh.title == "ops" and [w.title for w in sh.worksheets()] == ["Jobs", "Settings"]
    assert sh.worksheet("Jobs").get_all_values() == [["job", "enabled", "max_attempts"],
                                                     ["ping", "TRUE", "3"]]
    assert sh.worksheet("Jobs").frozen_row_count == 1
    assert requests.get(emulator.sheet_url(key), timeout=5).text.count("<table") == 2
