"""Cells a careless or hostile user can type, through the real ``sheetops`` command:
each is one problem at its cell, never a traceback, and good jobs still run."""

from __future__ import annotations

import signal
import time

import pytest
from automations_for_tests import read_attempts
from conftest import wait_for
from test_cli import cli, running_cli

HEADER = ["job", "automation", "schedule", "timezone", "enabled", "params", "max_attempts"]


def nested(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


BAD_CELLS = [  # (job, column, value, words of the problem)
    ("tz-dir", "timezone", "Europe", "unknown timezone 'Europe'"),
    ("tz-long", "timezone", "Europe/" + "x" * 300, "unknown timezone (307 characters"),
    ("big-int", "params", '{"n": ' + "9" * 5000 + "}", "an integer of 5000 digits"),
    ("deep-990", "params", nested(990), "nested too deeply"),
    ("deep-950", "params", nested(950), "nested too deeply"),
    ("nan", "params", '{"x": NaN}', "NaN is not allowed"),
    ("infinity", "params", '{"x": -Infinity}', "-Infinity is not allowed"),
    ("dup-key", "params", '{"to": "a@x.org", "to": "b@x.org"}', "key 'to' appears twice"),
    ("too-big", "params", '{"x": "' + "y" * 30_000 + '"}', "at most 20,000"),
]


def row(job: str, **values: str) -> list[str]:
    base = {"job": job, "automation": "t_probe", "schedule": "manual", "enabled": "TRUE",
            "params": "{}", "max_attempts": "1", **values}
    return [base.get(c, "") for c in HEADER]


@pytest.fixture
def hostile(workbook):
    workbook.write("Jobs", HEADER, [row("good"), *[row(job, **{column: value})
                                                    for job, column, value, _ in BAD_CELLS]])
    return workbook


def test_validate_names_every_hostile_cell_and_exits_1(hostile, tmp_path):
    result = cli("validate", "--sheet", str(hostile.path), cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("Jobs!")]
    expected = [f"Jobs!{'D' if column == 'timezone' else 'F'}{number}"
                for number, (_job, column, _value, _words) in enumerate(BAD_CELLS, start=3)]
    assert [line.split(":")[0] for line in lines] == expected
    for line, (_job, _column, _value, words) in zip(lines, BAD_CELLS, strict=True):
        assert words in line
    assert "1 valid job(s)" in result.stdout
    cells = [(r["tab"], r["cell"]) for r in hostile.records("Validation")]
    assert cells == [("Jobs", cell.split("!")[1]) for cell in expected]


def test_run_job_of_a_good_job_runs_next_to_hostile_cells(hostile, tmp_path):
    good = cli("run-job", "good", "--sheet", str(hostile.path), cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "of good: ok after 1 attempt(s)" in good.stdout
    bad = cli("run-job", "deep-950", "--sheet", str(hostile.path), cwd=tmp_path, timeout=30)
    assert bad.returncode == 1
    assert "Jobs!F7: params is nested too deeply" in bad.stderr
    assert "Traceback" not in good.stderr + bad.stderr


def test_hostile_cells_added_while_running_are_reported_once_and_good_jobs_go_on(
        workbook, tmp_path, store):
    folder = tmp_path / "evidence"
    workbook.settings(refresh_interval_s=1, status_flush_interval_s=1)
    steady = row("steady", schedule="every 1s", params=f'{{"dir": "{folder}"}}')
    workbook.write("Jobs", HEADER, [steady])
    # until SIGTERM, not `--for`: a loaded machine must not use up a fixed lifetime
    with running_cli("run", "--sheet", str(workbook.path), cwd=tmp_path) as proc:
        wait_for(lambda: any(a["job"] == "steady" for a in read_attempts(folder)), 30)
        added = row("added", schedule="every 1s", params=f'{{"dir": "{folder}"}}')
        workbook.write("Jobs", HEADER, [steady, *[row(job, **{column: value})
                                                  for job, column, value, _ in BAD_CELLS],
                                        added])
        wait_for(lambda: any(a["job"] == "added" for a in read_attempts(folder)), 30)
        wait_for(lambda: len(workbook.records("Validation")) == len(BAD_CELLS), 30)
        seen_at = time.time()  # a few more refreshes (1 s apart) must not report again
        wait_for(lambda: store.gauges()["last_refresh_at"][0] > seen_at + 3, 30,
                 "refreshes after the problems were reported")
        proc.send_signal(signal.SIGTERM)  # stop: finish, flush the tabs
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert "Traceback" not in err, err[-3000:]
    problem_lines = [line for line in err.splitlines() if "config problem" in line]
    assert len(problem_lines) == len(BAD_CELLS), "\n".join(problem_lines)


ERRORS = ["#DIV/0!", "#REF!", "#N/A", "#VALUE!", "#NAME?", "#NUM!", "#NULL!"]
ERROR_COLUMNS = ["max_attempts", "enabled", "params", "timezone", "schedule", "automation",
                 "max_attempts"]


def save_error_cells(path, cells: dict[str, str]) -> None:
    """Store cells as a spreadsheet saves a failed formula: type ``e``, the error text."""
    from openpyxl import load_workbook

    wb = load_workbook(path)
    for address, value in cells.items():
        tab, cell = address.split("!")
        wb[tab][cell].value = value
        wb[tab][cell].data_type = "e"
    wb.save(path)


def test_error_values_are_problems_at_their_cells_never_defaults(workbook, tmp_path):
    workbook.write("Jobs", HEADER, [row("good"), *[row(f"err-{i}") for i in range(7)]])
    workbook.settings(refresh_interval_s=5)
    letters = {c: chr(ord("A") + HEADER.index(c)) for c in HEADER}
    cells = {f"Jobs!{letters[column]}{number}": error for number, (column, error) in
             enumerate(zip(ERROR_COLUMNS, ERRORS, strict=True), start=3)}
    cells["Settings!B2"] = "#DIV/0!"
    save_error_cells(workbook.path, cells)
    result = cli("validate", "--sheet", str(workbook.path), cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 1, result.stdout + result.stderr
    reported = {line.split(":")[0]: line for line in result.stdout.splitlines()
                if line.startswith(("Jobs!", "Settings!"))}
    assert set(reported) == set(cells)
    assert "Jobs!G3: max_attempts shows the error #DIV/0!" in reported["Jobs!G3"]
    assert "Settings!B2: value shows the error #DIV/0!" in reported["Settings!B2"]
    assert "1 valid job(s)" in result.stdout
    ran = cli("run-job", "err-0", "--sheet", str(workbook.path), cwd=tmp_path)
    assert ran.returncode == 1 and "Jobs!G3: max_attempts shows the error" in ran.stderr


def test_settings_out_of_range_or_twice_are_problems_at_their_cells(workbook, tmp_path):
    workbook.write("Jobs", HEADER, [row("good")])
    workbook.write("Settings", ["key", "value"], [
        ["status_flush_interval_s", "1e308"], ["runs_tab_rows", str(10**12)],
        ["refresh_interval_s", "5"], ["refresh_interval_s", "7"],
        ["alert_reminder_s", "0"]])
    result = cli("validate", "--sheet", str(workbook.path), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line.rsplit("  [", 1)[0] for line in result.stdout.splitlines()
             if line.startswith("Settings!")]
    assert lines == [
        "Settings!B2: status_flush_interval_s must be at most 3,600, got '1e308'",
        "Settings!B3: runs_tab_rows must be at most 10,000, got '1000000000000'",
        "Settings!A5: setting 'refresh_interval_s' is set twice (first on row 4); the first "
        "one is used"]


def test_validate_and_run_job_name_every_problem_of_a_row(workbook, tmp_path):
    header = [*HEADER, "rate_limit", "template"]
    workbook.write("Jobs", header, [
        ["many", "t_probe", "every fortnight", "Mars/Base", "TRUE", "{}", "three", "smpt",
         "nope"],
        ["bad id!", "t_probe", "manual", "", "TRUE", "{}", "1", "smpt", ""]])
    result = cli("validate", "--sheet", str(workbook.path), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    cells = [line.split(":")[0] for line in result.stdout.splitlines()
             if line.startswith("Jobs!")]
    assert cells == ["Jobs!C2", "Jobs!D2", "Jobs!G2", "Jobs!H2", "Jobs!I2",
                     "Jobs!A3", "Jobs!H3"]
    ran = cli("run-job", "many", "--sheet", str(workbook.path), cwd=tmp_path)
    assert ran.returncode == 1
    for cell in ("C2", "D2", "G2", "H2", "I2"):
        assert f"Jobs!{cell}:" in ran.stderr, ran.stderr
