"""The dashboard's numbers, computed by SQL in sheetops.dashboard.queries, on a store
filled with realistic runs (successes, failures with retries, a timeout, a running run,
errors with tracebacks, config problems, queue gauges, outbox, run requests) and alerts
raised by the real evaluator — on SQLite and on PostgreSQL (a throw-away database per
test; skipped when PostgreSQL is absent, required in CI)."""

from __future__ import annotations

import itertools
import time

import pytest
import sqlalchemy as sa

from sheetops.dashboard import queries as q
from sheetops.store import Batch, Store, reads
from sheetops.store import rollups as ru
from sheetops.testing.http import HttpServer
from sheetops.testing.store_fill import HOUR, JOBS, add_alerts, fill_realistic, make_run

DAY = 86400.0
#: Every test using ``store``/``store_url`` runs on SQLite and PostgreSQL (conftest).
pytestmark = pytest.mark.each_store_backend


@pytest.fixture
def filled(store):
    now = time.time()
    ids = fill_realistic(store, now)
    return store, now, ids


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
    assert ov.alerts_firing.empty  # no rule has been evaluated
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
        "queued": 0, "running": 1, "ok": 14, "failed": 2, "timeout": 1, "dry runs": 0}
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
    store.publish_job_config([JOBS[0]])
    assert q.job_configs(store)["job"].tolist() == ["fetch-orders"]


def test_run_requests_and_pending(filled):
    store, _, _ = filled
    store.request_run("sync-crm", requested_by="ana", dry_run=True)
    assert q.pending_requests(store) == 1
    req = q.run_requests(store).iloc[0]
    assert (req.job, req.requested_by, bool(req.dry_run)) == ("sync-crm", "ana", True)
    store.claim_run_requests()
    assert q.pending_requests(store) == 0


def test_alerts_from_the_evaluator(filled):
    store, now, _ = filled
    assert q.alert_events(store).empty and q.alerts_firing(store).empty
    with HttpServer() as server:
        add_alerts(store, now, server)
        assert server.count("/hook") == 4 and server.count("/broken") == 2
    firing = q.alerts_firing(store)
    assert list(zip(firing["rule"], firing["job"], strict=True)) == [
        ("digest-slow", "send-digest"), ("orders-stuck", "fetch-orders")]
    assert firing["undelivered"].tolist() == [True, False]
    assert firing["last_value"].tolist() == [10.0, 2.0]
    assert str(firing["firing_since"].dt.tz) == "UTC"
    events = q.alert_events(store)
    assert len(events) == 8
    assert events.iloc[0]["kind"] == "delivery_failed" and "500" in events.iloc[0]["error"]
    assert q.alert_event_counts(store) == {"fired": 3, "reminder": 2, "resolved": 1,
                                           "delivery_failed": 2}
    resolved = q.alert_events(store, kinds=["resolved"])
    assert resolved["rule"].tolist() == ["orders-failing"]
    assert resolved["delivered_at"].notna().all()
    assert set(q.alert_events(store, jobs=["send-digest"])["rule"]) == {"digest-slow"}
    assert "message" not in events.columns  # bodies stay on the channel
    ov = q.overview(store, 24 * HOUR, now=now)
    assert ov.alerts_firing["rule"].tolist() == ["digest-slow", "orders-stuck"]


def test_problems_and_events(filled):
    store, _, _ = filled
    p = q.problems(store)
    assert p["severity"].tolist() == ["error", "warning"] and p.iloc[0]["cell"] == "C5"
    ev = q.config_events(store)
    assert set(ev["kind"]) == {"refresh", "changed"}


def test_empty_store(store):
    for window in (24 * HOUR, 30 * DAY):
        ov = q.overview(store, window)
        assert ov.totals.runs == 0 and ov.totals.p50_s is None
        assert ov.totals.success_rate is None
        assert ov.per_job.empty and ov.outbox.depth == 0 and ov.queues.empty
        assert ov.over_time["runs"].sum() == 0
    assert q.jobs_table(store, 3600).empty


def test_parse_window():
    assert q.parse_window("24h") == 86400 and q.parse_window("7d") == 7 * 86400
    with pytest.raises(ValueError):
        q.parse_window("soon")


def test_indexes_are_used(filled):
    store, now, _ = filled
    if store.engine.dialect.name != "sqlite":
        pytest.skip("SQLite query plans")
    with store.engine.connect() as conn:
        plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT job, count(*), sum(records_in) FROM runs "
            f"WHERE started_at >= {now - 86400} GROUP BY job"))
    assert "COVERING INDEX ix_runs_dash_job_started" in plan


def test_large_window_percentiles_match(filled):
    """The index-walking path for large windows gives the same nearest ranks."""
    store, now, _ = filled
    small = q.job_summary(store, 24 * HOUR, now=now)
    small_total = q.total_percentiles(store, 24 * HOUR, now=now)
    large = q.job_summary(store, 24 * HOUR, now=now, large_window_rows=1)
    assert large[["job", "p50_s", "p95_s"]].equals(small[["job", "p50_s", "p95_s"]])
    assert q.total_percentiles(store, 24 * HOUR, now=now, large_window_rows=1) == small_total


