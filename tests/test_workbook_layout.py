"""The status tabs of a workbook `sheetops run` wrote are readable as they open: each
column is wide enough for the values in it (whole timestamps, job names, run ids), and a
run's records sit in labelled columns rather than one ``7 / 7 / 0`` string."""

from __future__ import annotations

from openpyxl import load_workbook
from openpyxl.utils import get_column_letter
from sheetops.connectors.sheets.workbook import display
from test_cli import cli, probe

_CAP = 60  # columns are bounded; longer values (messages) wrap or are cut on purpose


def test_status_runs_and_errors_columns_fit_their_values(workbook, tmp_path, store):
    workbook.settings(refresh_interval_s=30, status_flush_interval_s=1)
    workbook.jobs(probe("nightly-crm-sync-eu", "every 1s", records=7),
                  probe("failing-export", "every 1s", fail="permanent", message="no"))
    result = cli("run", "--for", "4", "--sheet", str(workbook.path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    runs = workbook.records("Runs")
    ok = next(r for r in runs if r["job"] == "nightly-crm-sync-eu")
    assert (ok["attempts"], ok["records_in"], ok["records_out"], ok["records_failed"]) == (
        1, 7, 7, 0)
    wb = load_workbook(workbook.path)
    for tab in ("Status", "Runs", "Errors"):
        ws = wb[tab]
        rows = list(ws.iter_rows(values_only=True))
        assert len(rows) > 1, tab
        for index, header in enumerate(rows[0], start=1):
            longest = max(len(display(r[index - 1])) for r in rows if len(r) >= index)
            width = ws.column_dimensions[get_column_letter(index)].width
            assert width >= min(longest, _CAP - 2), (tab, header, width, longest)


def test_states_are_coloured_and_the_colours_survive_status_flushes(workbook, tmp_path, store):
    workbook.settings(refresh_interval_s=30, status_flush_interval_s=1)
    workbook.jobs(probe("good", "every 1s"),
                  probe("bad", "every 1s", fail="permanent", message="no"))
    result = cli("run", "--for", "3", "--sheet", str(workbook.path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {r["status"] for r in workbook.records("Runs")} == {"ok", "failed"}
    wb = load_workbook(workbook.path)
    for tab, column in (("Status", "state"), ("Runs", "status")):
        ws = wb[tab]
        letter = get_column_letter([c.value for c in ws[1]].index(column) + 1)
        colours = {rule.formula[0].strip('"'): rule.dxf.fill.bgColor.rgb[-6:]
                   for rng in ws.conditional_formatting for rule in rng.rules
                   if str(rng.sqref).startswith(f"{letter}2:")}
        assert colours == {"ok": "C6EFCE", "failed": "FFC7CE", "timeout": "FFEB9C",
                           "invalid": "FFC7CE"}, tab


def test_booleans_written_to_status_tabs_are_true_false_cells(tmp_path):
    """A boolean reaches a tab as a real boolean cell formatted TRUE/FALSE (LibreOffice
    shows an unformatted one as 1/0); the format is added to the file once."""
    import zipfile

    from sheetops.connectors.sheets import xlsx_parts
    from sheetops.connectors.sheets.workbook import WorkbookSheet

    from sheetops.engine import init_sheet
    from sheetops.sheets import TabWrite

    for examples in (False, True):  # without and with booleans (Jobs.enabled) already
        path = tmp_path / f"ops-{examples}.xlsx"
        sheet = WorkbookSheet(path)
        init_sheet(sheet, examples=examples)
        for _ in range(2):
            sheet.write_batch([TabWrite("Status", [["a", "ok", True], ["b", "failed", False]],
                                        start_row=2)])
        ws = load_workbook(path)["Status"]
        assert [(c.value, c.number_format) for c in ws["C"][1:3]] == [
            (True, xlsx_parts.BOOLEAN_FORMAT), (False, xlsx_parts.BOOLEAN_FORMAT)]
        assert sheet.read_tabs(["Status"])["Status"][1:] == [["a", "ok", "TRUE"],
                                                              ["b", "failed", "FALSE"]]
        with zipfile.ZipFile(path) as z:
            styles = z.read("xl/styles.xml").decode()
        assert styles.count("&quot;TRUE&quot;;&quot;TRUE&quot;;&quot;FALSE&quot;") == 1
