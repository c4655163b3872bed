"""Config tabs → snapshot + problems, each problem at its exact cell."""

from __future__ import annotations

import pytest

from sheetops.config import parse_config
from sheetops.config.model import JobSpec

AUTOMATIONS = frozenset({"heartbeat", "http_get", "send_email"})
HEADER = ["job", "automation", "schedule", "timezone", "enabled", "params", "rate_limit",
          "template", "max_attempts", "timeout_s", "catch_up", "concurrency"]
RATE_LIMITS = [["name", "rate", "scope"], ["api", "10/second", "global"]]
TEMPLATES = [["name", "subject", "body", "format"], ["hello", "Hi {{ name }}", "Body", "text"]]


def job_row(job: str = "ok-job", **values: str) -> list[str]:
    base = {"job": job, "automation": "heartbeat", "schedule": "every 10m"}
    base.update(values)
    return [base.get(c, "") for c in HEADER]


def parse(*rows: list[str], header=HEADER, settings=None, previous=None, **tabs_rows):
    config = {"Jobs": [list(header), *rows], "RateLimits": RATE_LIMITS,
              "Templates": TEMPLATES, **tabs_rows}
    if settings is not None:
        config["Settings"] = [["key", "value"], *settings]
    return parse_config(config, AUTOMATIONS, previous)


def messages(snapshot) -> list[str]:
    return [str(p) for p in snapshot.problems]


def test_a_clean_config_has_no_problems_and_fills_defaults():
    snapshot = parse(job_row("a"), job_row("b", timezone="Europe/Berlin", enabled="FALSE",
                                           params='{"url": "http://x", "n": 1}',
                                           rate_limit="api", template="hello",
                                           max_attempts="5", timeout_s="30",
                                           catch_up="all", concurrency="2"))
    assert snapshot.problems == ()
    a, b = snapshot.jobs["a"], snapshot.jobs["b"]
    assert (a.timezone, a.enabled, a.max_attempts, a.backoff_initial_s, a.backoff_max_s,
            a.timeout_s, a.concurrency, a.catch_up, a.params) == (
        "UTC", True, 3, 1.0, 300.0, 600.0, 1, "once", {})
    assert (b.timezone, b.enabled, b.rate_limit, b.template, b.max_attempts, b.timeout_s,
            b.catch_up, b.concurrency, b.params) == (
        "Europe/Berlin", False, "api", "hello", 5, 30.0, "all", 2, {"url": "http://x", "n": 1})
    assert (a.row, b.row) == (2, 3)


@pytest.mark.parametrize(("column", "value", "cell", "words"), [
    ("schedule", "61 * * * *", "C2", "not a valid cron expression"),
    ("schedule", "0 6 * *", "C2", "has 4 fields"),
    ("schedule", "every 5 fortnights", "C2", "is not an interval"),
    ("automation", "no_such_thing", "B2", "unknown automation 'no_such_thing'"),
    ("automation", "automations.heartbeat:heartbeat", "B2", "an import path is not allowed"),
    ("automation", "os.system", "B2", "an import path is not allowed"),
    ("params", "[1, 2]", "F2", "params must be a JSON object"),
    ("params", '{"url":', "F2", "params is not valid JSON"),
    ("rate_limit", "nope", "G2", "unknown rate limit 'nope'"),
    ("template", "nope", "H2", "unknown template 'nope'"),
    ("timezone", "Mars/Olympus_Mons", "D2", "unknown timezone 'Mars/Olympus_Mons'"),
    ("max_attempts", "three", "I2", "max_attempts must be a number"),
    ("max_attempts", "2.5", "I2", "max_attempts must be a whole number"),
    ("max_attempts", "0", "I2", "max_attempts must be at least 1"),
    ("timeout_s", "ten", "J2", "timeout_s must be a number"),
    ("enabled", "maybe", "E2", "enabled must be TRUE or FALSE"),
    ("catch_up", "sometimes", "K2", "catch_up must be skip, once or all"),
    ("concurrency", "0", "L2", "concurrency must be at least 1"),
])
def test_each_problem_is_reported_at_its_cell_and_the_row_is_skipped(column, value, cell,
                                                                     words):
    snapshot = parse(job_row("bad", **{column: value}), job_row("good"))
    assert "bad" not in snapshot.jobs
    assert "good" in snapshot.jobs  # bad config never stops good jobs
    [problem] = snapshot.problems
    assert (problem.tab, problem.cell, problem.value, problem.severity) == (
        "Jobs", cell, value, "error")
    assert str(problem).startswith(f"Jobs!{cell}: ")
    assert words in problem.problem


