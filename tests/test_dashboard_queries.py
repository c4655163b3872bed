"""The dashboard's numbers, computed by SQL in sheetops.dashboard.queries, on a store
filled with realistic runs (successes, failures with retries, a timeout, a running run,
errors with tracebacks, config problems, queue gauges, outbox, run requests)."""

from __future__ import annotations

import itertools
import time
import uuid

import pytest
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text

from sheetops.config.model import JobSpec, Problem
from sheetops.dashboard import queries as q
from sheetops.store import Batch, Store
from sheetops.store.rollups import publish_job_config

HOUR = 3600.0
TRACEBACK = ('Traceback (most recent call last):\n  File "automations/http_get.py", line 42,'
             ' in run\n    resp.raise_for_status()\nrequests.HTTPError: 503 Server Error')

JOBS = [JobSpec("fetch-orders", "http_get", "every 10m", "UTC", owner="ana"),
        JobSpec("send-digest", "send_email", "0 7 * * 1-5", "Europe/Paris"),
        JobSpec("sync-crm", "http_get", "@hourly", "UTC", enabled=False)]


def _run(job: str, start: float, status: str, duration: float | None, *, attempts: int = 1,
         records: tuple[int, int, int] = (10, 10, 0), error: tuple[str, str] = ("", ""),
         trigger: str = "schedule") -> dict:
    return {"id": f"{job}-{uuid.uuid4().hex[:12]}", "job": job, "trigger": trigger,
            "scheduled_for": start, "started_at": start,
            "finished_at": None if duration is None else start + duration, "status": status,
            "attempts": attempts, "records_in": records[0], "records_out": records[1],
            "records_failed": records[2], "duration_s": duration, "result": "{}",
            "error_type": error[0], "error_message": error[1], "dry_run": False,
            "requested_by": ""}


