"""What every :class:`~sheetops.sheets.SheetBackend` promises, run over each backend the
same way: the ``.xlsx`` workbook and a Google Sheet (real gspread over HTTP against the
Sheets emulator). A new backend joins by adding itself to ``new_sheet``.

Each test starts from a new spreadsheet with one empty tab (``Sheet1``), as Google and
a spreadsheet program create one, opened through the factory (the plugin loader).
Requests are counted with the ``sheetops_sheet_requests_total`` metric every backend
keeps, so "one request per flush" is checked on both.
"""

# pytest fixtures are imported by name and then requested as arguments.

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from openpyxl import Workbook
from sheetops.connectors.sheets import open_sheet

from sheetops import plugins
from sheetops.metrics import REGISTRY
from sheetops.sheets import ColumnSpec, SheetBackend, TabSpec, TabWrite
from sheetops.testing.fixtures import emulator, emulator_env  # noqa: F401


def _requests(kind: str) -> float:
    return REGISTRY.get_sample_value("sheetops_sheet_requests_total", {"kind": kind}) or 0.0


@dataclass
class NewSheet:
    location: str
    sheet: SheetBackend
    #: what a user sees in the sheet, read the backend's way round (the emulator for
    #: Google, a fresh backend for the file), so a test never checks a cache against itself
    reread: Callable[[list[str]], dict[str, list[list[str]]]]

    def requests(self) -> dict[str, float]:
        return {kind: _requests(kind) for kind in ("read", "write")}

    def spent(self, before: dict[str, float]) -> dict[str, float]:
        return {k: v - before[k] for k, v in self.requests().items() if v != before[k]}


@pytest.fixture(params=["workbook", "google"])
def new_sheet(request: pytest.FixtureRequest, tmp_path: Path) -> NewSheet:
    if request.param == "workbook":
        path = tmp_path / "contract.xlsx"
        wb = Workbook()
        wb.active.title = "Sheet1"
        wb.save(path)
        location = str(path)
        return NewSheet(location, open_sheet(location),
                        lambda names: open_sheet(location).read_tabs(names))
    emu = request.getfixturevalue("emulator_env")
    key = emu.create_spreadsheet("contract")
    location = emu.sheet_url(key)
    titles = emu.tab_titles

    def reread(names: list[str]) -> dict[str, list[list[str]]]:
        return {n: emu.values(key, n) for n in names if n in titles(key)}

    return NewSheet(location, open_sheet(location), reread)


def test_the_factory_opens_the_one_backend_that_claims_the_location(new_sheet: NewSheet):
    assert isinstance(new_sheet.sheet, SheetBackend)
    assert new_sheet.sheet.location == new_sheet.location
    backends, missing = plugins.load_all(plugins.SHEETS)
    assert not missing
    claimed = [alias for alias, cls in backends.items() if cls.matches(new_sheet.location)]
    assert claimed == [type(new_sheet.sheet).__module__.rsplit(".", 1)[1]]


def test_cells_come_back_as_display_strings_trimmed_and_missing_tabs_absent(new_sheet):
    new_sheet.sheet.write_batch([TabWrite("Jobs", [
        ["job", "n", "on", "ratio", "blank"],
        ["a", 3, True, 2.5, None, ""],
        ["b", 0, False],
        ["", None],
    ])])
    expected = {"Jobs": [["job", "n", "on", "ratio", "blank"], ["a", "3", "TRUE", "2.5"],
                         ["b", "0", "FALSE"]]}
    assert new_sheet.sheet.read_tabs(["Jobs", "Nowhere"]) == expected
    assert new_sheet.reread(["Jobs", "Nowhere"]) == expected
    assert new_sheet.sheet.read_tabs(["Nowhere"]) == {}
    assert new_sheet.sheet.read_tabs(["Sheet1"]) == {"Sheet1": []}


def test_values_are_written_raw_so_a_formula_stays_text(new_sheet: NewSheet):
    cells = ["=1+1", "=HYPERLINK(\"http://x\")", "007", "1e3", "'quoted", "+1 555"]
    new_sheet.sheet.write_batch([TabWrite("Raw", [cells])])
    assert new_sheet.sheet.read_tabs(["Raw"]) == {"Raw": [cells]}
    assert new_sheet.reread(["Raw"]) == {"Raw": [cells]}


