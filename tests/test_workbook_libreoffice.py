"""The workbook `sheetops init` makes opens cleanly in LibreOffice (headless), every tab
with its header row, and keeps the file readable by the group like any saved file."""

from __future__ import annotations

import csv
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from sheetops.connectors.sheets.workbook import WorkbookSheet

from sheetops import tabs
from sheetops.engine import init_sheet
from sheetops.registry import registry

SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")


def test_init_workbook_has_normal_file_permissions(tmp_path: Path) -> None:
    path = tmp_path / "ops.xlsx"
    init_sheet(WorkbookSheet(path))
    mode = stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


@pytest.mark.skipif(SOFFICE is None and os.environ.get("SHEETOPS_REQUIRE_SERVICES") != "1",
                    reason="LibreOffice (soffice) is not installed")
def test_init_workbook_opens_in_libreoffice(tmp_path: Path) -> None:
    assert SOFFICE, "LibreOffice is required in CI (.ci/run installs libreoffice-calc-nogui)"
    registry.discover()
    path = tmp_path / "ops.xlsx"
    init_sheet(WorkbookSheet(path))
    # one CSV per tab: filter options 44=',', 34='"', UTF-8, -1 = every sheet
    result = subprocess.run(
        [SOFFICE, "--headless", f"-env:UserInstallation=file://{tmp_path}/lo-profile",
         "--convert-to", 'csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,'
         'false,false,-1', "--outdir", str(tmp_path / "out"), str(path)],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    for tab in (*tabs.CONFIG_TABS, *tabs.SYSTEM_TABS):
        with open(tmp_path / "out" / f"ops-{tab}.csv", newline="", encoding="utf-8") as f:
            header = next(csv.reader(f))
        assert header == [c.name for c in tabs.columns_of(tab)], tab
    with open(tmp_path / "out" / "ops-Jobs.csv", newline="", encoding="utf-8") as f:
        jobs = list(csv.DictReader(f))
    assert jobs[0]["automation"] in registry.names() and jobs[0]["enabled"] == "TRUE"
