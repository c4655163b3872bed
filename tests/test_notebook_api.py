"""The notebook API against a real workbook, a real emulated Google Sheet and loopback
servers: typed tabs, problems with cells, dry runs that send nothing, real runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from sheetops.notebook import automation, dry_run, open_config, run
from sheetops.notebook import history as nb_history
from sheetops.sheets import TabWrite


def _jobs(workbook, *rows):
    workbook.jobs(*rows)
    return open_config(str(workbook.path))


def test_tabs_are_typed_from_their_column_specs(workbook):
    workbook.write("Stages", ["job", "stage", "batch_size", "timeout_s", "rate_limit"],
                   [["a", "validate", "500", "2.5", "10/second"]])
    workbook.write("Alerts", ["name", "job", "metric", "threshold", "window", "enabled"],
                   [["slow", "a", "failure_rate", "0.5", "1h", "no"]])
    cfg = _jobs(workbook,
                {"job": "a", "automation": "heartbeat", "schedule": "every 1m",
                 "enabled": "yes", "params": '{"n": 1}', "timeout_s": "30"},
                {"job": "007", "automation": "heartbeat", "schedule": "manual",
                 "enabled": "FALSE", "params": "", "timeout_s": ""})
    jobs = cfg.jobs
    assert str(jobs["enabled"].dtype) == "boolean" and list(jobs["enabled"]) == [True, False]
    assert str(jobs["timeout_s"].dtype) == "Float64" and jobs.loc[2, "timeout_s"] == 30.0
    assert jobs.loc[2, "params"] == {"n": 1} and jobs.loc[3, "params"] == {}
    assert jobs.loc[3, "job"] == "007"  # text stays text
    assert list(cfg.next_runs()["job"]) == ["a", "007"]
    assert cfg.next_runs().loc[0, "next_run_1"] > pd.Timestamp.now(tz="UTC")
    assert pd.isna(cfg.next_runs().loc[1, "next_run_1"])
    stages, alerts = cfg.tab("Stages"), cfg.tab("Alerts")  # as the parser reads them
    assert str(stages["batch_size"].dtype) == "Int64" and stages.loc[2, "batch_size"] == 500
    assert stages.loc[2, "timeout_s"] == 2.5 and stages.loc[2, "rate_limit"] == "10/second"
    assert alerts.loc[2, "threshold"] == 0.5 and alerts.loc[2, "window"] == "1h"
    assert not alerts.loc[2, "enabled"]


def test_problems_name_their_cells(workbook):
    cfg = _jobs(workbook, {"job": "bad", "automation": "heartbeat", "schedule": "every 1m",
                           "params": "{not json"})
    problems = cfg.problems
    row = problems[problems["problem"].str.contains("params")].iloc[0]
    assert (row["tab"], row["cell"], row["severity"]) == ("Jobs", "D2", "error")
    assert "Problems" in cfg._repr_html_() and "D2" in cfg._repr_html_()


def test_dry_run_of_a_job_captures_emails_and_sends_none(workbook, smtp):
    workbook.write("Templates", ["name", "subject", "body", "format"],
                   [["hi", "Hello {{ name }}", "Hi {{ name }}", "text"]])
    cfg = _jobs(workbook, {"job": "mail", "automation": "send_email", "schedule": "manual",
                           "template": "hi", "params": json.dumps(
                               {"recipients": [{"email": "a@example.com", "name": "Ann"},
                                               "b@example.com"], "vars": {"name": "you"}})})
    result = dry_run("mail", config=cfg)
    assert result.ok and result.result["records_out"] == 2 and result.result["dry_run"]
    assert list(result.effects["target"]) == ["a@example.com", "b@example.com"]
    assert list(result.effects["summary"]) == ["Hello Ann", "Hello you"]
    assert smtp.messages == []
    assert "Captured effects" in result._repr_html_()


def test_a_cell_automation_dry_run_shows_http_writes_and_the_sheet_diff(workbook, sheetops_http):
    cfg = open_config(str(workbook.path))
    workbook.settings(timezone="UTC")
    sheetops_http.json("/items", [1, 2, 3])

    @automation("nb_sync")
    def nb_sync(ctx):
        import requests

        items = requests.get(ctx.params["url"] + "/items", timeout=5).json()
        requests.post(ctx.params["url"] + "/push", json={"count": len(items)}, timeout=5)
        cfg.sheet.write_batch([TabWrite("Settings", [["key", "value"],
                                                     ["timezone", "Europe/Berlin"]])])
        return {"records_in": len(items)}

    result = dry_run(nb_sync, params={"url": sheetops_http.url("")})
    assert result.result == {"records_in": 3}
    http_effect = result.effects[result.effects["kind"] == "http"].iloc[0]
    assert http_effect["summary"].startswith("POST ") and http_effect["detail"] == {"count": 3}
    assert [r.method for r in sheetops_http.requests] == ["GET"]  # the write never left
    assert result.sheet_diff.to_dict("records") == [
        {"tab": "Settings", "cell": "B2", "before": "UTC", "after": "Europe/Berlin"}]
    assert workbook.records("Settings")[0]["value"] == "UTC"
    page = result._repr_html_()  # how Jupyter shows it: the effects and the cell diff
    assert "Sheet cells it would change" in page and "Europe/Berlin" in page
    assert "POST " in page


def test_dry_run_error_comes_back_with_its_traceback(workbook):
    result = dry_run("always_fails", params={"message": "nope"},
                     config=open_config(str(workbook.path)))
    assert not result.ok and result.error == "PermanentError: nope"
    assert "Traceback" in result.traceback


def test_render_template_row_with_sample_data(workbook):
    workbook.write("Templates", ["name", "subject", "body", "format"],
                   [["rep", "Report {{ n }}", "<b>{{ who }}</b>", "html"]])
    rendered = open_config(str(workbook.path)).render_template("rep", n=3, who="<Ann>")
    assert rendered.subject == "Report 3" and rendered.body == "<b>&lt;Ann&gt;</b>"
    assert "Subject:" in rendered._repr_html_()


def test_real_run_returns_attempts_and_errors_and_lands_in_history(workbook):
    cfg = _jobs(workbook, {"job": "boom", "automation": "always_fails", "schedule": "manual",
                           "params": '{"message": "no data"}', "max_attempts": 1})
    failed = run("boom", config=cfg)
    assert failed.status == "failed" and list(failed.attempts["status"]) == ["failed"]
    assert list(failed.errors["message"]) == ["no data"]
    page = failed._repr_html_()
    assert "Attempts" in page and "Errors" in page and "no data" in page
    ok = run("heartbeat", config=cfg)
    assert ok.ok and ok.result["records_out"] == 1
    from sheetops.notebook import store_of

    runs = nb_history.runs(store_of(cfg))
    assert sorted(runs["status"]) == ["failed", "ok"]


def test_google_sheet_config_counts_requests_against_the_quota(sheetops_google_sheet):
    cfg = open_config(sheetops_google_sheet)
    assert cfg.quota is not None
    before = cfg.quota.last_minute()["read"]
    cfg.reload()
    assert cfg.quota.last_minute()["read"] == before + 1
    assert "/60 reads" in repr(cfg.quota) and "<meter" in cfg.quota._repr_html_()
    assert list(cfg.jobs.columns)[:3] == ["job", "automation", "schedule"]
    # shown as the notebook works: under each dry run and run of this config
    spent = cfg.quota.total["read"] + cfg.quota.total["write"]
    assert "<meter" in dry_run("heartbeat", config=cfg)._repr_html_()
    ran = run("heartbeat", config=cfg)
    assert ran.ok and "Google Sheets quota" in ran._repr_html_()
    assert cfg.quota.total["read"] + cfg.quota.total["write"] > spent  # the run's status rows


@pytest.fixture(autouse=True)
def _forget_cell_automations():
    yield
    from sheetops.registry import registry

    registry._by_name.pop("nb_sync", None)


def test_capture_lets_reads_and_token_requests_out_and_keeps_writes(sheetops_http):
    import requests

    from sheetops.notebook import capture_effects

    sheetops_http.json("/token", {"access_token": "t"}, method="POST")
    sheetops_http.json("/data", [1])
    with capture_effects() as captured:
        assert requests.get(sheetops_http.url("/data"), timeout=5).json() == [1]
        assert requests.post(sheetops_http.url("/token"), data={"grant_type": "jwt"},
                             timeout=5).json() == {"access_token": "t"}
        assert requests.put(sheetops_http.url("/data"), json=[2], timeout=5).status_code == 202
    assert [r.method for r in sheetops_http.requests] == ["GET", "POST"]
    assert [(e["kind"], e["detail"]) for e in captured.rows()] == [("http", [2])]
    assert requests.put(sheetops_http.url("/data"), timeout=5).status_code == 404  # restored