def fill_realistic(store: Store, now: float) -> dict:
    """Fill ``store`` the way the scheduler would; returns handy ids."""
    runs, attempts, errors = [], [], []
    # fetch-orders: 8 ok (1..8 s), 1 failed after 3 attempts, 1 timeout, in the last 24 h
    for i, d in enumerate([1, 2, 3, 4, 5, 6, 7, 8]):
        runs.append(_run("fetch-orders", now - 20 * HOUR + i * HOUR, "ok", float(d)))
    failed = _run("fetch-orders", now - 3 * HOUR, "failed", 4.5, attempts=3,
                  records=(10, 7, 3), error=("HTTPError", "503 Server Error"))
    runs.append(failed)
    for a in (1, 2, 3):
        attempts.append({"run_id": failed["id"], "attempt": a, "job": "fetch-orders",
                         "started_at": now - 3 * HOUR + a, "finished_at": now - 3 * HOUR + a + 1,
                         "status": "failed", "error_type": "HTTPError",
                         "error_message": "503 Server Error", "traceback": TRACEBACK})
        errors.append({"time": now - 3 * HOUR + a + 1, "job": "fetch-orders",
                       "run_id": failed["id"], "stage": "run", "attempt": a,
                       "error_type": "HTTPError", "message": "503 Server Error",
                       "record_key": "", "traceback": TRACEBACK})
    timeout = _run("fetch-orders", now - 2 * HOUR, "timeout", 600.0, records=(0, 0, 0),
                   error=("Timeout", "run exceeded timeout_s=600"))
    runs.append(timeout)
    errors.append({"time": now - 2 * HOUR + 600, "job": "fetch-orders", "run_id": timeout["id"],
                   "stage": "run", "attempt": 1, "error_type": "Timeout",
                   "message": "run exceeded timeout_s=600", "record_key": "", "traceback": ""})
    # five old runs, outside a 24 h window
    for i in range(5):
        runs.append(_run("fetch-orders", now - 72 * HOUR - i * HOUR, "ok", 1.0))
    # send-digest: 4 ok
    for i, d in enumerate([2, 2, 3, 10]):
        runs.append(_run("send-digest", now - 10 * HOUR + i * HOUR, "ok", float(d),
                         records=(5, 5, 0)))
    # sync-crm: 2 ok, 1 failed on one record, 1 running now
    runs.append(_run("sync-crm", now - 6 * HOUR, "ok", 5.0))
    runs.append(_run("sync-crm", now - 5 * HOUR, "ok", 7.0))
    crm_failed = _run("sync-crm", now - 4 * HOUR, "failed", 1.5, records=(4, 3, 1),
                      error=("ValueError", "bad e-mail in row 12"), trigger="manual")
    runs.append(crm_failed)
    errors.append({"time": now - 4 * HOUR + 1, "job": "sync-crm", "run_id": crm_failed["id"],
                   "stage": "enrich", "attempt": 1, "error_type": "ValueError",
                   "message": "bad e-mail in row 12", "record_key": "row 12",
                   "traceback": "Traceback (most recent call last):\nValueError: bad e-mail"})
    running = _run("sync-crm", now - 30, "running", None)
    runs.append(running)
    states = {
        "fetch-orders": {"last_status": "timeout", "last_start": now - 2 * HOUR,
                         "last_end": now - 2 * HOUR + 600, "last_duration_s": 600.0,
                         "consecutive_failures": 2, "last_success_at": now - 13 * HOUR},
        "send-digest": {"last_status": "ok", "last_start": now - 7 * HOUR,
                        "last_end": now - 7 * HOUR + 10, "last_duration_s": 10.0,
                        "consecutive_failures": 0, "last_success_at": now - 7 * HOUR + 10},
        "sync-crm": {"last_status": "running", "last_start": now - 30, "last_end": None,
                     "last_duration_s": 1.5, "consecutive_failures": 1,
                     "last_success_at": now - 5 * HOUR + 7},
    }
    store.record(Batch(new_runs=runs, attempts=attempts, errors=errors, job_states=states,
                       outbox=[("Runs", ""), ("Status", "fetch-orders"), ("Errors", "")]))
    store.replace_problems([
        Problem("Jobs", "C5", "every 10 parsecs", "'every 10 parsecs' is not an interval"),
        Problem("Jobs", "K3", "x", "unknown column 'x' is ignored", "warning")])
    store.add_config_events([("refresh", "", "3 jobs"), ("changed", "fetch-orders",
                                                         "schedule every 5m -> every 10m")])
    store.set_gauges({"queue_depth:fetch": 7, "queue_depth:enrich": 2, "running": 1,
                      "last_refresh_at": now - 30, "last_refresh_ok": 1})
    publish_job_config(store, {j.job: j for j in JOBS})
    return {"failed": failed["id"], "timeout": timeout["id"], "crm_failed": crm_failed["id"],
            "running": running["id"]}


def add_alert_table(store: Store, now: float) -> None:
    """A stand-in for the alerts feature's ``alert_events`` table, with one firing
    incident and one resolved one."""
    table = Table("alert_events", MetaData(),
                  Column("id", Integer, primary_key=True, autoincrement=True),
                  Column("time", Float), Column("name", String(64)), Column("job", String(64)),
                  Column("metric", String(32)), Column("state", String(16)),
                  Column("value", Float), Column("message", Text))
    table.create(store.engine)
    with store.engine.begin() as conn:
        conn.execute(table.insert(), [
            {"time": now - 7200, "name": "crm-fail", "job": "sync-crm", "metric": "failure_rate",
             "state": "firing", "value": 0.5, "message": "failure rate 50% > 20%"},
            {"time": now - 3600, "name": "crm-fail", "job": "sync-crm", "metric": "failure_rate",
             "state": "resolved", "value": 0.0, "message": "resolved"},
            {"time": now - 600, "name": "orders-stuck", "job": "fetch-orders",
             "metric": "consecutive_failures", "state": "firing", "value": 2,
             "message": "2 consecutive failures >= 2"}])


