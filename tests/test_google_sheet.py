"""The GoogleSheet backend, real gspread over HTTP against the emulator."""

# pytest fixtures are imported by name and then requested as arguments.
# ruff: noqa: F811

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sheetops.connectors.sheets.factory import open_sheet
from sheetops.connectors.sheets.google import GoogleSheet

from sheetops.errors import SheetError, SheetUnavailable
from sheetops.ratelimit import shared_limiter
from sheetops.settings import get_settings
from sheetops.sheets import ColumnSpec, SheetBackend, TabSpec, TabWrite
from sheetops.testing import SheetsEmulator
from sheetops.testing.fixtures import (  # noqa: F401
    SERVICE_ACCOUNT_EMAIL,
    emulator,
    emulator_env,
    google_sheet_url,
    make_service_account,
)

FAST = {"retry_initial_s": 0.01, "retry_max_s": 0.05}
SPECS = [
    TabSpec("Jobs", (ColumnSpec("job", "Unique id"),
                     ColumnSpec("schedule", "cron or every 10m"),
                     ColumnSpec("enabled", "TRUE/FALSE", checkbox=True),
                     ColumnSpec("catch_up", "after downtime", choices=("skip", "once", "all"))),
            examples=(("ping", "every 10m", True, "once"),)),
    TabSpec("Status", (ColumnSpec("job", "Job id"), ColumnSpec("state", "last state")),
            system=True),
]


