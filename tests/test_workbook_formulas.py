"""Formula cells on config tabs survive sheetops' own writes of the status tabs.

The workbook is saved by LibreOffice (headless), so each formula carries the value
LibreOffice computed, as a file saved by Excel or Calc would. Sheetops then writes its
status tabs through ``sheetops run``; the config tabs must come out byte for byte as the
user saved them, and a job whose ``enabled`` is ``=1=2`` (saved FALSE) never runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import WorkbookHelper
from openpyxl import load_workbook
from sheetops.connectors.sheets.xlsx_parts import sheet_parts
from test_cli import cli, probe

from sheetops import tabs

SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")
needs_soffice = pytest.mark.skipif(
    SOFFICE is None and os.environ.get("SHEETOPS_REQUIRE_SERVICES") != "1",
    reason="LibreOffice (soffice) is not installed")


def saved_by_libreoffice(path: Path, tmp_path: Path) -> Path:
    """``path`` opened and saved again as .xlsx by LibreOffice (formulas get real values)."""
    assert SOFFICE, "LibreOffice is required in CI (.ci/run installs libreoffice-calc-nogui)"
    out = tmp_path / "lo-out"
    result = subprocess.run(
        [SOFFICE, "--headless", f"-env:UserInstallation=file://{tmp_path}/lo-profile",
         "--convert-to", "xlsx:Calc MS Excel 2007 XML", "--outdir", str(out), str(path)],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return out / path.name


def config_parts(path: Path) -> dict[str, bytes]:
    """The raw XML of every config tab and the shared strings they refer to."""
    with zipfile.ZipFile(path) as z:
        parts = sheet_parts(z)
        names = [parts[t] for t in tabs.CONFIG_TABS if t in parts]
        names += [n for n in z.namelist() if n == "xl/sharedStrings.xml"]
        return {n: z.read(n) for n in names}


@needs_soffice
def test_formula_cells_keep_their_values_through_a_status_flush(workbook, tmp_path, store):
    workbook.settings(refresh_interval_s=1, status_flush_interval_s=1)
    workbook.jobs(probe("on", "every 1s"), probe("off", "every 1s"))
    wb = load_workbook(workbook.path)
    ws = wb["Jobs"]
    enabled = [c.value for c in ws[1]].index("enabled") + 1
    ws.cell(row=3, column=enabled).value = "=1=2"  # the "off" job, saved FALSE
    ws.cell(row=2, column=enabled).value = "=1=1"  # the "on" job, saved TRUE
    wb.save(workbook.path)
    saved = saved_by_libreoffice(workbook.path, tmp_path)
    shutil.move(saved, workbook.path)
    sheet = WorkbookHelper(workbook.path).sheet
    jobs = sheet.read_tabs(["Jobs"])["Jobs"]
    assert [r[enabled - 1] for r in jobs[1:3]] == ["TRUE", "FALSE"]  # LibreOffice's values
    # validate brings the automation dropdown up to the registry `run` sees (other tests
    # may have registered more automations in this process when the workbook was made)
    cli("validate", "--sheet", str(workbook.path), cwd=tmp_path)
    before = config_parts(workbook.path)

    result = cli("run", "--for", "5", "--sheet", str(workbook.path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    runs = store.recent_runs(1000)
    assert {r["job"] for r in runs} == {"on"}  # "off" stayed disabled
    assert {r["job"] for r in workbook.records("Runs")} == {"on"}  # the status tabs written
    assert config_parts(workbook.path) == before  # config tabs exactly as saved
    formulas = load_workbook(workbook.path)["Jobs"]
    assert formulas.cell(row=3, column=enabled).value == "=1=2"
    values = load_workbook(workbook.path, data_only=True)["Jobs"]
    assert values.cell(row=3, column=enabled).value is False
    jobs = WorkbookHelper(workbook.path).sheet.read_tabs(["Jobs"])["Jobs"]
    assert [r[enabled - 1] for r in jobs[1:3]] == ["TRUE", "FALSE"]