@pytest.fixture
def filled(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/store.db")
    now = time.time()
    ids = fill_realistic(store, now)
    yield store, now, ids
    store.dispose()


def test_job_summary_counts_rates_and_percentiles(filled):
    store, now, _ = filled
    df = q.job_summary(store, 24 * HOUR, now=now).set_index("job")
    f = df.loc["fetch-orders"]
    assert (f.runs, f.ok, f.failed, f.timeout, f.running) == (10, 8, 1, 1, 0)
    assert f.failure_rate == pytest.approx(0.2)
    assert f.success_rate == pytest.approx(0.8)
    # nearest rank over [1..8, 4.5, 600]: p50 = 5th = 4.5, p95 = 10th = 600
    assert (f.p50_s, f.p95_s) == (4.5, 600.0)
    assert (f.records_in, f.records_out, f.records_failed) == (90, 87, 3)
    c = df.loc["sync-crm"]
    assert (c.runs, c.ok, c.failed, c.running) == (4, 2, 1, 1)
    assert c.failure_rate == pytest.approx(1 / 3)
    d = df.loc["send-digest"]
    assert (d.p50_s, d.p95_s, d.failure_rate) == (2.0, 10.0, 0.0)


def test_window_excludes_old_runs_and_job_filter(filled):
    store, now, _ = filled
    assert q.job_summary(store, 7 * 24 * HOUR, now=now).set_index("job").loc[
        "fetch-orders", "runs"] == 15
    df = q.job_summary(store, HOUR, now=now)
    assert df["runs"].sum() == 1  # only the running sync-crm run
    only = q.job_summary(store, 24 * HOUR, now=now, jobs=["send-digest"])
    assert only["job"].tolist() == ["send-digest"]


def test_overview_totals(filled):
    store, now, _ = filled
    ov = q.overview(store, 24 * HOUR, now=now)
    t = ov.totals
    assert (t.runs, t.ok, t.failed, t.timeout, t.running) == (18, 14, 2, 1, 1)
    assert t.success_rate == pytest.approx(14 / 17)
    assert t.failure_rate == pytest.approx(3 / 17)
    assert (t.p50_s, t.p95_s) == (4.5, 600.0)
    assert ov.running == 1
    assert ov.queues.set_index("stage")["depth"].to_dict() == {"enrich": 2, "fetch": 7}
    assert ov.outbox.depth == 4 and ov.outbox.oldest_age_s >= 0
    assert ov.outbox.by_tab == {"Runs": 1, "Status": 1, "Errors": 1, "Validation": 1}
    assert (ov.config.errors, ov.config.warnings, ov.config.jobs_configured) == (1, 1, 3)
    assert ov.config.last_refresh_ok is True
    assert ov.config.last_refresh_at == pytest.approx(now - 30)
    assert ov.alerts_firing.empty  # the alerts table does not exist yet
    assert ov.over_time["runs"].sum() == 18
    assert ov.over_time["failed"].sum() == 3
    assert set(ov.timings) >= {"job_summary", "total_percentiles", "runs_over_time"}
    # the SQL totals agree with the sum of the per-job rows
    assert q.totals(store, 24 * HOUR, now=now) == t


def test_runs_over_time_buckets(filled):
    store, now, _ = filled
    df = q.runs_over_time(store, 24 * HOUR, now=now, bucket_s=3600)
    assert len(df) in (24, 25)
    assert df["runs"].sum() == 18 and (df["runs"] >= df["ok"] + df["failed"]).all()
    assert str(df["time"].dt.tz) == "UTC"
    assert q.bucket_seconds(24 * HOUR) == 1800 and q.bucket_seconds(30 * 86400) == 86400


def test_runs_errors_attempts_lists(filled):
    store, now, ids = filled
    failed = q.runs_list(store, 24 * HOUR, now=now, statuses=["failed", "timeout"])
    assert set(failed["id"]) == {ids["failed"], ids["timeout"], ids["crm_failed"]}
    assert q.status_counts(store, 24 * HOUR, now=now) == {
        "queued": 0, "running": 1, "ok": 14, "failed": 2, "timeout": 1}
    att = q.attempts_of(store, [ids["failed"]])
    assert att["attempt"].tolist() == [1, 2, 3]
    assert "HTTPError" in att.iloc[0]["traceback"]
    errs = q.errors_list(store, 24 * HOUR, now=now, jobs=["sync-crm"])
    assert errs.iloc[0]["record_key"] == "row 12" and errs.iloc[0]["stage"] == "enrich"
    counts = q.error_counts(store, 24 * HOUR, now=now)
    top = counts.iloc[0]
    assert (top.job, top.error_type, top.errors) == ("fetch-orders", "HTTPError", 3)
    assert counts["errors"].sum() == 5


def test_jobs_table_and_schedule(filled):
    store, now, _ = filled
    table = q.jobs_table(store, 24 * HOUR, now=now).set_index("job")
    assert table.loc["fetch-orders", "schedule_words"] == "every 10 minutes"
    assert table.loc["fetch-orders", "consecutive_failures"] == 2
    assert not table.loc["sync-crm", "enabled"]
    nxt = q.next_runs("every 10m", "UTC", now=now)
    assert len(nxt) == 3 and all(b - a == q.pd.Timedelta(minutes=10).to_pytimedelta()
                                 for a, b in itertools.pairwise(nxt))
    assert q.next_runs("manual", "UTC") == [] and q.next_runs("bad", "UTC") == []
    paris = q.next_runs("0 7 * * 1-5", "Europe/Paris", now=now)
    assert all(d.hour == 7 and d.weekday() < 5 for d in paris)
    # publishing again replaces the set
    publish_job_config(store, [JOBS[0]])
    assert q.job_configs(store)["job"].tolist() == ["fetch-orders"]


def test_run_requests_and_pending(filled):
    store, _, _ = filled
    store.request_run("sync-crm", requested_by="ana", dry_run=True)
    assert q.pending_requests(store) == 1
    req = q.run_requests(store).iloc[0]
    assert (req.job, req.requested_by, bool(req.dry_run)) == ("sync-crm", "ana", True)
    store.claim_run_requests()
    assert q.pending_requests(store) == 0


def test_alerts_provisional(filled):
    store, now, _ = filled
    assert q.alert_events(store).empty
    add_alert_table(store, now)
    events = q.alert_events(store)
    assert len(events) == 3 and events.iloc[0]["name"] == "orders-stuck"
    firing = q.alerts_firing(events)
    assert firing["name"].tolist() == ["orders-stuck"]


def test_problems_and_events(filled):
    store, _, _ = filled
    p = q.problems(store)
    assert p["severity"].tolist() == ["error", "warning"] and p.iloc[0]["cell"] == "C5"
    ev = q.config_events(store)
    assert set(ev["kind"]) == {"refresh", "changed"}


def test_empty_store(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/empty.db")
    ov = q.overview(store, 24 * HOUR)
    assert ov.totals.runs == 0 and ov.totals.p50_s is None and ov.totals.success_rate is None
    assert ov.per_job.empty and ov.outbox.depth == 0 and ov.queues.empty
    assert q.jobs_table(store, 3600).empty


def test_parse_window():
    assert q.parse_window("24h") == 86400 and q.parse_window("7d") == 7 * 86400
    with pytest.raises(ValueError):
        q.parse_window("soon")


def test_indexes_are_used(filled):
    store, now, _ = filled
    with store.engine.connect() as conn:
        plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT job, count(*), sum(records_in) FROM runs "
            f"WHERE started_at >= {now - 86400} GROUP BY job"))
    assert "COVERING INDEX ix_runs_dash_job_started" in plan


def test_large_window_percentiles_match(filled, monkeypatch):
    """The index-walking path for large windows gives the same nearest ranks."""
    store, now, _ = filled
    small = q.job_summary(store, 24 * HOUR, now=now)
    small_total = q.total_percentiles(store, 24 * HOUR, now=now)
    monkeypatch.setattr(q, "LARGE_WINDOW_ROWS", 1)
    large = q.job_summary(store, 24 * HOUR, now=now)
    assert large[["job", "p50_s", "p95_s"]].equals(small[["job", "p50_s", "p95_s"]])
    assert q.total_percentiles(store, 24 * HOUR, now=now) == small_total