# -- long windows: rollups ---------------------------------------------------------------
def test_long_windows_read_rollups_with_exact_counts(filled):
    store, now, _ = filled
    assert q.overview(store, 7 * DAY, now=now).approximate
    assert ru.rollup_refreshed_at(store) is None  # the dashboard never refreshes them
    store.rollups.refresh(now)  # the engine does
    for window in (7 * DAY, 30 * DAY):
        assert q.uses_rollups(window)
        ov = q.overview(store, window, now=now)
        assert ov.approximate
        exact = q.overview(store, window, now=now, exact_max_window_s=1e12)
        assert not exact.approximate
        cols = ["job", "runs", "ok", "failed", "timeout", "running", "records_in",
                "records_out", "records_failed"]
        assert ov.per_job[cols].equals(exact.per_job[cols])
        assert ov.per_job["avg_s"].round(9).equals(exact.per_job["avg_s"].round(9))
        assert ov.per_job["last_start"].tolist() == pytest.approx(
            exact.per_job["last_start"].tolist())
        t, e = ov.totals, exact.totals
        assert (t.runs, t.ok, t.failed, t.timeout, t.running) == (23, 19, 2, 1, 1)
        assert (t.runs, t.ok, t.failed, t.timeout) == (e.runs, e.ok, e.failed, e.timeout)
        # percentiles: within the bucket width of the exact nearest rank
        for col in ("p50_s", "p95_s"):
            for a, b in zip(ov.per_job[col], exact.per_job[col], strict=True):
                assert a == pytest.approx(b, rel=0.13)
        assert t.p50_s == pytest.approx(e.p50_s, rel=0.13)
        assert t.p95_s == pytest.approx(e.p95_s, rel=0.13)
        assert ov.per_job.set_index("job").loc["fetch-orders", "p95_s"] == pytest.approx(
            600.0, rel=0.13)
        assert ov.over_time["runs"].sum() == exact.over_time["runs"].sum() == 23
        assert ov.over_time["failed"].sum() == 3
        assert ov.over_time["time"].tolist() == exact.over_time["time"].tolist()
        assert ov.over_time["runs"].tolist() == exact.over_time["runs"].tolist()
        assert ov.over_time["max_s"].fillna(-1).tolist() == exact.over_time[
            "max_s"].fillna(-1).tolist()
        assert q.totals(store, window, now=now) == ov.totals
        only = q.job_summary(store, window, now=now, jobs=["send-digest"])
        assert only["job"].tolist() == ["send-digest"] and only["runs"].tolist() == [4]


def test_segments_cover_the_window_once():
    w = q.Window(1_000_000.5, 1_000_000.5 + 30 * DAY)
    segs = reads._segments(w, refreshed_at=w.until - 10)
    assert [k for k, _, _ in segs] == ["raw", "hourly", "daily", "hourly", "raw"]
    assert segs[0][1] == w.since and segs[-1][2] == w.until
    assert all(a[2] == b[1] for a, b in itertools.pairwise(segs))
    # stale rollups: everything after the last refresh is read from runs
    stale = reads._segments(w, refreshed_at=w.since + 2 * DAY + 100)
    assert stale[-1][0] == "raw" and stale[-1][1] == (w.since + 2 * DAY + 100) // HOUR * HOUR
    assert reads._segments(w, refreshed_at=0) == [("raw", w.since, w.until)]


def test_histogram_buckets():
    for d in (0.0, 0.005, 0.01, 0.5, 1.0, 4.5, 600.0, 3600.0, 1e6):
        i = ru.bucket_of(d)
        assert 0 <= i < ru.HIST_BUCKETS
        if 0.02 < d < 40_000:
            assert ru.bucket_value(i) == pytest.approx(d, rel=0.13)
    hist = [0] * ru.HIST_BUCKETS
    for d in (1, 2, 3, 4, 5, 6, 7, 8, 4.5, 600):
        hist[ru.bucket_of(d)] += 1
    p50, p95 = (q.hist_percentiles(hist, [1.0], [600.0], p)[0] for p in (50, 95))
    assert p50 == pytest.approx(4.5, rel=0.13) and p95 == pytest.approx(600, rel=0.13)
    # clamped to the real min and max
    assert q.hist_percentiles(hist, [1.0], [500.0], 95)[0] == 500.0
    assert q.hist_percentiles(hist, [5.0], [600.0], 1)[0] == 5.0