def test_every_problem_of_a_row_is_reported_not_just_the_first():
    snapshot = parse(job_row("bad", automation="nope", schedule="every never",
                             timezone="Nowhere/Land", params="[]"))
    assert sorted(p.cell for p in snapshot.problems) == ["B2", "C2", "D2", "F2"]


def test_duplicate_job_id_is_reported_on_the_second_row():
    snapshot = parse(job_row("dup", schedule="every 1m"), job_row("other"),
                     job_row("dup", schedule="every 2m"))
    assert messages(snapshot) == [
        "Jobs!A4: duplicate job id 'dup' (first defined on row 2); this row is skipped"]
    assert snapshot.jobs["dup"].schedule == "every 1m"


def test_same_bad_row_content_at_two_rows_gets_two_addresses():
    """Parsing is cached on a row's values; the cell address must still be the row's own."""
    bad = {"schedule": "bogus", "params": "[]"}
    snapshot = parse(job_row("x1", **bad), job_row("x2"), job_row("x1", **bad))
    assert sorted(p.cell for p in snapshot.problems) == ["A4", "C2", "F2"]
    again = parse(job_row("y"), job_row("x1", **bad))
    assert sorted(p.cell for p in again.problems) == ["C3", "F3"]


def test_bad_job_id_is_reported_at_the_job_column():
    snapshot = parse(job_row("has space"), job_row(""))
    assert [p.cell for p in snapshot.problems] == ["A2", "A3"]
    assert snapshot.jobs == {}


def test_headers_are_case_insensitive_and_columns_can_be_in_any_order():
    header = ["Schedule", "NOTES", "Rate Limit", "JOB", " Automation ", "Max_Attempts"]
    snapshot = parse(["every 5m", "hi", "api", "j1", "heartbeat", "7"],
                     ["every nope", "", "", "j2", "heartbeat", "x"], header=header)
    assert snapshot.jobs["j1"].schedule == "every 5m"
    assert snapshot.jobs["j1"].rate_limit == "api"
    assert snapshot.jobs["j1"].max_attempts == 7
    assert snapshot.jobs["j1"].notes == "hi"
    # problems point at the columns where they really are
    assert sorted(p.cell for p in snapshot.problems) == ["A3", "F3"]


def test_unknown_column_is_a_warning_and_the_job_still_runs():
    snapshot = parse(["j", "heartbeat", "every 1m", "whatever"],
                     header=["job", "automation", "schedule", "colour"])
    assert "j" in snapshot.jobs
    [problem] = snapshot.problems
    assert (problem.cell, problem.severity) == ("D1", "warning")
    assert "unknown column 'colour' is ignored" in problem.problem
    assert snapshot.errors == []


def test_missing_required_column_ignores_the_tab_with_an_error():
    snapshot = parse(["j", "every 1m"], header=["job", "schedule"])
    assert snapshot.jobs == {}
    [problem] = snapshot.errors
    assert problem.cell == "A1" and "automation" in problem.problem


