"""Every ``sheetops`` command against a Google Sheet served by the local emulator.

The commands run as real subprocesses (``python -m sheetops.cli``) with the real
gspread talking HTTP to an emulator in this test process, so what is checked is what a
user typing the commands gets: exit codes, one-sentence errors, and the tabs.
"""

# pytest fixtures are imported by name and then requested as arguments.
# ruff: noqa: F811

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sheetops.connectors.sheets import open_sheet

from sheetops import tabs
from sheetops.sheets import TabWrite
from sheetops.store import Store
from sheetops.testing import SheetsEmulator
from sheetops.testing.fixtures import (  # noqa: F401  (pytest fixtures)
    SERVICE_ACCOUNT_EMAIL,
    emulator,
    emulator_env,
    google_sheet_url,
    make_service_account,
)


def cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sheetops.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def cli_parallel(commands: list[tuple[str, ...]], env: dict[str, str], cwd: Path
                 ) -> list[subprocess.CompletedProcess[str]]:
    """Run independent commands at the same time (each is a full CLI start-up)."""
    procs = [subprocess.Popen([sys.executable, "-m", "sheetops.cli", *c], env=env, cwd=cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    results = []
    for c, p in zip(commands, procs, strict=True):
        out, err = p.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(list(c), p.returncode, out, err))
    return results


def base_env(tmp_path: Path) -> dict[str, str]:
    """The test's environment (the emulator fixtures set theirs with monkeypatch) plus a
    store of its own and tight Sheets retries."""
    env = dict(os.environ)
    env.update({"SHEETOPS_STORE_URL": f"sqlite:///{tmp_path / 'store.db'}",
                "SHEETOPS_SHEETS_MAX_RETRIES": "2", "SHEETOPS_WORKERS": "1",
                "SHEETOPS_LOG_LEVEL": "WARNING"})
    return env


def one_sentence_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error line of a failed command, checking there is no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def key_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


JOBS_HEADER = ["job", "automation", "schedule", "enabled", "params", "max_attempts"]


def test_init_validate_run_job_and_run(emulator_env: SheetsEmulator, google_sheet_url: str,
                                       tmp_path: Path) -> None:
    url, key = google_sheet_url, key_of(google_sheet_url)
    env = base_env(tmp_path)
    # Someone already started: a Jobs tab of their own and notes in Sheet1.
    sheet = open_sheet(url)
    own_jobs = [JOBS_HEADER, ["mine", "heartbeat", "manual", "TRUE", "{}", "1"]]
    sheet.write_batch([TabWrite("Jobs", own_jobs), TabWrite("Sheet1", [["keep me"]])])

    result = cli("init", "--sheet", url, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "kept existing tab Jobs" in result.stdout
    assert "created tab Validation" in result.stdout
    titles = emulator_env.tab_titles(key)
    assert titles[:2] == ["Sheet1", "Jobs"]
    assert set(titles) == {"Sheet1", *tabs.CONFIG_TABS, *tabs.SYSTEM_TABS}
    assert emulator_env.values(key, "Jobs") == own_jobs  # untouched
    assert emulator_env.values(key, "Sheet1") == [["keep me"]]
    model = emulator_env.spreadsheet(key)
    alerts = model.sheet_named("Alerts")
    assert alerts.frozen_rows == 1
    header = [c.name for c in tabs.ALERT_COLUMNS]
    assert emulator_env.values(key, "Alerts")[0] == header
    assert alerts.cells[(0, 0)].get("n"), "header cells carry notes"
    kinds = {rule["condition"]["type"] for _b, rule in alerts.validations if rule}
    assert kinds == {"ONE_OF_LIST"}  # metric and enabled (TRUE/FALSE/yes/no/1/0) dropdowns
    assert model.sheet_named("Runs").frozen_rows == 1

    # init again: nothing to do, nothing touched (alongside a first validate)
    again, result = cli_parallel([("init", "--sheet", url), ("validate", "--sheet", url)],
                                 env, tmp_path)
    assert again.returncode == 0 and "created tab" not in again.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 valid job(s), 0 error(s)" in result.stdout

    sheet.write_batch([TabWrite("Jobs", [["broken", "no_such_automation", "every 1m",
                                          "TRUE", "{}", "1"]], start_row=3)])
    result = cli("validate", "--sheet", url, env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "Jobs!B3" in result.stdout
    problems = emulator_env.values(key, "Validation")
    assert problems[0] == [c.name for c in tabs.VALIDATION_COLUMNS]
    assert [p[:2] for p in problems[1:]] == [["Jobs", "B3"]]

    result = cli("run-job", "mine", "--sheet", url, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = re.search(r"run (\S+) of mine: ok", result.stdout).group(1)
    runs = emulator_env.values(key, "Runs")
    assert [r[0] for r in runs[1:]] == [run_id]
    status = {r[0]: r for r in emulator_env.values(key, "Status")[1:]}
    assert status["mine"][1] == "ok"

    result = cli("run-job", "nope", "--sheet", url, env=env, cwd=tmp_path)
    assert result.returncode == 1 and "nope" in result.stderr
    assert "Traceback" not in result.stderr

    # The scheduler: a job every second, stopped by --for.
    sheet.write_batch([TabWrite("Jobs", [["beat", "heartbeat", "every 1s", "TRUE", "{}",
                                          "1"]], start_row=3)])
    result = cli("run", "--for", "3", "--sheet", url, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "outbox 0 pending" in result.stdout
    store = Store(env["SHEETOPS_STORE_URL"])
    try:
        ids = [r["id"] for r in store.recent_runs(500)]
        assert len(ids) >= 3  # run-job's run + at least two beats
        assert [r[0] for r in emulator_env.values(key, "Runs")[1:]] == ids
        assert store.pending_outbox().count == 0
        assert store.gauges()["outbox_depth"][0] == 0
    finally:
        store.dispose()
    assert emulator_env.values(key, "Validation")[1:] == []  # the fixed config is clean


def test_service_account_credentials_without_emulator_variable(
        emulator: SheetsEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No SHEETOPS_SHEETS_EMULATOR: the URL's host (not Google's) routes gspread to the
    emulator, and the service-account key goes through a real JWT token exchange."""
    for name in ("SHEETOPS_SHEETS_EMULATOR", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    key = emulator.create_spreadsheet("shared")
    emulator.share(key, SERVICE_ACCOUNT_EMAIL)
    env = base_env(tmp_path)
    env["SHEETOPS_GOOGLE_CREDENTIALS"] = str(make_service_account(emulator, tmp_path))
    url = emulator.sheet_url(key)

    result = cli("init", "--sheet", url, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert emulator.counts["token"] >= 1
    result = cli("validate", "--sheet", url, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    result = cli("run-job", "heartbeat-1m", "--sheet", url, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(emulator.values(key, "Runs")) == 2

    # not shared with the service account: 403 -> what to do, exit 2
    private = emulator.create_spreadsheet("private")
    emulator.share(private, "someone-else@example.com")
    # no such spreadsheet: 404 -> check the URL, exit 2
    not_shared, not_found = cli_parallel(
        [("validate", "--sheet", emulator.sheet_url(private)),
         ("run", "--for", "1", "--sheet", emulator.sheet_url("x" * 44))], env, tmp_path)
    line = one_sentence_error(not_shared)
    assert SERVICE_ACCOUNT_EMAIL in line and "share the sheet" in line
    line = one_sentence_error(not_found)
    assert "was not found" in line and "--sheet" in line

    # an unreadable key file
    env["SHEETOPS_GOOGLE_CREDENTIALS"] = str(tmp_path / "missing.json")
    line = one_sentence_error(cli("init", "--sheet", url, env=env, cwd=tmp_path))
    assert "SHEETOPS_GOOGLE_CREDENTIALS" in line


def test_google_errors_with_the_emulator_variable(emulator_env: SheetsEmulator,
                                                  tmp_path: Path) -> None:
    env = base_env(tmp_path)
    private = emulator_env.create_spreadsheet("private")
    emulator_env.share(private, "someone-else@example.com")
    url = emulator_env.sheet_url(private)
    commands = [("init",), ("validate",), ("run-job", "x"), ("run", "--for", "1")]
    for command, result in zip(commands, cli_parallel(
            [(*c, "--sheet", url) for c in commands], env, tmp_path), strict=True):
        assert "may not open Google Sheet" in one_sentence_error(result), command
    line = one_sentence_error(cli("validate", "--sheet", "k" * 44, env=env, cwd=tmp_path))
    assert "was not found" in line
    emulator_env.faults.set(outage=True)
    line = one_sentence_error(cli("validate", "--sheet", url, env=env, cwd=tmp_path))
    assert "unavailable" in line and "try again" in line


def test_emulator_command_serves_a_seeded_workbook(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    for name in ("SHEETOPS_SHEETS_EMULATOR", "SHEETOPS_GOOGLE_CREDENTIALS",
                 "GOOGLE_APPLICATION_CREDENTIALS"):
        env.pop(name, None)
    workbook = tmp_path / "ops.xlsx"
    result = cli("init", "--sheet", str(workbook), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with SheetsEmulator() as probe:  # find a free port, then let the command take it
        port = int(probe.url.rsplit(":", 1)[1])
    proc = subprocess.Popen([sys.executable, "-m", "sheetops.cli", "emulator", "--port",
                             str(port), "--seed", str(workbook)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = ""
        deadline = time.monotonic() + 30
        while not url and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"Seeded .* as (http://127\.0\.0\.1:\d+/spreadsheets/d/\S+)", line)
            url = m.group(1) if m else ""
        assert url, proc.stderr.read() if proc.poll() is not None else "no URL printed"
        env["SHEETOPS_SHEETS_EMULATOR"] = f"http://127.0.0.1:{port}"
        result = cli("validate", "--sheet", url, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "2 valid job(s)" in result.stdout
        result = cli("run-job", "heartbeat-1m", "--sheet", url, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        busy = cli("emulator", "--port", str(port), env=env, cwd=tmp_path)
        assert "choose another --port" in one_sentence_error(busy)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_run_job_while_google_refuses_writes_keeps_them_in_the_outbox(
        emulator_env: SheetsEmulator, google_sheet_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads work, writes fail (in process, so the write can be made to fail alone):
    the run still counts, the CLI says the tabs are behind, and the next command
    delivers the rows."""
    from sheetops.connectors.sheets.google import GoogleSheet
    from typer.testing import CliRunner

    from sheetops.cli import app
    from sheetops.errors import SheetUnavailable
    from sheetops.settings import get_settings

    env = base_env(tmp_path)
    assert cli("init", "--sheet", google_sheet_url, env=env, cwd=tmp_path).returncode == 0
    monkeypatch.setenv("SHEETOPS_STORE_URL", env["SHEETOPS_STORE_URL"])
    monkeypatch.setenv("SHEETOPS_WORKERS", "1")
    get_settings.cache_clear()

    def refuse(self: GoogleSheet, writes: object) -> None:
        raise SheetUnavailable("Google Sheets is unavailable (test)")

    with monkeypatch.context() as patch:
        patch.setattr(GoogleSheet, "write_batch", refuse)
        result = CliRunner().invoke(app, ["run-job", "heartbeat-1m", "--sheet",
                                          google_sheet_url])
    assert result.exit_code == 0, result.output
    assert "kept in the outbox" in result.output
    key = key_of(google_sheet_url)
    assert len(emulator_env.values(key, "Runs")) == 1  # header only: not written yet
    result = cli("run-job", "heartbeat-1m", "--sheet", google_sheet_url, env=env,
                 cwd=tmp_path)
    assert result.returncode == 0 and "outbox" not in result.stderr
    store = Store(env["SHEETOPS_STORE_URL"])
    try:
        ids = [r["id"] for r in store.recent_runs(10)]
        assert len(ids) == 2 and store.pending_outbox().count == 0
    finally:
        store.dispose()
    assert [r[0] for r in emulator_env.values(key, "Runs")[1:]] == ids