def test_refresh_is_incremental_and_follows_status_changes(store):
    now = 1_800_000_000.0  # a fixed clock; runs 40 h .. 1 h ago
    h0 = now - 40 * HOUR
    first = [make_run("a", h0 + i * HOUR, "ok", 2.0) for i in range(39)]
    live = make_run("a", h0 + 5 * HOUR + 60, "running", None)
    store.record(Batch(new_runs=[*first, live]))
    assert ru.refresh_rollups(store, now)["full"]
    w = q.Window(now - 7 * DAY, now)

    def summary():
        return q.rollup_summary(store, w).per_job.set_index("job").loc["a"]

    assert (summary().runs, summary().running) == (40, 1)
    # the long run finishes 35 h after it started; new runs arrive
    store.record(Batch(run_updates=[{"id": live["id"], "status": "failed",
                                     "finished_at": now + 10, "duration_s": 30.0}],
                       new_runs=[make_run("a", now + 20, "ok", 1.0)]))
    done = ru.refresh_rollups(store, now + 60)
    assert not done["full"] and done["reopened_hours"] == 1
    w = q.Window(now + 60 - 7 * DAY, now + 60)
    s = summary()
    assert (s.runs, s.running, s.failed, s.ok) == (41, 0, 1, 40)
    with store.engine.connect() as conn:
        daily = conn.execute(sa.select(sa.func.sum(ru.runs_daily.c.runs))).scalar()
        hourly = conn.execute(sa.select(sa.func.sum(ru.runs_hourly.c.runs))).scalar()
    assert daily == hourly == 41
    # pruned runs leave the rollups at the next refresh
    store.prune(now - 20 * HOUR)
    assert ru.refresh_rollups(store, now + 120)["pruned_hours"] > 0
    assert summary().runs == 20
    with store.engine.connect() as conn:
        daily = conn.execute(sa.select(sa.func.sum(ru.runs_daily.c.runs))).scalar()
    assert daily == 20


# -- the dashboard only reads -------------------------------------------------------------
def test_overview_renders_on_a_read_only_store(tmp_path):
    """No DDL, no ANALYZE, no rollup refresh on any query path: every Overview query runs
    on a SQLite store opened read-only (``mode=ro``)."""
    path = tmp_path / "ro.db"
    writer = Store(f"sqlite:///{path}")
    now = time.time()
    fill_realistic(writer, now)
    writer.dispose()
    store = q.open_store(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        for window in (HOUR, 24 * HOUR, 7 * DAY, 30 * DAY):
            ov = q.overview(store, window, now=now)
            assert ov.running == 1
        assert ov.totals.runs == 23 and ov.totals.failed == 2
        assert len(q.jobs_table(store, 24 * HOUR, now=now)) == 3
        with pytest.raises(sa.exc.OperationalError, match="readonly"):
            store.rollups.refresh(now)  # the engine's job, and it cannot here
    finally:
        store.dispose()


# -- one rule for dry runs --------------------------------------------------------------
def test_page_figures_and_alert_metrics_agree_with_dry_runs(tmp_path):
    """Dry runs are left out of rates and percentiles on the pages and in the alerts
    alike, and counted apart: the Overview's failure rate and p95 for a job are the values
    its alert rules fire on."""
    from sheetops.alerts import AlertEvaluator
    from sheetops.config.model import AlertSpec, JobSpec, SheetSettings, Snapshot

    store = Store(f"sqlite:///{tmp_path / 'dry.db'}")
    now = time.time()
    runs = [make_run("sync", now - 3000 + i * 60, status, duration)
            for i, (status, duration) in enumerate(
                [("failed", 2.0), ("failed", 3.0), ("failed", 4.0), ("ok", 1.0)])]
    for i in range(6):  # dry runs: all ok, very slow
        dry = make_run("sync", now - 2000 + i * 60, "ok", 500.0 + i)
        dry["dry_run"] = True
        runs.append(dry)
    store.record(Batch(new_runs=runs))
    rules = (AlertSpec("failing", "sync", "failure_rate", 0.5, 3600, "webhook:x", row=2),
             AlertSpec("slow", "sync", "duration_p95_s", 3.0, 3600, "webhook:x", row=3))
    snap = Snapshot(jobs={"sync": JobSpec("sync", "http_get", "every 1m", "UTC")},
                    alerts=rules, settings=SheetSettings())
    fired = {e.rule: e.value for e in AlertEvaluator(store, lambda: snap, lambda m: None)
             .evaluate(now) if e.kind == "fired"}
    page = q.overview(store, HOUR, now=now).per_job.set_index("job").loc["sync"]
    assert fired == {"failing": 0.75, "slow": 4.0}
    assert page["failure_rate"] == fired["failing"] and page["p95_s"] == fired["slow"]
    assert (page["runs"], page["ok"], page["failed"], page["dry_runs"]) == (4, 1, 3, 6)
    assert q.status_counts(store, HOUR, now=now)["dry runs"] == 6
    store.rollups.refresh(now)
    week = q.job_summary(store, 7 * DAY, now=now).set_index("job").loc["sync"]
    assert (week["runs"], week["failure_rate"], week["dry_runs"]) == (4, 0.75, 6)
    assert week["p95_s"] == pytest.approx(4.0, rel=0.13)
    store.dispose()