def test_settings_unknown_key_and_bad_values_are_located():
    snapshot = parse(job_row("j"), settings=[
        ["timezone", "Europe/Berlin"], ["refresh_intervall_s", "5"],
        ["runs_tab_rows", "lots"], ["REFRESH_INTERVAL_S", "2"]])
    assert snapshot.settings.timezone == "Europe/Berlin"
    assert snapshot.settings.refresh_interval_s == 2.0
    assert snapshot.settings.runs_tab_rows == 200  # the default stays
    cells = {p.cell: p.problem for p in snapshot.problems}
    assert set(cells) == {"A3", "B4"}
    assert all(p.tab == "Settings" for p in snapshot.problems)
    assert "unknown setting 'refresh_intervall_s'" in cells["A3"]
    assert "must be a number, got 'lots'" in cells["B4"]
    # the Settings timezone is the jobs' default
    assert snapshot.jobs["j"].timezone == "Europe/Berlin"


def test_problems_on_other_tabs_are_located():
    snapshot = parse(job_row("j", rate_limit="fast"),
                     RateLimits=[["name", "rate", "scope"], ["fast", "lots/minute", ""],
                                 ["ok", "5/minute", "everyone"]],
                     Templates=[["name", "subject", "body"], ["t", "Hi {{ name ", "x"]])
    cells = sorted(f"{p.tab}!{p.cell}" for p in snapshot.problems)
    assert cells == ["Jobs!G2", "RateLimits!B2", "RateLimits!C3", "Templates!B2"]
    assert snapshot.rate_limits == {}


@pytest.mark.parametrize(("text", "value"), [
    ("TRUE", True), ("true", True), ("yes", True), ("1", True), ("",  True),
    ("FALSE", False), ("no", False), ("0", False), ("False", False),
])
def test_enabled_accepts_the_usual_spellings(text, value):
    assert parse(job_row("j", enabled=text)).jobs["j"].enabled is value


def test_a_row_that_turns_invalid_keeps_its_last_good_version():
    v1 = parse(job_row("keep", schedule="every 5m", params='{"a": 1}'),
               job_row("new-bad", schedule="sometimes"))
    assert "keep" in v1.jobs
    v2 = parse(job_row("keep", schedule="every fortnight", params='{"a": 2}'),
               job_row("new-bad", automation="nope"), previous=v1)
    assert v2.jobs["keep"] == v1.jobs["keep"]
    assert v2.jobs["keep"].params == {"a": 1}
    assert "new-bad" not in v2.jobs  # never valid: nothing to keep
    by_cell = {p.cell: p for p in v2.problems}
    assert "the last good version keeps running" in by_cell["C2"].problem
    assert by_cell["C2"].severity == "error"
    assert "last good" not in by_cell["B3"].problem
    # fixed again: the new version replaces the old one
    v3 = parse(job_row("keep", schedule="every 1m"), previous=v2)
    assert v3.jobs["keep"].schedule == "every 1m" and v3.problems == ()


def test_a_deleted_row_is_gone_even_with_a_previous_snapshot():
    v1 = parse(job_row("a"), job_row("b"))
    v2 = parse(job_row("a"), previous=v1)
    assert set(v2.jobs) == {"a"}


def test_numbers_from_a_spreadsheet_are_read_as_numbers():
    snapshot = parse(job_row("j", max_attempts="4", timeout_s="2.5", concurrency="3"))
    spec: JobSpec = snapshot.jobs["j"]
    assert (spec.max_attempts, spec.timeout_s, spec.concurrency) == (4, 2.5, 3)


def test_missing_jobs_tab_is_an_error():
    snapshot = parse_config({}, AUTOMATIONS)
    assert [str(p) for p in snapshot.errors] == [
        "Jobs!A1: the Jobs tab is missing; run 'sheetops init' to create it"]


def test_alert_reminder_zero_means_never_and_other_intervals_must_be_positive():
    from sheetops.config.parse import parse_config

    snapshot = parse_config({"Jobs": [["job", "automation", "schedule"]],
                             "Settings": [["key", "value"], ["alert_reminder_s", "0"],
                                          ["refresh_interval_s", "0"]]}, frozenset())
    assert snapshot.settings.alert_reminder_s == 0
    assert [str(p) for p in snapshot.errors] == [
        "Settings!B3: refresh_interval_s must be at least 0.1, got '0'"]
