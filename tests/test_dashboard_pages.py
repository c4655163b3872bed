"""Every dashboard page through Streamlit's AppTest, on a store filled with realistic
runs: assert the numbers the pages show (metrics and dataframes)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from sheetops.dashboard.ui import TEXT_WIDTH, md_text
from sheetops.settings import get_settings
from sheetops.store import Store
from sheetops.testing.http import HttpServer
from sheetops.testing.store_fill import add_alerts, fill_realistic

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
P = "sheetops/dashboard/pages"


@pytest.fixture
def store(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/store.db"
    monkeypatch.setenv("SHEETOPS_STORE_URL", url)
    monkeypatch.delenv("SHEETOPS_DASHBOARD_PASSWORD", raising=False)
    monkeypatch.setenv("SHEETOPS_SHEET", "https://docs.google.com/spreadsheets/d/abc123/edit")
    get_settings.cache_clear()
    s = Store(url)
    ids = fill_realistic(s, time.time())
    s.ids = ids
    yield s
    s.dispose()
    get_settings.cache_clear()


def _open(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    if page:
        at.switch_page(f"{P}/{page}")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _frame(at: AppTest, *columns: str):
    """The first dataframe shown that has all ``columns``."""
    return next(d.value for d in at.dataframe if set(columns) <= set(d.value.columns))


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_overview_numbers(store):
    at = _open()
    m = _metrics(at)
    assert at.title[0].value == "Overview"
    assert m["Runs"] == "18"
    assert m["Success rate"] == "82.4%"
    assert m["Failure rate"] == "17.6%"
    assert m["Duration p50"] == "4.5 s"
    assert m["Duration p95"] == "10.0 min"
    assert m["Running now"] == "1"
    assert m["Failed"] == "2" and m["Timed out"] == "1"
    assert m["Outbox depth"] == "4"
    assert m["Config errors"] == "1" and m["Config warnings"] == "1"
    assert m["Alerts firing"] == "0"
    per_job = next(d.value for d in at.dataframe if "p95_s" in d.value.columns)
    row = per_job.set_index("job").loc["fetch-orders"]
    assert (row["runs"], row["failed"], row["timeout"], row["p95_s"]) == (10, 1, 1, 600.0)
    queues = next(d.value for d in at.dataframe if "stage" in d.value.columns)
    assert queues.set_index("stage")["depth"].to_dict() == {"enrich": 2, "fetch": 7}
    # the sheet link is there, the store URL is shown without secrets
    assert any("abc123" in str(b.proto) for b in at.get("link_button"))


def test_overview_window_and_job_filter(store):
    at = _open()
    at.sidebar.selectbox(key="f_window").set_value("7d").run()
    assert _metrics(at)["Runs"] == "23"
    at.sidebar.multiselect(key="f_jobs").set_value(["send-digest"]).run()
    m = _metrics(at)
    assert m["Runs"] == "4" and m["Failure rate"] == "0.0%" and m["Duration p95"] == "10.0 s"
    # the filters survive a page switch
    at.switch_page(f"{P}/runs.py").run()
    assert at.sidebar.selectbox(key="f_window").value == "7d"
    assert _metrics(at)["ok"] == "4"


def test_overview_and_alerts_page_show_real_alerts(store):
    with HttpServer() as server:
        add_alerts(store, time.time(), server)
    at = _open()
    assert _metrics(at)["Alerts firing"] == "2"
    firing = _frame(at, "rule", "firing_since")
    assert firing["rule"].tolist() == ["digest-slow", "orders-stuck"]
    at = _open("alerts.py")
    m = _metrics(at)
    assert m["Alerts firing"] == "2" and m["Alert events"] == "8"
    assert (m["Fired"], m["Reminders"], m["Resolved"], m["Delivery failures"]) == (
        "3", "2", "1", "2")
    firing = _frame(at, "rule", "undelivered")
    assert firing.set_index("rule")["undelivered"].to_dict() == {"digest-slow": True,
                                                                "orders-stuck": False}
    assert any("could not be delivered" in w.value for w in at.warning)
    history = _frame(at, "kind", "subject")
    assert len(history) == 8
    at.multiselect(key="alert_kinds").set_value(["resolved"]).run()
    history = _frame(at, "kind", "subject")
    assert history["rule"].tolist() == ["orders-failing"]
    at.sidebar.multiselect(key="f_jobs").set_value(["send-digest"]).run()
    assert _metrics(at)["Alerts firing"] == "1"


def test_overview_long_windows(store):
    at = _open()
    for label, runs in (("7d", "23"), ("30d", "23")):
        at.sidebar.selectbox(key="f_window").set_value(label).run()
        m = _metrics(at)
        assert m["Runs"] == runs and m["Failed"] == "2" and m["Timed out"] == "1"
        assert m["Success rate"] == "86.4%"
        assert any("approximate" in c.value for c in at.caption)


def test_jobs_page(store):
    at = _open("jobs.py")
    table = at.dataframe[0].value.set_index("job")
    assert list(table.index) == ["fetch-orders", "send-digest", "sync-crm"]
    assert table.loc["send-digest", "schedule_words"].startswith("At 07:00")
    assert table.loc["fetch-orders", "consecutive_failures"] == 2
    assert table.loc["sync-crm", "runs"] == 4


def test_job_detail_and_run_now(store):
    at = _open("job_detail.py")
    at.selectbox(key="detail_job").set_value("fetch-orders").run()
    m = _metrics(at)
    assert m["Runs"] == "10" and m["Failure rate"] == "20.0%"
    assert m["Records in"] == "90" and m["Records failed"] == "3"
    assert m["Consecutive failures"] == "2" and m["Last status"] == "timeout"
    md = " ".join(x.value for x in at.markdown)
    assert "every 10 minutes" in md and "Next runs:" in md
    runs = _frame(at, "id", "records_in")
    assert len(runs) == 10 and set(runs["status"]) == {"ok", "failed", "timeout"}
    # failed runs have an expander with attempts; traceback on demand
    labels = [e.label for e in at.expander]
    assert any(md_text(store.ids["failed"]) in lbl for lbl in labels)
    assert not any("HTTPError" in c.value for c in at.code)
    at.toggle(key=f"tb_{store.ids['failed']}_1").set_value(True).run()
    assert any("raise_for_status" in c.value for c in at.code)
    # Run now and Dry run put requests in the store, with who asked
    at.button(key="run_now").click().run()
    at.button(key="dry_run").click().run()
    reqs = store.claim_run_requests()
    assert [(r["job"], bool(r["dry_run"])) for r in reqs] == [("fetch-orders", False),
                                                            ("fetch-orders", True)]
    assert all(r["requested_by"].startswith("localhost:") for r in reqs)


def test_runs_page_filters(store):
    at = _open("runs.py")
    m = _metrics(at)
    assert (m["ok"], m["failed"], m["timeout"], m["running"]) == ("14", "2", "1", "1")
    at.sidebar.multiselect(key="f_status").set_value(["failed", "timeout"]).run()
    runs = at.dataframe[0].value
    assert set(runs["id"]) == {store.ids["failed"], store.ids["timeout"], store.ids["crm_failed"]}


def test_errors_page(store):
    at = _open("errors.py")
    m = _metrics(at)
    assert m["Errors"] == "5" and m["Jobs with errors"] == "2" and m["Error types"] == "3"
    recent = _frame(at, "record_key")
    assert "traceback" not in recent.columns
    assert "row 12" in set(recent["record_key"])


def test_queues_page(store):
    store.request_run("sync-crm", requested_by="ana")
    at = _open("queues.py")
    m = _metrics(at)
    assert m["Queued in stages"] == "0" and m["Outbox depth"] == "4"
    assert len(_frame(at, "id", "status", "started_at")) == 1  # running now
    reqs = _frame(at, "requested_by", "claimed_at")
    assert reqs.iloc[0]["requested_by"] == "ana"
    assert _frame(at, "queue", "depth").set_index("queue")["depth"].to_dict() == {
        "run_requests": 1}


def test_config_page(store):
    at = _open("config.py")
    m = _metrics(at)
    assert m["Errors"] == "1" and m["Warnings"] == "1" and m["Jobs configured"] == "3"
    problems = _frame(at, "cell", "severity")
    assert problems.iloc[0]["cell"] == "C5"
    assert set(_frame(at, "kind", "detail")["kind"]) == {"refresh", "changed"}


def test_password_gate_and_run_now_records_user(store, monkeypatch):
    monkeypatch.setenv("SHEETOPS_DASHBOARD_PASSWORD", "s3cret-pw")
    get_settings.cache_clear()
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    assert not at.metric  # nothing shown before login
    at.text_input[0].set_value("ana")
    at.text_input[1].set_value("wrong")
    at.button[0].click().run()
    assert at.error and not at.metric
    at.text_input[1].set_value("s3cret-pw")
    at.button[0].click().run()
    assert _metrics(at)["Runs"] == "18"
    assert "s3cret-pw" not in str([e.proto for e in at.main]) + str(
        [e.proto for e in at.sidebar])
    at.switch_page(f"{P}/job_detail.py").run()
    at.button(key="run_now").click().run()
    assert store.claim_run_requests()[0]["requested_by"] == "ana"


def test_exposed_without_password_refuses(store):
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at = AppTest.from_file(APP, default_timeout=30)
    from streamlit import config as st_config

    old = st_config.get_option("server.address")
    st_config.set_option("server.address", "0.0.0.0")
    try:
        at.run()
    finally:
        st_config.set_option("server.address", old)
    assert at.error and "without a password" in at.error[0].value
    assert not at.metric


HOSTILE = "![pixel](http://evil.example/p.png) [click me](https://evil.example/x) **loud**"


def test_text_from_the_sheet_and_the_store_is_shown_as_text_not_markdown(store):
    from dataclasses import replace

    from sheetops.testing.store_fill import JOBS

    store.publish_job_config({j.job: (replace(j, owner=HOSTILE) if j.job == "fetch-orders"
                                      else j) for j in JOBS})
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE runs SET error_message = ? WHERE id = ?",
                             (HOSTILE, store.ids["failed"]))
    at = _open("job_detail.py")
    at.selectbox(key="detail_job").set_value("fetch-orders").run()
    shown = [x.value for x in at.markdown] + [e.label for e in at.expander]
    owner_line = next(v for v in shown if "owner" in v)
    assert owner_line.endswith(r"owner \!\[pixel\]\(http\:\/\/evil\.example\/p\.png\) "
                               r"\[click me\]\(https\:\/\/evil\.example\/x\) \*\*loud\*\*")
    failed = next(v for v in shown if md_text(store.ids["failed"]) in v)
    assert r"\!\[pixel\]" in failed and "](" not in failed
    assert not any("![" in v or "](" in v for v in shown)


def test_pages_say_whether_a_scheduler_holds_the_lease(store):
    at = _open()
    assert [w.value for w in at.warning if "No scheduler is running" in w.value]
    at = _open("job_detail.py")
    at.selectbox(key="detail_job").set_value("fetch-orders").run()
    md = " ".join(x.value for x in at.markdown)
    assert "none scheduled (no scheduler is running)" in md
    # held for longer than the test: on a loaded machine the page runs below take more
    # than a short lease, and an expired one reads as "no scheduler is running"
    assert store.try_lease("scheduler", "ops-box:4242:abc123", 3600)
    store.set_gauges({"scheduler_heartbeat": time.time()})
    at = _open()
    assert not [w for w in at.warning if "No scheduler" in w.value]
    assert any(r"Scheduler ops\-box\:4242\:abc123 holds the lease · last beat" in c.value
               for c in at.caption)
    at = _open("job_detail.py")
    at.selectbox(key="detail_job").set_value("fetch-orders").run()
    md = " ".join(x.value for x in at.markdown)
    assert "**Next runs:** " in md and "no scheduler is running" not in md
    store.release_lease("scheduler", "ops-box:4242:abc123")
    at = _open()
    assert [w.value for w in at.warning if "No scheduler is running" in w.value]


def test_invalid_jobs_are_listed_with_their_cells_on_jobs_and_config(store):
    from sheetops.config.model import Problem

    store.replace_problems([
        Problem("Jobs", "C5", "every 10 parsecs", "'every 10 parsecs' is not an interval"),
        Problem("Jobs", "B5", "nope", "unknown automation 'nope'"),
        Problem("Jobs", "K3", "x", "unknown column 'x' is ignored", "warning")])
    for page in ("jobs.py", "config.py"):
        at = _open(page)
        assert any("Not scheduled: 1 invalid row(s) on the Jobs tab" in h.value
                   for h in at.subheader)
        invalid = _frame(at, "row", "cell", "problem")
        assert invalid[["row", "cell", "value"]].values.tolist() == [
            [5, "B5", "nope"], [5, "C5", "every 10 parsecs"]]


def test_job_detail_opens_an_enabled_job_and_shows_next_runs_to_the_second(store):
    from sheetops.config.model import JobSpec

    store.publish_job_config([JobSpec("a-off", "http_get", "every 1h", "UTC", enabled=False),
                              JobSpec("b-fast", "http_get", "every 15s", "UTC")])
    assert store.try_lease("scheduler", "ops-box:1:x", 3600)  # outlives the page runs
    at = _open("job_detail.py")
    assert at.selectbox(key="detail_job").value == "b-fast"
    line = next(x.value for x in at.markdown if x.value.startswith("**Next runs:**"))
    seconds = {stamp.split(":")[-1][:2] for stamp in line.split(", ")}
    assert len(seconds) > 1, line  # 15 s apart: the seconds differ


def test_queues_page_without_pipelines_says_so_and_draws_no_chart(store):
    at = _open("queues.py")
    assert any(c.value == "No pipeline has run on this store yet." for c in at.caption)
    assert not at.get("arrow_vega_lite_chart")


PAGES = (None, "jobs.py", "job_detail.py", "runs.py", "errors.py", "queues.py", "config.py",
         "alerts.py")
SHOWN_AS_NONE = {"None", "nan", "NaN", "NaT", "<NA>"}


def test_no_table_shows_none_for_an_empty_value(store):
    """A running run has no end or duration, a waiting request no claim, an undelivered
    alert no delivery time: those cells are empty. Streamlit draws a missing value as
    "None" unless the table has a placeholder, so every table must carry an empty one,
    and no value may be the text of a missing value."""
    with HttpServer() as server:
        add_alerts(store, time.time(), server)
    store.request_run("sync-crm", requested_by="ana")
    missing_seen = set()
    for page in PAGES:
        at = _open(page)
        if page == "job_detail.py":
            at.selectbox(key="detail_job").set_value("sync-crm").run()
        assert at.dataframe, page
        for frame in at.dataframe:
            df = frame.value
            assert frame.proto.placeholder == "", (page, list(df.columns))
            text = df.astype(str).where(df.notna(), "")
            assert not text.isin(SHOWN_AS_NONE).any().any(), (page, list(df.columns))
            missing_seen |= {(page, c) for c in df.columns if df[c].isna().any()}
    assert {("runs.py", "finished_at"), ("runs.py", "duration_s"),
            ("queues.py", "claimed_at"), ("alerts.py", "delivered_at")} <= missing_seen


def test_long_text_is_bounded_and_the_run_id_pinned(store):
    """Messages and problems get a fixed width (the browser test checks that every table
    then stays inside the window); a runs table keeps the run id in view and shows how the
    run ended first."""
    for page in PAGES:
        at = _open(page)
        for frame in at.dataframe:
            config = json.loads(frame.proto.columns or "{}")
            columns = list(frame.value.columns)
            for name in set(columns) & {"error_message", "message", "problem", "detail"}:
                assert config[name]["width"] == TEXT_WIDTH, (page, name)
    runs = next(f for f in _open("runs.py").dataframe if "error_message" in f.value.columns)
    config = json.loads(runs.proto.columns)
    assert config["id"]["pinned"] is True
    assert list(runs.proto.column_order)[:4] == ["id", "job", "status", "started_at"]


def test_errors_page_shows_the_config_errors_and_links_the_config_page(store):
    from sheetops.config.model import Problem

    store.replace_problems([
        Problem("Jobs", "C5", "every 10 parsecs", "'every 10 parsecs' is not an interval"),
        Problem("Alerts", "D3", "speed", "unknown metric 'speed'"),
        Problem("Jobs", "K3", "x", "unknown column 'x' is ignored", "warning")])
    at = _open("errors.py")
    assert any(h.value == "Config errors: 2 (and 1 warning(s))" for h in at.subheader)
    shown = _frame(at, "tab", "cell", "problem")
    assert shown[["tab", "cell", "problem"]].values.tolist() == [
        ["Jobs", "C5", "'every 10 parsecs' is not an interval"],
        ["Alerts", "D3", "unknown metric 'speed'"]]
    links = at.get("page_link")
    assert [link.proto.label for link in links] == ["All config problems on the Config page"]
    assert links[0].proto.page.endswith("config")
    store.replace_problems([])
    at = _open("errors.py")
    assert not any(h.value.startswith("Config errors") for h in at.subheader)
    assert not at.get("page_link")


def test_monitoring_doc_pictures_every_page():
    """docs/monitoring.md has a section and a screenshot (taken by the browser test,
    small enough for the repository) for every page the dashboard's router serves."""
    import re

    router = (ROOT / "sheetops" / "dashboard" / "app.py").read_text(encoding="utf-8")
    pages = re.findall(r'st\.Page\(PAGES / "(\w+)\.py", title="([^"]+)"', router)
    assert len(pages) == len(list((ROOT / P).glob("*.py"))) == 9
    doc = (ROOT / "docs" / "monitoring.md").read_text(encoding="utf-8")
    section = doc.split("\n## The dashboard\n", 1)[1].split("\n## ", 1)[0]
    for stem, title in pages:
        body = section.split(f"\n### {title}\n", 1)
        assert len(body) == 2, f"no section for the {title} page"
        image = f"img/dashboard_{stem}.png"
        assert f"]({image})" in body[1].split("\n### ", 1)[0], image
        png = ROOT / "docs" / image
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 250_000


def test_readme_says_run_now_works_on_loopback_without_a_password(store):
    """What README says about the password is what the code does: on loopback without
    one, Run now is enabled and records the machine's user."""
    at = _open("job_detail.py")
    assert not at.button(key="run_now").disabled
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "Run now needs no password on loopback" in readme
    assert "required for Run now" not in readme
