"""End to end through the real ``sheetops`` command in subprocesses, on real workbooks.

The test automations come in the documented way a team adds its own:
``SHEETOPS_AUTOMATIONS=automations_for_tests`` with the module importable.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from automations_for_tests import read_attempts
from conftest import TESTS_DIR, WorkbookHelper, wait_for
from openpyxl import load_workbook

import sheetops
from sheetops.store import Store
from sheetops.testing.http import HttpServer

SHEETOPS = str(Path(sys.executable).with_name("sheetops"))
ALL_TABS = ["Jobs", "RateLimits", "Templates", "Settings", "Alerts", "Stages", "Status",
            "Runs", "Errors", "Validation"]


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


@contextlib.contextmanager
def running_cli(*args: str, cwd: Path) -> Iterator[subprocess.Popen]:
    """``sheetops *args`` in the background, killed on the way out if still running."""
    proc = start_cli(*args, cwd=cwd)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def probe(job: str, schedule: str, folder: Path | None = None, **params) -> dict[str, str]:
    if folder is not None:
        params["dir"] = str(folder)
    return {"job": job, "automation": "t_probe", "schedule": schedule, "enabled": "TRUE",
            "params": json.dumps(params), "max_attempts": "1"}


# -- init ---------------------------------------------------------------------------------

def test_init_creates_every_tab_with_notes_dropdowns_and_examples(tmp_path):
    result = cli("init", "--sheet", "ops.xlsx", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [f"created tab {t}" for t in ALL_TABS] == result.stdout.splitlines()[:10]
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
    assert lists[f"{header['enabled']}2:{header['enabled']}5000"] == '"TRUE,FALSE,yes,no,1,0"'
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
    assert dry.returncode == 0 and "dry run of works: ok" in dry.stdout
    assert [a["dry_run"] for a in read_attempts(folder)] == [False, True]  # ran, told so

    invalid = cli("run-job", "invalid", "--sheet", str(workbook.path), cwd=tmp_path)
    assert invalid.returncode == 1
    assert "Jobs!C4:" in invalid.stderr
    missing = cli("run-job", "nobody", "--sheet", str(workbook.path), cwd=tmp_path)
    assert missing.returncode == 1 and "no job 'nobody'" in missing.stderr

    runs = workbook.records("Runs")
    assert [(r["job"], r["trigger"], r["status"]) for r in runs] == [
        ("breaks", "cli", "failed"), ("works", "cli", "ok")]  # a dry run records nothing
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


def _added_at(store: Store, job: str) -> float | None:
    """When the scheduler applied the config that added ``job`` (its config event)."""
    from sheetops.dashboard import queries as q

    events = q.config_events(store)
    added = events[(events["kind"] == "added") & (events["job"] == job)]
    return added["time"].max().timestamp() if not added.empty else None


def _fired_after(store: Store, job: str, moment: float) -> list[dict]:
    """``job``'s runs due (scheduled for) after ``moment``."""
    return [r for r in store.recent_runs(1000, job)
            if r["scheduled_for"] is not None and r["scheduled_for"] > moment]


def test_hot_reload_while_running(workbook, tmp_path, store):
    folder = tmp_path / "evidence"
    workbook.settings(refresh_interval_s=1, status_flush_interval_s=1)
    jobs = [probe("steady", "every 1s", folder), probe("to-disable", "every 1s", folder),
            probe("to-break", "every 1s", folder)]
    workbook.jobs(*jobs)
    # until SIGTERM, not `--for`: a loaded machine must not use up a fixed lifetime
    with running_cli("run", "--sheet", str(workbook.path), cwd=tmp_path) as proc:
        wait_for(lambda: {"steady", "to-disable", "to-break"} <= {
            a["job"] for a in read_attempts(folder)}, 30)
        edited = [probe("steady", "every 1s", folder),
                  {**probe("to-disable", "every 1s", folder), "enabled": "FALSE"},
                  {**probe("to-break", "every 1s", folder), "schedule": "every fortnight"},
                  probe("added", "every 1s", folder)]
        workbook.jobs(*edited)
        # the edit took effect at one refresh: from then on (fires due after it) the
        # disabled row fires no more, the others and the broken row's last good version do
        applied_at = wait_for(lambda: _added_at(store, "added"), 30, "the edit applied")
        wait_for(lambda: any(a["job"] == "added" for a in read_attempts(folder)), 30)
        wait_for(lambda: any(r["cell"] == "C4" for r in workbook.records("Validation")), 30)
        for job in ("steady", "to-break"):
            wait_for(lambda job=job: _fired_after(store, job, applied_at), 30,
                     f"a run of {job} after the edit")
        proc.send_signal(signal.SIGTERM)  # stop: finish, flush the tabs
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert not _fired_after(store, "to-disable", applied_at)
    assert _fired_after(store, "to-break", applied_at), (
        "the broken row's last good version should keep running")
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


