"""config_sheets/sheetops-template.xlsx, the workbook an ops person copies or uploads to
Google Drive, stays what `sheetops init` makes: same tabs, cells, notes and dropdowns."""

from __future__ import annotations

from pathlib import Path

from conftest import TESTS_DIR
from openpyxl import load_workbook
from test_cli import cli

TEMPLATE = TESTS_DIR.parent / "config_sheets" / "sheetops-template.xlsx"
REMAKE = ("SHEETOPS_AUTOMATIONS= sheetops init --sheet config_sheets/sheetops-template.xlsx "
          "(after deleting it)")


def _contents(path: Path) -> dict[str, object]:
    """What a user sees of each tab: values, notes, dropdowns, hidden or not."""
    wb = load_workbook(path)
    return {ws.title: (
        ws.sheet_state,
        [[c.value for c in row] for row in ws.iter_rows()],
        {c.coordinate: c.comment.text for row in ws.iter_rows() for c in row if c.comment},
        sorted((str(dv.sqref), dv.type, dv.formula1) for dv in ws.data_validations.dataValidation),
    ) for ws in wb.worksheets}


def test_the_template_is_what_init_makes(tmp_path):
    fresh = tmp_path / "fresh.xlsx"
    result = cli("init", "--sheet", str(fresh), cwd=tmp_path, SHEETOPS_AUTOMATIONS="")
    assert result.returncode == 0, result.stderr
    assert TEMPLATE.exists(), f"missing: {REMAKE}"
    assert _contents(TEMPLATE) == _contents(fresh), f"out of date: {REMAKE}"
