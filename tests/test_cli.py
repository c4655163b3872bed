"""End to end through the real ``sheetops`` command in subprocesses, on real workbooks.

The test automations come in the documented way a team adds its own:
``SHEETOPS_AUTOMATIONS=automations_for_tests`` with the module importable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from automations_for_tests import read_attempts
from conftest import TESTS_DIR, WorkbookHelper
from openpyxl import load_workbook

import sheetops
from sheetops.store import Store

SHEETOPS = str(Path(sys.executable).with_name("sheetops"))
ALL_TABS = ["Jobs", "RateLimits", "Templates", "Settings", "Alerts", "Status", "Runs",
            "Errors", "Validation"]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)  # already isolated: SHEETOPS_STORE_URL is a temp file
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR),
                                                      env.get("PYTHONPATH", "")]))
    env["SHEETOPS_AUTOMATIONS"] = "automations_for_tests"
    env.update(extra)
    return env


def cli(*args: str, cwd: Path, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([SHEETOPS, *args], cwd=cwd, env=cli_env(**env), text=True,
                          capture_output=True, timeout=timeout)


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([SHEETOPS, *args], cwd=cwd, env=cli_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(predicate, timeout: float = 15, interval: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = predicate()
        except Exception:  # the workbook is being replaced or the store is busy
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def probe(job: str, schedule: str, folder: Path | None = None, **params) -> dict[str, str]:
    if folder is not None:
        params["dir"] = str(folder)
    return {"job": job, "automation": "t_probe", "schedule": schedule, "enabled": "TRUE",
            "params": json.dumps(params), "max_attempts": "1"}


@pytest.fixture
def store(isolated_env: str):
    s = Store(isolated_env)
    yield s
    s.dispose()


# -- init ---------------------------------------------------------------------------------

def test_init_creates_every_tab_with_notes_dropdowns_and_examples(tmp_path):
    result = cli("init", "--sheet", "ops.xlsx", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [f"created tab {t}" for t in ALL_TABS] == result.stdout.splitlines()[:9]
    wb = load_workbook(tmp_path / "ops.xlsx")
    assert [t for t in wb.sheetnames if not t.startswith("_")] == ALL_TABS
    for ws in (wb[t] for t in ALL_TABS):
        headers = [c for c in ws[1] if c.value]
        assert headers, ws.title
        assert all(c.comment is not None and c.comment.text.strip() for c in headers), (
            ws.title)
    jobs = wb["Jobs"]
    header = {c.value: c.column_letter for c in jobs[1]}
    lists = {str(dv.sqref): dv.formula1 for dv in jobs.data_validations.dataValidation}
    automation_list = lists[f"{header['automation']}2:{header['automation']}5000"]
    for name in ("heartbeat", "http_get", "send_email", "t_probe"):  # t_probe: env module
        assert name in automation_list
    assert lists[f"{header['enabled']}2:{header['enabled']}5000"] == '"TRUE,FALSE"'
    assert jobs.max_row >= 2  # example rows
    # the example config is valid as created
    assert cli("validate", "--sheet", "ops.xlsx", cwd=tmp_path).returncode == 0


def test_init_again_keeps_existing_tabs_and_edits(tmp_path):
    assert cli("init", "--sheet", "ops.xlsx", cwd=tmp_path).returncode == 0
    book = WorkbookHelper(tmp_path / "ops.xlsx")
    book.jobs({"job": "mine", "automation": "heartbeat", "schedule": "every 5m"})
    result = cli("init", "--sheet", "ops.xlsx", cwd=tmp_path)
    assert result.returncode == 0
    assert "kept existing tab Jobs" in result.stdout
    assert book.records("Jobs") == [{"job": "mine", "automation": "heartbeat",
                                     "schedule": "every 5m"}]


# -- validate -----------------------------------------------------------------------------

def test_validate_prints_cells_exits_1_and_writes_the_validation_tab(workbook, tmp_path):
    workbook.jobs(probe("good", "every 5m"), probe("bad-schedule", "every fortnight"),
                  {**probe("bad-params", "every 5m"), "params": "[1]"},
                  {**probe("ghost", "every 5m"), "automation": "no_such"},
                  probe("good", "every 1m"))
    result = cli("validate", "--sheet", str(workbook.path), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("Jobs!")]
    assert [line.split(":")[0] for line in lines] == [
        "Jobs!C3", "Jobs!E4", "Jobs!B5", "Jobs!A6"]
    assert "1 valid job(s), 4 error(s)" in result.stdout
    assert "Traceback" not in result.stderr
    rows = workbook.records("Validation")
    assert [(r["tab"], r["cell"], r["severity"]) for r in rows] == [
        ("Jobs", "C3", "error"), ("Jobs", "E4", "error"), ("Jobs", "B5", "error"),
        ("Jobs", "A6", "error")]
    assert rows[0]["value"] == "every fortnight"
    assert [f"{r['tab']}!{r['cell']}: {r['problem']}" for r in rows] == [
        line.rsplit("  [", 1)[0] for line in lines]

    workbook.jobs(probe("good", "every 5m"))
    clean = cli("validate", "--sheet", str(workbook.path), cwd=tmp_path)
    assert clean.returncode == 0, clean.stdout
    assert workbook.records("Validation") == []  # cleared, header kept
    assert workbook.rows("Validation")[0][:2] == ["tab", "cell"]


def test_unknown_column_and_settings_key_are_reported_but_do_not_fail(workbook, tmp_path):
    workbook.jobs({**probe("good", "every 5m"), "colour": "blue"})
    workbook.settings(timezone="UTC", refresh_every="5")
    result = cli("validate", "--sheet", str(workbook.path), cwd=tmp_path)
    assert result.returncode == 1  # the unknown Settings key is an error
    assert any(line.startswith("Jobs!G1: unknown column 'colour'") and "[warning]" in line
               for line in result.stdout.splitlines())
    assert any(line.startswith("Settings!A3: unknown setting 'refresh_every'")
               for line in result.stdout.splitlines())


# -- unreadable sheets --------------------------------------------------------------------

@pytest.mark.parametrize("command", [["validate"], ["run", "--for", "1"],
                                     ["run-job", "anything"]])
@pytest.mark.parametrize("kind", ["missing", "garbage"])
def test_an_unreadable_sheet_is_one_clear_line_and_exit_2(tmp_path, command, kind):
    path = tmp_path / "ops.xlsx"
    if kind == "garbage":
        path.write_text("this is not a workbook")
    result = cli(*command, "--sheet", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and str(path) in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


# -- run-job ------------------------------------------------------------------------------

def test_run_job_exit_codes_dry_run_and_status_tabs(workbook, tmp_path, store):
    folder = tmp_path / "evidence"
    workbook.jobs(probe("works", "manual", folder, records=4),
                  {**probe("breaks", "every 1h", message="upstream said no", succeed_on=9),
                   "max_attempts": "2", "backoff_initial_s": "0.1"},
                  probe("invalid", "every sometimes"))
    ok = cli("run-job", "works", "--sheet", str(workbook.path), cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "attempt 1: ok" in ok.stdout
    assert "of works: ok after 1 attempt(s)" in ok.stdout
    assert "records in/out/failed 4/4/0" in ok.stdout

    bad = cli("run-job", "breaks", "--sheet", str(workbook.path), cwd=tmp_path)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert bad.stdout.count("RuntimeError: upstream said no") == 2
    assert "of breaks: failed after 2 attempt(s)" in bad.stdout

    dry = cli("run-job", "works", "--dry-run", "--sheet", str(workbook.path), cwd=tmp_path)
    assert dry.returncode == 0 and "(dry run)" in dry.stdout
    assert [a["dry_run"] for a in read_attempts(folder)] == [False, True]

    invalid = cli("run-job", "invalid", "--sheet", str(workbook.path), cwd=tmp_path)
    assert invalid.returncode == 1
    assert "Jobs!C4:" in invalid.stderr
    missing = cli("run-job", "nobody", "--sheet", str(workbook.path), cwd=tmp_path)
    assert missing.returncode == 1 and "no job 'nobody'" in missing.stderr

    runs = workbook.records("Runs")
    assert [(r["job"], r["trigger"], r["status"]) for r in runs] == [
        ("works", "cli (dry run)", "ok"), ("breaks", "cli", "failed"), ("works", "cli", "ok")]
    assert [r["run_id"] for r in runs] == [r["id"] for r in store.recent_runs(10)]
    status = {r["job"]: r for r in workbook.records("Status")}
    assert status["breaks"]["state"] == "failed"
    assert status["breaks"]["consecutive_failures"] == 1
    assert "upstream said no" in status["breaks"]["result"]
    assert [e["attempt"] for e in workbook.records("Errors")] == [2, 1]


# -- run ----------------------------------------------------------------------------------

def test_run_for_writes_status_runs_and_errors_matching_the_store(workbook, tmp_path, store):
    formula_like = "=HYPERLINK(\"http://evil\",\"click\") failed"
    workbook.settings(refresh_interval_s=30, status_flush_interval_s=1)
    workbook.jobs(probe("fast", "every 1s"), probe("two", "every 2s", records=3),
                  {**probe("failing", "every 2s", fail="permanent", message=formula_like)})
    result = cli("run", "--for", "6", "--sheet", str(workbook.path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "sheetops is running 3 job(s)" in result.stdout

    runs = store.recent_runs(1000)
    assert {r["status"] for r in runs} == {"ok", "failed"}  # all finished, none "running"
    assert sum(r["job"] == "fast" for r in runs) >= 3
    assert sum(r["job"] == "failing" for r in runs) >= 1
    # Runs tab: newest first, the same runs as the store
    runs_tab = workbook.records("Runs")
    assert [(r["run_id"], r["job"], r["status"]) for r in runs_tab] == [
        (r["id"], r["job"], r["status"]) for r in runs]
    # Status tab: one row per job with the store's last run
    states = store.job_states()
    status = {r["job"]: r for r in workbook.records("Status")}
    assert set(status) == {"fast", "two", "failing"}
    assert status["failing"]["state"] == "failed"
    assert status["two"]["state"] == "ok" and status["two"]["records_in"] == 3
    for job, row in status.items():
        assert row["consecutive_failures"] == states[job]["consecutive_failures"]
        assert row["next_run_1"] and row["schedule"].startswith("every")
    # Errors tab: the failing job, its message kept as text (not a formula)
    errors = workbook.records("Errors")
    assert errors and {e["job"] for e in errors} == {"failing"}
    assert len(errors) == len(store.recent_errors(1000))
    assert {e["message"] for e in errors} == {formula_like}
    ws = load_workbook(workbook.path)["Errors"]
    message_col = [c.value for c in ws[1]].index("message") + 1
    cell = ws.cell(row=2, column=message_col)
    assert cell.value == formula_like and cell.data_type == "s"


def test_hot_reload_while_running(workbook, tmp_path, store):
    folder = tmp_path / "evidence"
    workbook.settings(refresh_interval_s=1, status_flush_interval_s=1)
    jobs = [probe("steady", "every 1s", folder), probe("to-disable", "every 1s", folder),
            probe("to-break", "every 1s", folder)]
    workbook.jobs(*jobs)
    proc = start_cli("run", "--for", "9", "--sheet", str(workbook.path), cwd=tmp_path)
    try:
        wait_for(lambda: {"steady", "to-disable", "to-break"} <= {
            a["job"] for a in read_attempts(folder)}, 8)
        edited = [probe("steady", "every 1s", folder),
                  {**probe("to-disable", "every 1s", folder), "enabled": "FALSE"},
                  {**probe("to-break", "every 1s", folder), "schedule": "every fortnight"},
                  probe("added", "every 1s", folder)]
        workbook.jobs(*edited)
        edited_at = time.time()
        wait_for(lambda: any(a["job"] == "added" for a in read_attempts(folder)), 6)
        wait_for(lambda: any(r["cell"] == "C4" for r in workbook.records("Validation")), 6)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    attempts = read_attempts(folder)
    settled = edited_at + 2.5  # one refresh (1 s) + control loop + a run in flight
    assert not [a for a in attempts if a["job"] == "to-disable" and a["start"] > settled]
    assert [a for a in attempts if a["job"] == "to-break" and a["start"] > settled], (
        "the broken row's last good version should keep running")
    assert [a for a in attempts if a["job"] == "steady" and a["start"] > settled]
    [problem] = [r for r in workbook.records("Validation") if r["cell"] == "C4"]
    assert problem["tab"] == "Jobs" and problem["value"] == "every fortnight"
    assert "the last good version keeps running" in problem["problem"]
    # ops' edits survived every status write
    assert workbook.records("Jobs") == edited
    status = {r["job"]: r["state"] for r in workbook.records("Status")}
    assert status["to-disable"] == "disabled"
    assert set(status) == {"steady", "to-disable", "to-break", "added"}
    assert store.count_runs("added") >= 1


# -- demo ---------------------------------------------------------------------------------

def test_demo_runs_offline_and_records_runs(tmp_path):
    result = cli("demo", "--for", "8", "--dir", str(tmp_path / "demo"), cwd=tmp_path,
                 timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "demo finished:" in result.stdout
    # the store is where `sheetops dashboard --sheet <workbook>` looks by default
    workbook_path = tmp_path / "demo" / "ops.xlsx"
    demo_store = Store(f"sqlite:///{workbook_path.with_suffix('.sheetops.db')}")
    try:
        assert demo_store.count_runs() >= 1
    finally:
        demo_store.dispose()
    # the closing hint names a command that works without an activated virtualenv
    hint = f"{Path(sys.executable).parent / 'sheetops'} dashboard --sheet {workbook_path}"
    assert hint in result.stdout
    runs = WorkbookHelper(workbook_path).records("Runs")
    assert runs
    # start-up runs were started by the command, not by a person clicking Run now
    assert "manual" not in {r["trigger"] for r in runs}
    assert "cli" in {r["trigger"] for r in runs}


def test_version_and_help_without_type_noise(tmp_path):
    version = cli("--version", cwd=tmp_path)
    assert version.returncode == 0
    assert version.stdout.strip() == f"sheetops {sheetops.__version__}"
    helptext = cli("run", "--help", cwd=tmp_path)
    assert helptext.returncode == 0
    assert "--progress / --no-progress" in helptext.stdout
    assert "<bool>" not in helptext.stdout
