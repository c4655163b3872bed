"""Hypothesis-generated config workbooks: no traceback, every invalid cell named, every
valid job scheduled. In-process for the many examples, through the real CLI for a few."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from test_cli import cli

from sheetops.testing.config_fuzz import as_text, check_parse, config_workbooks

HOSTILE = {"Jobs": [["job", "automation", "schedule", "params", "timezone"],
                    ["deep", "t_probe", "manual", '{"a": ' * 990 + "1" + "}" * 990, ""],
                    ["tz", "t_probe", "every 1s", "{}", "Europe"],
                    ["ok", "t_probe", "every 1s", "{}", ""]]}


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(config_workbooks())
def test_any_generated_config_parses_to_named_problems_and_scheduled_jobs(rows_by_tab):
    check_parse(as_text(rows_by_tab))


def through_the_cli(workbook, folder, rows_by_tab) -> None:
    """Write the tabs to the real workbook; validate and a short run must agree with the
    parse and never print a traceback."""
    for tab, rows in as_text(rows_by_tab).items():
        workbook.write(tab, rows[0] if rows else [], rows[1:])
    expected = check_parse(workbook.sheet.read_tabs(list(rows_by_tab)))
    result = cli("validate", "--sheet", str(workbook.path), cwd=folder)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == (1 if expected.errors else 0), result.stdout
    for problem in expected.errors:
        assert f"{problem.tab}!{problem.cell}:" in result.stdout
    run = cli("run", "--for", "1", "--sheet", str(workbook.path), cwd=folder)
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    assert run.returncode == 0, run.stderr[-2000:]


def test_a_hostile_workbook_through_the_cli(workbook, tmp_path):
    through_the_cli(workbook, tmp_path, HOSTILE)


@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(config_workbooks(max_rows=30))
def test_generated_workbooks_through_the_cli(workbook, tmp_path, rows_by_tab):
    through_the_cli(workbook, tmp_path, rows_by_tab)
