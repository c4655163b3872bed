"""The Jobs tab's dropdowns say what sheetops accepts: the automation list follows the
registry (a newly registered automation can be picked and typed after ``validate`` or
``run``), and ``enabled`` offers exactly what its note says. Keeping the list current
edits only that validation, so an editor's formatting of the config tabs survives."""

from __future__ import annotations

import zipfile
from pathlib import Path

from openpyxl import load_workbook
from openpyxl.styles import PatternFill
from sheetops.connectors.sheets import xlsx_parts
from sheetops.connectors.sheets.workbook import LISTS_TAB, WorkbookSheet
from test_cli import cli

from sheetops import tabs
from sheetops.config import parse_config
from sheetops.engine import init_sheet
from sheetops.registry import registry


def _validations(path: Path, tab: str = "Jobs") -> dict[str, str]:
    """Header of the validated column -> the list formula, as Excel/LibreOffice read it."""
    ws = load_workbook(path)[tab]
    header = {cell.column_letter: cell.value for cell in ws[1]}
    return {header[str(dv.sqref).split(":")[0].rstrip("0123456789")]: dv.formula1
            for dv in ws.data_validations.dataValidation}


def _offered(path: Path, column: str, tab: str = "Jobs") -> list[str]:
    """The values the dropdown offers: an inline list, or the hidden tab's cells."""
    formula = _validations(path, tab)[column]
    if formula.startswith('"'):
        return formula.strip('"').split(",")
    wb = load_workbook(path)
    sheet, cells = formula.split("!")
    return [c.value for row in wb[sheet.strip("'")][cells.replace("$", "")] for c in row]


def _parts(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def _init_with_builtins(tmp_path: Path) -> Path:
    path = tmp_path / "ops.xlsx"
    result = cli("init", "--sheet", str(path), cwd=tmp_path, SHEETOPS_AUTOMATIONS="")
    assert result.returncode == 0, result.stderr
    return path


def test_validate_adds_a_newly_registered_automation_and_keeps_the_editors_formatting(
        tmp_path: Path) -> None:
    path = _init_with_builtins(tmp_path)
    assert "t_probe" not in _offered(path, "automation")
    # an editor formats the Jobs tab (and saves it in their spreadsheet program)
    wb = load_workbook(path)
    wb["Jobs"].column_dimensions["F"].width = 55
    wb["Jobs"]["A2"].fill = PatternFill("solid", fgColor="FFFF00")
    wb.save(path)
    before = _parts(path)
    jobs_part = xlsx_parts.sheet_parts(zipfile.ZipFile(path))["Jobs"]

    result = cli("validate", "--sheet", str(path), cwd=tmp_path)  # registers t_probe & co
    assert result.returncode in (0, 1), result.stdout + result.stderr
    offered = _offered(path, "automation")
    assert "t_probe" in offered and "heartbeat" in offered
    assert offered == sorted(offered)
    after = _parts(path)
    changed = {name for name in before if before[name] != after.get(name)}
    validation_part = xlsx_parts.sheet_parts(zipfile.ZipFile(path))["Validation"]
    assert changed == {jobs_part, validation_part}  # every config tab else byte for byte
    old_formula = xlsx_parts.list_formula(before[jobs_part].decode(), "Invalid automation")
    new_formula = xlsx_parts.list_formula(after[jobs_part].decode(), "Invalid automation")
    assert after[jobs_part].decode().replace(new_formula, old_formula) == \
        before[jobs_part].decode()  # in the Jobs tab, only the list changed
    ws = load_workbook(path)["Jobs"]
    assert ws.column_dimensions["F"].width == 55
    assert ws["A2"].fill.fgColor.rgb.endswith("FFFF00")

    again = cli("validate", "--sheet", str(path), cwd=tmp_path)
    assert again.returncode == result.returncode
    assert _parts(path)[jobs_part] == after[jobs_part]  # nothing new: Jobs not written


def test_run_brings_the_dropdown_up_to_date(tmp_path: Path) -> None:
    path = _init_with_builtins(tmp_path)
    result = cli("run", "--for", "1", "--sheet", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "t_probe" in _offered(path, "automation")


def test_a_long_list_moves_to_the_hidden_lists_tab_without_resaving(tmp_path: Path) -> None:
    registry.discover()
    path = tmp_path / "ops.xlsx"
    sheet = WorkbookSheet(path)
    init_sheet(sheet)
    names = sorted(f"crm_sync_for_customer_{i:02d}" for i in range(30))  # > 255 characters
    before = _parts(path)
    assert sheet.keep_choices("Jobs", "automation", names)
    assert _offered(path, "automation") == names
    wb = load_workbook(path)
    assert wb[LISTS_TAB].sheet_state == "hidden"
    after = _parts(path)
    config_parts = {xlsx_parts.sheet_parts(zipfile.ZipFile(path))[t]
                    for t in tabs.CONFIG_TABS if t != "Jobs"}
    assert all(before[p] == after[p] for p in config_parts)
    assert sheet.read_tabs(["Jobs"])["Jobs"][1][1] == "heartbeat"  # values still read

    assert not sheet.keep_choices("Jobs", "automation", names)  # unchanged: no write
    assert _parts(path) == after
    fewer = names[:3]
    assert sheet.keep_choices("Jobs", "automation", fewer)
    assert _offered(path, "automation") == fewer  # the old tail is gone from the list


def test_a_removed_dropdown_is_left_alone(tmp_path: Path) -> None:
    registry.discover()
    path = tmp_path / "ops.xlsx"
    sheet = WorkbookSheet(path)
    init_sheet(sheet)
    wb = load_workbook(path)
    ws = wb["Jobs"]
    ws.data_validations.dataValidation = [dv for dv in ws.data_validations.dataValidation
                                          if dv.errorTitle != "Invalid automation"]
    wb.save(path)
    before = _parts(path)
    assert not sheet.keep_choices("Jobs", "automation", ["a_new_one"])
    assert _parts(path) == before


def test_enabled_offers_what_its_note_says_and_the_parser_reads_it(tmp_path: Path) -> None:
    registry.discover()
    path = tmp_path / "ops.xlsx"
    init_sheet(WorkbookSheet(path))
    for tab in ("Jobs", "Alerts"):
        offered = _offered(path, "enabled", tab)
        assert offered == ["TRUE", "FALSE", "yes", "no", "1", "0"]
        note = load_workbook(path)[tab].cell(
            row=1, column=[c.name for c in tabs.columns_of(tab)].index("enabled") + 1
        ).comment.text
        assert "TRUE" in note and "FALSE" in note and "yes/no" in note and "1/0" in note
    header = [c.name for c in tabs.JOB_COLUMNS]
    rows = [header] + [
        [f"job-{i}", "heartbeat", "every 1m", "", word] + [""] * (len(header) - 5)
        for i, word in enumerate(offered)]
    snapshot = parse_config({"Jobs": rows}, frozenset(registry.names()))
    assert not snapshot.errors, snapshot.errors
    assert [snapshot.jobs[f"job-{i}"].enabled for i in range(len(offered))] == [
        True, False, True, False, True, False]
    rows.append(["job-x", "heartbeat", "every 1m", "", "maybe"] + [""] * (len(header) - 5))
    problem = parse_config({"Jobs": rows}, frozenset(registry.names())).errors[0]
    assert problem.cell == f"E{len(rows)}"
    assert "TRUE or FALSE (or yes, no, 1, 0)" in problem.problem