def _key(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_matches() -> None:
    assert GoogleSheet.matches("https://docs.google.com/spreadsheets/d/1AbC-dEf_123/edit#gid=0")
    assert GoogleSheet.matches("http://127.0.0.1:8085/spreadsheets/d/abcDEF123")
    assert GoogleSheet.matches("1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms")
    assert not GoogleSheet.matches("ops.xlsx")
    assert not GoogleSheet.matches("config/ops.xlsx")


def test_factory_opens_it_and_it_is_a_backend(google_sheet_url: str) -> None:
    sheet = open_sheet(google_sheet_url)
    assert isinstance(sheet, GoogleSheet) and isinstance(sheet, SheetBackend)
    assert sheet.location == google_sheet_url


def test_ensure_tabs_creates_only_missing_tabs(emulator_env: SheetsEmulator,
                                               google_sheet_url: str) -> None:
    key = _key(google_sheet_url)
    sheet = GoogleSheet.open(google_sheet_url)
    sheet.write_batch([TabWrite("Status", [["job", "state"], ["keep", "me"]])])
    emulator_env.reset_counts()
    report = sheet.ensure_tabs(SPECS)
    assert report.created == ["Jobs"] and report.existing == ["Status"]
    assert dict(emulator_env.counts) == {"get": 1, "batchUpdate": 1, "values.batchUpdate": 1}
    assert emulator_env.values(key, "Status") == [["job", "state"], ["keep", "me"]]
    assert emulator_env.values(key, "Jobs") == [["job", "schedule", "enabled", "catch_up"],
                                                ["ping", "every 10m", "TRUE", "once"]]
    jobs = emulator_env.spreadsheet(key).sheet_named("Jobs")
    assert jobs is not None and jobs.frozen_rows == 1
    assert jobs.cells[(0, 0)]["n"] == "Unique id"
    assert jobs.validation_at(5, 2) == {"condition": {"type": "BOOLEAN"}, "strict": True}
    rule = jobs.validation_at(5, 3)
    assert rule is not None and [v["userEnteredValue"] for v in rule["condition"]["values"]] == [
        "skip", "once", "all"]
    assert jobs.validation_at(0, 3) is None  # not on the header
    emulator_env.reset_counts()
    assert sheet.ensure_tabs(SPECS).created == []
    assert dict(emulator_env.counts) == {"get": 1}


def test_read_tabs_is_one_batch_get(emulator_env: SheetsEmulator,
                                    google_sheet_url: str) -> None:
    sheet = GoogleSheet.open(google_sheet_url)
    sheet.ensure_tabs(SPECS)
    emulator_env.reset_counts()
    got = sheet.read_tabs(["Jobs", "Status", "Missing"])
    assert got == {"Jobs": [["job", "schedule", "enabled", "catch_up"],
                            ["ping", "every 10m", "TRUE", "once"]],
                   "Status": [["job", "state"]]}
    assert dict(emulator_env.counts) == {"values.batchGet": 1}


def test_read_tabs_notices_a_tab_added_by_someone_else(emulator_env: SheetsEmulator,
                                                      google_sheet_url: str) -> None:
    sheet = GoogleSheet.open(google_sheet_url, metadata_ttl_s=0)
    other = emulator_env.gspread_client().open_by_url(google_sheet_url)
    other.add_worksheet("Templates", rows=5, cols=2).update([["name", "body"]], "A1")
    assert sheet.read_tabs(["Templates"]) == {"Templates": [["name", "body"]]}
    other.del_worksheet(other.worksheet("Templates"))
    assert sheet.read_tabs(["Templates", "Sheet1"]) == {"Sheet1": []}


def test_write_batch_is_one_request_and_raw(emulator_env: SheetsEmulator,
                                            google_sheet_url: str) -> None:
    key = _key(google_sheet_url)
    sheet = GoogleSheet.open(google_sheet_url)
    sheet.ensure_tabs(SPECS)
    emulator_env.reset_counts()
    sheet.write_batch([TabWrite("Status", [["ping", "=SUM(A1)"], ["pong", True]], start_row=2),
                       TabWrite("Jobs", [["x"]], start_row=3, width=4)])
    assert dict(emulator_env.counts) == {"values.batchUpdate": 1}
    assert emulator_env.values(key, "Status") == [["job", "state"], ["ping", "=SUM(A1)"],
                                                  ["pong", "TRUE"]]
    ss = emulator_env.spreadsheet(key)
    assert "f" not in ss.sheet_named("Status").cells[(1, 1)]
    sheet.write_batch([TabWrite("Status", [["short"]], start_row=2, width=2)])
    assert emulator_env.values(key, "Status")[1] == ["short"]  # padding cleared B2


def test_write_batch_creates_and_grows_with_one_structural_request(
        emulator_env: SheetsEmulator, google_sheet_url: str) -> None:
    key = _key(google_sheet_url)
    sheet = GoogleSheet.open(google_sheet_url)
    emulator_env.reset_counts()
    sheet.write_batch([TabWrite("Runs", [["r", i] for i in range(1200)]),
                       TabWrite("Sheet1", [["wide"] * 30])])
    assert dict(emulator_env.counts) == {"batchUpdate": 1, "values.batchUpdate": 1}
    assert len(emulator_env.values(key, "Runs")) == 1200
    assert len(emulator_env.values(key, "Sheet1")[0]) == 30
    emulator_env.reset_counts()
    sheet.write_batch([TabWrite("Runs", [["again"]], start_row=5)])
    assert dict(emulator_env.counts) == {"values.batchUpdate": 1}


def test_write_batch_recovers_from_stale_metadata(emulator_env: SheetsEmulator,
                                                  google_sheet_url: str) -> None:
    key = _key(google_sheet_url)
    sheet = GoogleSheet.open(google_sheet_url)
    sheet.write_batch([TabWrite("Status", [["a"]])])
    other = emulator_env.gspread_client().open_by_url(google_sheet_url)
    other.del_worksheet(other.worksheet("Status"))
    sheet.write_batch([TabWrite("Status", [["b"]])])
    assert emulator_env.values(key, "Status") == [["b"]]


def test_retries_through_faults(emulator_env: SheetsEmulator,
                                google_sheet_url: str) -> None:
    key = _key(google_sheet_url)
    sheet = GoogleSheet.open(google_sheet_url, attempts=8, **FAST)
    emulator_env.faults.set(error_rate=0.3, codes=(429, 500, 503), seed=11)
    for i in range(15):
        sheet.write_batch([TabWrite("Sheet1", [[f"row {i}"]], start_row=i + 1)])
        assert sheet.read_tabs(["Sheet1"])["Sheet1"][i] == [f"row {i}"]
    assert emulator_env.total_requests > 30  # some were refused and retried
    assert len(emulator_env.values(key, "Sheet1")) == 15


def test_retry_after_is_honoured(emulator_env: SheetsEmulator,
                                 google_sheet_url: str) -> None:
    sheet = GoogleSheet.open(google_sheet_url, attempts=3, **FAST)
    emulator_env.faults.set(error_rate=1.0, codes=(429,), retry_after=0.4)
    started = time.monotonic()
    with pytest.raises(SheetUnavailable):
        sheet.read_tabs(["Sheet1"])
    assert time.monotonic() - started >= 0.8  # two waits of at least Retry-After
    assert emulator_env.counts["values.batchGet"] == 3


def test_full_outage_is_bounded_and_unavailable(emulator_env: SheetsEmulator,
                                                google_sheet_url: str) -> None:
    sheet = GoogleSheet.open(google_sheet_url, attempts=4, **FAST)
    emulator_env.faults.set(outage=True)
    emulator_env.reset_counts()
    started = time.monotonic()
    with pytest.raises(SheetUnavailable, match="try again later"):
        sheet.write_batch([TabWrite("Sheet1", [["x"]])])
    with pytest.raises(SheetUnavailable):
        sheet.read_tabs(["Sheet1"])
    assert time.monotonic() - started < 5
    assert dict(emulator_env.counts) == {"values.batchUpdate": 4, "values.batchGet": 4}
    emulator_env.faults.set(outage=False)
    sheet.write_batch([TabWrite("Sheet1", [["x"]])])


def test_not_found_and_not_shared_are_clear_errors(emulator_env: SheetsEmulator,
                                                  google_sheet_url: str) -> None:
    with pytest.raises(SheetError, match="was not found") as err:
        GoogleSheet.open(emulator_env.sheet_url("n" * 44))
    assert not isinstance(err.value, SheetUnavailable)
    emulator_env.share(_key(google_sheet_url), "someone@example.com")
    with pytest.raises(SheetError, match="share the sheet"):
        GoogleSheet.open(google_sheet_url)


def test_unreadable_credentials_are_a_clear_error(emulator_env: SheetsEmulator,
                                                  google_sheet_url: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHEETOPS_GOOGLE_CREDENTIALS", str(tmp_path / "missing.json"))
    get_settings.cache_clear()
    with pytest.raises(SheetError, match="Cannot read the Google credentials file"):
        GoogleSheet.open(google_sheet_url)
    (tmp_path / "bad.json").write_text('{"type": "something_else"}')
    monkeypatch.setenv("SHEETOPS_GOOGLE_CREDENTIALS", str(tmp_path / "bad.json"))
    get_settings.cache_clear()
    with pytest.raises(SheetError, match="not a service-account key"):
        GoogleSheet.open(google_sheet_url)


def test_service_account_token_exchange(emulator_env: SheetsEmulator,
                                        google_sheet_url: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    key = _key(google_sheet_url)
    path = make_service_account(emulator_env, tmp_path)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    get_settings.cache_clear()
    emulator_env.share(key, "someone@example.com")
    with pytest.raises(SheetError, match=f"share the sheet with {SERVICE_ACCOUNT_EMAIL}"):
        GoogleSheet.open(google_sheet_url)
    emulator_env.share(key, SERVICE_ACCOUNT_EMAIL)
    sheet = GoogleSheet.open(google_sheet_url)
    sheet.write_batch([TabWrite("Sheet1", [["signed"]])])
    assert sheet.read_tabs(["Sheet1"]) == {"Sheet1": [["signed"]]}
    assert emulator_env.counts["token"] >= 1


def test_forged_service_account_key_is_rejected(emulator_env: SheetsEmulator,
                                                google_sheet_url: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_service_account(emulator_env, tmp_path)
    (tmp_path / "other").mkdir()
    make_service_account(emulator_env, tmp_path / "other")  # trusts a different key now
    monkeypatch.setenv("SHEETOPS_GOOGLE_CREDENTIALS", str(path))
    get_settings.cache_clear()
    with pytest.raises(SheetError, match="rejected the credentials"):
        GoogleSheet.open(google_sheet_url)


def test_client_side_rate_limit_waits(emulator_env: SheetsEmulator,
                                      google_sheet_url: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHEETOPS_SHEETS_READS_PER_MINUTE", "2")
    get_settings.cache_clear()
    sheet = GoogleSheet.open(google_sheet_url)  # read 1 of 2
    sheet.read_tabs(["Sheet1"])  # read 2 of 2
    waits: list[float] = []
    monkeypatch.setattr("sheetops.connectors.sheets.google_http.time.sleep", waits.append)
    monkeypatch.setattr(shared_limiter(), "hit",
                        lambda *a, **k: bool(waits))
    sheet.read_tabs(["Sheet1"])
    assert len(waits) == 1 and 0 < waits[0] <= 60


def _dropdown(emulator_env: SheetsEmulator, key: str, tab: str, column: str) -> list[str]:
    """What the dropdown under ``column`` (row 2) offers on the emulated sheet."""
    sheet = emulator_env.spreadsheet(key).sheet_named(tab)
    header = emulator_env.values(key, tab)[0]
    rule = sheet.validation_at(1, header.index(column))
    assert rule is not None and rule["condition"]["type"] == "ONE_OF_LIST", rule
    return [v["userEnteredValue"] for v in rule["condition"]["values"]]


def test_a_changed_automation_list_rides_along_with_the_next_write(
        emulator_env: SheetsEmulator, google_sheet_url: str) -> None:
    from sheetops import tabs
    from sheetops.registry import registry

    registry.discover()
    key = _key(google_sheet_url)
    sheet = GoogleSheet.open(google_sheet_url)
    sheet.ensure_tabs(tabs.config_tab_specs())
    names = tuple(registry.names())
    assert _dropdown(emulator_env, key, "Jobs", "automation") == list(names)
    emulator_env.reset_counts()
    assert not sheet.keep_choices("Jobs", "automation", names)  # current: nothing to send
    assert dict(emulator_env.counts) == {"get": 1}  # looked up once (Jobs!1:2)
    emulator_env.reset_counts()
    assert not sheet.keep_choices("Jobs", "automation", names)
    sheet.write_batch([TabWrite("Status", [["a"]], start_row=2)])
    assert dict(emulator_env.counts) == {"values.batchUpdate": 1}  # a flush: one request

    grown = tuple(sorted((*names, "crm_sync")))
    emulator_env.reset_counts()
    assert sheet.keep_choices("Jobs", "automation", grown)
    assert not sheet.keep_choices("Jobs", "automation", grown)  # queued once
    assert dict(emulator_env.counts) == {}  # nothing sent until the next write
    sheet.write_batch([TabWrite("Status", [["b"]], start_row=2)])
    assert dict(emulator_env.counts) == {"batchUpdate": 1, "values.batchUpdate": 1}
    assert _dropdown(emulator_env, key, "Jobs", "automation") == list(grown)
    assert emulator_env.values(key, "Status")[1] == ["b"]  # and the flush's values landed
    emulator_env.reset_counts()
    sheet.write_batch([TabWrite("Status", [["c"]], start_row=2)])
    assert dict(emulator_env.counts) == {"values.batchUpdate": 1}  # sent once


def test_enabled_is_a_dropdown_of_what_its_note_says(emulator_env: SheetsEmulator,
                                                     google_sheet_url: str) -> None:
    from sheetops import tabs
    from sheetops.registry import registry

    registry.discover()
    key = _key(google_sheet_url)
    sheet = GoogleSheet.open(google_sheet_url)
    sheet.ensure_tabs(tabs.config_tab_specs())
    for tab in ("Jobs", "Alerts"):
        assert _dropdown(emulator_env, key, tab, "enabled") == [
            "TRUE", "FALSE", "yes", "no", "1", "0"]
        header = emulator_env.values(key, tab)[0]
        note = emulator_env.spreadsheet(key).sheet_named(tab).cells[
            (0, header.index("enabled"))]["n"]
        assert "yes/no and 1/0" in note
    # examples are real booleans (RAW), shown TRUE/FALSE, never 1/0
    jobs = emulator_env.spreadsheet(key).sheet_named("Jobs")
    header = emulator_env.values(key, "Jobs")[0]
    assert [jobs.cells[(r, header.index("enabled"))]["v"] for r in (1, 2)] == [True, False]
    assert [row[header.index("enabled")] for row in emulator_env.values(key, "Jobs")[1:]] == [
        "TRUE", "FALSE"]


def test_validate_offers_a_newly_registered_automation_on_google(
        emulator_env: SheetsEmulator, google_sheet_url: str, tmp_path: Path) -> None:
    from conftest import TESTS_DIR
    from test_cli_google import base_env, cli

    key = _key(google_sheet_url)
    env = base_env(tmp_path) | {"SHEETOPS_AUTOMATIONS": ""}
    assert cli("init", "--sheet", google_sheet_url, env=env, cwd=tmp_path).returncode == 0
    assert "t_probe" not in _dropdown(emulator_env, key, "Jobs", "automation")
    env |= {"SHEETOPS_AUTOMATIONS": "automations_for_tests", "PYTHONPATH": str(TESTS_DIR)}
    emulator_env.reset_counts()
    result = cli("validate", "--sheet", google_sheet_url, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "t_probe" in _dropdown(emulator_env, key, "Jobs", "automation")
    # one look at Jobs!1:2, and the dropdown in the Validation write's structural request
    assert emulator_env.counts["batchUpdate"] == 1
    emulator_env.reset_counts()
    result = cli("validate", "--sheet", google_sheet_url, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "batchUpdate" not in emulator_env.counts  # unchanged list: no structural request