def test_one_write_batch_is_one_request_and_one_read_reads_every_tab(new_sheet: NewSheet):
    sheet = new_sheet.sheet
    sheet.write_batch([TabWrite("A", [["a"]]), TabWrite("B", [["b"]])])  # tabs exist now
    sheet.read_tabs(["A"])
    before = new_sheet.requests()
    sheet.write_batch([TabWrite("A", [["a1"], ["a2"]]), TabWrite("B", [["b1"]], start_row=3),
                       TabWrite("A", [["a5"]], start_row=5)])
    assert new_sheet.spent(before) == {"write": 1}
    before = new_sheet.requests()
    rows = sheet.read_tabs(["A", "B", "Missing"])
    assert new_sheet.spent(before) == {"read": 1}
    assert rows == {"A": [["a1"], ["a2"], [], [], ["a5"]], "B": [["b"], [], ["b1"]]}
    before = new_sheet.requests()
    sheet.write_batch([])
    assert new_sheet.spent(before) == {}


def test_a_write_creates_a_missing_tab_and_grows_one_too_small(new_sheet: NewSheet):
    sheet = new_sheet.sheet
    sheet.write_batch([TabWrite("Grow", [["first"]])])
    far = ["x"] * 29 + ["edge"]  # column AD, past a new Google tab's 26 columns
    sheet.write_batch([TabWrite("Grow", [far], start_row=1205),
                       TabWrite("New", [["made"]], start_row=2)])
    for rows in (sheet.read_tabs(["Grow", "New"]), new_sheet.reread(["Grow", "New"])):
        assert len(rows["Grow"]) == 1205
        assert rows["Grow"][0] == ["first"] and rows["Grow"][-1] == far
        assert rows["New"] == [[], ["made"]]


def test_a_shorter_write_with_its_width_clears_what_a_longer_one_left(new_sheet: NewSheet):
    sheet = new_sheet.sheet
    sheet.write_batch([TabWrite("Status", [["h1", "h2", "h3"], *[[f"r{i}", "b", "c"]
                                                                 for i in range(5)]])])
    sheet.write_batch([TabWrite("Status", [["h1", "h2", "h3"], ["only"], *[[]] * 4],
                                width=3)])
    expected = {"Status": [["h1", "h2", "h3"], ["only"]]}
    assert sheet.read_tabs(["Status"]) == expected
    assert new_sheet.reread(["Status"]) == expected


def test_rows_above_start_row_and_other_tabs_are_left_alone(new_sheet: NewSheet):
    sheet = new_sheet.sheet
    sheet.write_batch([TabWrite("T", [["1"], ["2"], ["3"]]), TabWrite("U", [["u"]])])
    sheet.write_batch([TabWrite("T", [["three"], ["four"]], start_row=3)])
    assert sheet.read_tabs(["T", "U"]) == {"T": [["1"], ["2"], ["three"], ["four"]],
                                           "U": [["u"]]}


SPECS = [
    TabSpec("Jobs", (ColumnSpec("job", "Unique id"), ColumnSpec("enabled", "TRUE/FALSE",
                                                                checkbox=True),
                     ColumnSpec("catch_up", "after downtime", choices=("skip", "once"))),
            examples=(("ping", True, "once"),)),
    TabSpec("Status", (ColumnSpec("job", "Job id"), ColumnSpec("state", "last state")),
            system=True),
]


def test_ensure_tabs_creates_only_the_missing_tabs_and_leaves_rows_alone(new_sheet):
    sheet = new_sheet.sheet
    sheet.write_batch([TabWrite("Status", [["job", "state"], ["keep", "me"]])])
    report = sheet.ensure_tabs(SPECS)
    assert (report.created, report.existing) == (["Jobs"], ["Status"])
    expected = {"Jobs": [["job", "enabled", "catch_up"], ["ping", "TRUE", "once"]],
                "Status": [["job", "state"], ["keep", "me"]]}
    assert sheet.read_tabs(["Jobs", "Status"]) == expected
    assert new_sheet.reread(["Jobs", "Status"]) == expected
    again = sheet.ensure_tabs(SPECS)
    assert (again.created, again.existing) == ([], ["Jobs", "Status"])