def test_run_job_with_a_template_that_would_take_gigabytes_fails_at_once(workbook, tmp_path,
                                                                         smtp):
    workbook.write("Templates", ["name", "subject", "body", "format"],
                   [["huge", "Hi", "{{ 'a' * 10**9 }}", "text"],
                    ["fine", "Hi {{ name }}", "Hello {{ name }}", "text"]])
    workbook.jobs({"job": "huge-mail", "automation": "send_email", "schedule": "manual",
                   "template": "huge", "max_attempts": "1",
                   "params": '{"recipients": ["a@example.com"], "vars": {"name": "A"}}'},
                  {"job": "fine-mail", "automation": "send_email", "schedule": "manual",
                   "template": "fine",
                   "params": '{"recipients": ["b@example.com"], "vars": {"name": "B"}}'})
    started = time.monotonic()
    bad = cli("run-job", "huge-mail", "--sheet", str(workbook.path), cwd=tmp_path)
    assert time.monotonic() - started < 30
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr
    assert "TemplateLimitError: template value would be longer than 1,000,000" in bad.stdout
    errors = workbook.records("Errors")
    assert [(e["job"], e["error_type"]) for e in errors] == [("huge-mail",
                                                              "TemplateLimitError")]
    assert smtp.messages == []

    good = cli("run-job", "fine-mail", "--sheet", str(workbook.path), cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert [m["To"] for m in smtp.wait_for(1)] == ["b@example.com"]
    assert [r["status"] for r in workbook.records("Runs")] == ["ok", "failed"]


def test_a_run_past_worker_memory_mb_fails_with_memory_error_and_others_go_on(workbook,
                                                                               tmp_path,
                                                                               store):
    workbook.settings(worker_memory_mb=1024, status_flush_interval_s=1)
    workbook.jobs(probe("hog", "every 2s", allocate_mb=4096), probe("fast", "every 1s"))
    result = cli("run", "--for", "6", "--sheet", str(workbook.path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr

    runs = workbook.records("Runs")
    assert {r["status"] for r in runs if r["job"] == "hog"} == {"failed"}
    assert sum(r["status"] == "ok" for r in runs if r["job"] == "fast") >= 3
    errors = workbook.records("Errors")
    assert errors and {(e["job"], e["error_type"]) for e in errors} == {("hog", "MemoryError")}
    assert {e["message"] for e in errors} == {
        "the run needed more memory than the worker limit of 1024 MB "
        "(Settings worker_memory_mb)"}
    assert {r["error"][:11] for r in runs if r["job"] == "hog"} == {"MemoryError"}
    assert {r["status"] for r in store.recent_runs(100) if r["job"] == "hog"} == {"failed"}


def _mail_job(job: str, recipients: list, **columns: str) -> dict[str, str]:
    return {"job": job, "automation": "send_email", "schedule": "manual",
            "template": "hello", "max_attempts": "3", "backoff_initial_s": "0.1",
            "params": json.dumps({"recipients": recipients}), **columns}


def test_send_email_bad_recipient_is_a_failed_record_and_nobody_gets_two(workbook, tmp_path,
                                                                         smtp, store):
    workbook.write("Templates", ["name", "subject", "body", "format"],
                   [["hello", "Hi {{ name }}", "Hello {{ name }}", "text"]])
    workbook.jobs(_mail_job("mixed", [{"email": "a@example.com", "name": "A"},
                                      {"email": "b@example.com", "name": "B\r\nBcc: x@evil"},
                                      {"email": "c@example.com", "name": "C"}]),
                  _mail_job("all-bad", [{"email": "d@example.com", "name": "D\nX: y"}]))
    mixed = cli("run-job", "mixed", "--sheet", str(workbook.path), cwd=tmp_path)
    assert mixed.returncode == 0, mixed.stdout + mixed.stderr
    assert "records in/out/failed 3/2/1" in mixed.stdout
    assert sorted(m["To"] for m in smtp.wait_for(2)) == ["a@example.com", "c@example.com"]
    errors = workbook.records("Errors")
    assert [(e["job"], e["record_key"], e["stage"]) for e in errors] == [
        ("mixed", "b@example.com", "render")]
    assert "recipient 2: the email cannot be built" in errors[0]["message"]

    bad = cli("run-job", "all-bad", "--sheet", str(workbook.path), cwd=tmp_path)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "none of the 1 recipient(s) got the email" in bad.stdout
    assert "of all-bad: failed after 1 attempt(s)" in bad.stdout
    assert [r["status"] for r in workbook.records("Runs")] == ["failed", "ok"]
    assert len(smtp.messages) == 2


def test_send_email_retried_after_a_timeout_sends_nobody_a_second_copy(workbook, tmp_path,
                                                                       smtp):
    stuck = ("{% if email == 'c@example.com' %}{% for i in range(100000) %}"
             "{% for j in range(100000) %}{% endfor %}{% endfor %}{% endif %}Hello")
    workbook.write("Templates", ["name", "subject", "body", "format"],
                   [["hello", "Hi", stuck, "text"]])
    workbook.jobs(_mail_job("stuck-mail", ["a@example.com", "b@example.com", "c@example.com"],
                            timeout_s="2"))
    result = cli("run-job", "stuck-mail", "--sheet", str(workbook.path), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "attempt 3: timeout" in result.stdout and "timeout after 3 attempt(s)" in result.stdout
    assert sorted(m["To"] for m in smtp.messages) == ["a@example.com", "b@example.com"]


# -- bad environment and arguments: one sentence, exit 2 ----------------------------------

@pytest.mark.parametrize("data, expected", [
    ("notes.txt", "--data notes.txt is not a SQLite file"),
    (".", "--data . is a directory"),
    ("missing/sheets.db", "the folder missing does not exist"),
])
def test_emulator_bad_data_path_is_one_sentence_and_exit_2(tmp_path, data, expected):
    (tmp_path / "notes.txt").write_text("not a database\n")
    result = cli("emulator", "--port", "0", "--data", data, cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command, env, expected", [
    (("run-job", "x", "--sheet", "ops.xlsx"), {"SHEETOPS_STORE_URL": "notes"},
     "(SHEETOPS_STORE_URL): file is not a database"),
    (("dashboard", "--port", "0"), {"SHEETOPS_STORE_URL": "notes"},
     "(SHEETOPS_STORE_URL): file is not a database"),
    (("automations",), {"SHEETOPS_METRICS_PORT": "99999"},
     "SHEETOPS_METRICS_PORT='99999' is not valid (input should be less than or equal"),
    (("automations",), {"SHEETOPS_LOG_LEVEL": "LOUD"},
     "SHEETOPS_LOG_LEVEL='LOUD' is not valid (use one of DEBUG, INFO"),
])
def test_bad_setting_is_one_sentence_and_exit_2(workbook, tmp_path, command, env, expected):
    (tmp_path / "notes.txt").write_text("not a database\n")
    env = {k: (f"sqlite:///{tmp_path / 'notes.txt'}" if v == "notes" else v)
           for k, v in env.items()}
    result = cli(*command, cwd=tmp_path, timeout=60, **env)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unknown_setting_is_warned_once_in_one_line(tmp_path):
    result = cli("automations", cwd=tmp_path, SHEETOPS_WROKERS="4")
    assert result.returncode == 0
    lines = [line for line in result.stderr.splitlines() if "SHEETOPS_WROKERS" in line]
    assert len(lines) == 1 and lines[0].endswith(
        "SHEETOPS_WROKERS is not a sheetops setting and is ignored")
    assert "UserWarning" not in result.stderr and ".py:" not in result.stderr


# -- automation discovery -----------------------------------------------------------------

def test_working_directory_code_is_never_imported_and_builtins_stay(tmp_path):
    marker = tmp_path / "imported.txt"
    (tmp_path / "automations").mkdir()
    for path in (tmp_path / "automations" / "__init__.py", tmp_path / "requests.py",
                 tmp_path / "demo.py"):
        path.write_text(f"open({str(marker)!r}, 'a').write({path.name!r})\n")
    result = cli("automations", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = {line.split()[0] for line in result.stdout.splitlines()}
    assert {"send_email", "http_get", "heartbeat", "t_probe"} <= names
    assert not marker.exists()


def test_module_that_fails_to_import_is_named_beside_unknown_automation(workbook, tmp_path):
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "team_autos.py").write_text("import no_such_dependency\n")
    workbook.jobs({"job": "nightly", "automation": "team_job", "schedule": "every 1h",
                   "enabled": "TRUE"})
    result = cli("validate", "--sheet", "ops.xlsx", cwd=tmp_path,
                 SHEETOPS_AUTOMATIONS="automations_for_tests,team_autos",
                 PYTHONPATH=os.pathsep.join([str(TESTS_DIR), str(tmp_path / "libs")]))
    assert result.returncode == 1
    line = next(x for x in result.stdout.splitlines() if "unknown automation" in x)
    assert line.startswith("Jobs!B2: unknown automation 'team_job'")
    assert ("not imported: team_autos (ModuleNotFoundError: No module named "
            "'no_such_dependency')") in line


def test_version_and_help_without_type_noise(tmp_path):
    version = cli("--version", cwd=tmp_path)
    assert version.returncode == 0
    assert version.stdout.strip() == f"sheetops {sheetops.__version__}"
    helptext = cli("run", "--help", cwd=tmp_path)
    assert helptext.returncode == 0
    assert "--progress / --no-progress" in helptext.stdout
    assert "<bool>" not in helptext.stdout


def test_only_secrets_the_deployment_names_resolve(workbook, tmp_path, monkeypatch):
    monkeypatch.setenv("SHEETOPS_DASHBOARD_PASSWORD", "dash-pass-123")
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text("# sheetops secrets\nCRM_TOKEN=tok-from-file-99\n")
    secrets_file.chmod(0o600)
    with HttpServer() as server:
        server.json("/hook", [{"ok": True}])
        url = f"http://127.0.0.1:{server.port}/hook"

        def job(name: str, secret: str) -> dict[str, str]:
            return {"job": name, "automation": "http_get", "schedule": "manual",
                    "max_attempts": "1", "params": json.dumps(
                        {"url": url, "headers": {"X-Token": f"secret:{secret}"}})}

        workbook.jobs(job("steal", "SHEETOPS_DASHBOARD_PASSWORD"), job("crm", "CRM_TOKEN"))
        env = {"SHEETOPS_SECRETS_FILE": str(secrets_file)}
        checked = cli("validate", "--sheet", str(workbook.path), cwd=tmp_path, **env)
        assert checked.returncode == 1, checked.stdout + checked.stderr
        problem = ("Jobs!E2: secret 'SHEETOPS_DASHBOARD_PASSWORD' is not one the deployment "
                   "allows; add it to SHEETOPS_SECRETS or the SHEETOPS_SECRETS_FILE")
        assert problem in checked.stdout
        assert [(r["cell"], r["severity"]) for r in workbook.records("Validation")] == [
            ("E2", "error")]

        refused = cli("run-job", "steal", "--sheet", str(workbook.path), cwd=tmp_path, **env)
        assert refused.returncode == 1 and "Jobs!E2: secret 'SHEETOPS_DASHBOARD_PASSWORD'" \
            in refused.stderr, refused.stdout + refused.stderr
        allowed = cli("run-job", "crm", "--sheet", str(workbook.path), cwd=tmp_path, **env)
        assert allowed.returncode == 0, allowed.stdout + allowed.stderr
        assert [r.headers["x-token"] for r in server.requests] == ["tok-from-file-99"]

        secrets_file.chmod(0o644)
        loose = cli("run-job", "crm", "--sheet", str(workbook.path), cwd=tmp_path, **env)
        assert loose.returncode == 1 and "is readable by others (mode 0644)" in loose.stderr
        assert len(server.requests) == 1


def test_a_secret_is_masked_in_every_form_on_tabs_store_and_logs(workbook, tmp_path, store):
    import base64
    from urllib.parse import quote

    token = 'tok/Sup3r"Secret+4711'
    host = "smtp-secret-host-7.invalid"
    workbook.write("Templates", ["name", "subject", "body", "format"],
                   [["hello", "Hi", "Hello", "text"]])
    workbook.jobs({"job": "leaky", "automation": "t_leak", "schedule": "manual",
                   "max_attempts": "1", "params": json.dumps({"token": "secret:API_TOKEN"})},
                  {"job": "mail", "automation": "send_email", "schedule": "manual",
                   "template": "hello", "max_attempts": "1", "params": json.dumps(
                       {"recipients": ["a@example.com"], "smtp": {"host": "secret:SMTP_HOST"}})})
    env = {"SHEETOPS_SECRETS": "API_TOKEN,SMTP_HOST", "API_TOKEN": token, "SMTP_HOST": host}
    leaky = cli("run-job", "leaky", "--sheet", str(workbook.path), cwd=tmp_path, **env)
    mail = cli("run-job", "mail", "--sheet", str(workbook.path), cwd=tmp_path, **env)
    assert (leaky.returncode, mail.returncode) == (1, 1), leaky.stderr + mail.stderr
    assert "server echoed ***" in leaky.stderr
    assert "SMTP ***:25" in mail.stderr + mail.stdout

    forms = [token, token.upper(), base64.b64encode(token.encode()).decode(),
             json.dumps(token)[1:-1], quote(token, safe=""), host]
    errors = workbook.records("Errors")
    assert "key-***" in {e["record_key"] for e in errors}
    outputs = {"stdout/stderr": leaky.stdout + leaky.stderr + mail.stdout + mail.stderr,
               "tabs": json.dumps([workbook.rows(t) for t in ("Status", "Runs", "Errors")],
                                  default=str),
               "store": json.dumps([store.recent_errors(50), store.recent_runs(50)],
                                   default=str)}
    leaks = [(where, form) for where, text in outputs.items() for form in forms
             if form in text or json.dumps(form)[1:-1] in text]
    assert leaks == []


# -- bad settings and worker processes (found in review) -----------------------------------

def _one_error_line(result: subprocess.CompletedProcess, code: int = 2) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_run_with_an_absurd_interval_keeps_the_good_jobs(workbook, tmp_path):
    workbook.jobs(probe("good", "every 1h"), probe("far", "every 99999999d"))
    checked = cli("validate", "--sheet", str(workbook.path), cwd=tmp_path)
    assert checked.returncode == 1 and "Jobs!C3:" in checked.stdout, checked.stdout
    ran = cli("run", "--sheet", str(workbook.path), "--for", "0.5", cwd=tmp_path, timeout=30)
    assert ran.returncode == 0, ran.stderr
    assert "running 1 job(s)" in ran.stdout
    assert "Traceback" not in ran.stderr


def test_a_bad_sheetops_setting_is_one_sentence(tmp_path):
    line = _one_error_line(cli("validate", "--sheet", "ops.xlsx", cwd=tmp_path,
                               SHEETOPS_WORKERS="many"))
    assert "SHEETOPS_WORKERS" in line and "'many'" in line


def test_a_store_url_with_a_bad_port_is_one_sentence_without_the_password(workbook,
                                                                          tmp_path):
    url = "postgresql+psycopg://ops:hunter2@127.0.0.1:notaport/x"
    line = _one_error_line(cli("run", "--sheet", str(workbook.path), "--for", "1",
                               cwd=tmp_path, SHEETOPS_STORE_URL=url))
    assert "store URL" in line and "hunter2" not in line


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


def _run_with_two_workers(workbook, tmp_path) -> subprocess.Popen:
    """`sheetops run` with two worker processes and one hourly job, in the background."""
    workbook.jobs(probe("beat", "every 1h"))
    return subprocess.Popen([str(Path(sys.executable).with_name("sheetops")), "run",
                             "--sheet", str(workbook.path), "--workers", "2"],
                            cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_workers_do_not_outlive_a_killed_scheduler(workbook, tmp_path):
    proc = _run_with_two_workers(workbook, tmp_path)
    try:
        workers = wait_for(lambda: len(_children(proc.pid)) >= 2 and _children(proc.pid))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        # a worker checks its parent once a second; room for a loaded machine's delays
        deadline = time.time() + 15
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.05)
        left = [p for p in workers if _alive(p)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, "worker processes kept running after the scheduler was killed"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_workers_stop_on_sigterm(workbook, tmp_path):
    """multiprocessing stops daemon workers with SIGTERM at exit; a worker that ignores
    it (the CLI's own SIGTERM handler, inherited by fork) hangs the exiting scheduler."""
    proc = _run_with_two_workers(workbook, tmp_path)
    try:
        workers = wait_for(lambda: len(_children(proc.pid)) >= 2 and _children(proc.pid))
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 15
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.05)
        assert not [p for p in workers if _alive(p)]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
