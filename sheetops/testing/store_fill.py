"""Fill a store the way the scheduler and the alert evaluator would, for dashboard tests.

:func:`fill_realistic` records runs (successes, failures with retries, a timeout, a
running run), attempts and errors with tracebacks, job states, config problems and
events, queue gauges, outbox rows and the published job configuration.
:func:`add_alerts` then runs the real :class:`~sheetops.alerts.AlertEvaluator` twice
over that store with delivery to a loopback webhook receiver
(:class:`~sheetops.testing.http.HttpServer`), leaving fired, reminder, resolved and
delivery_failed events and two alerts firing. :func:`add_pipelines` runs two real
pipelines on the store: one finished with dead letters, one stopped mid-pass with its
sink's queue full (the Queues page's bottleneck).

Shared by the dashboard's query, page and browser tests and usable on any backend.
"""

from __future__ import annotations

import uuid
from typing import Any

from sheetops.config.model import AlertSpec, JobSpec, Problem, SheetSettings, Snapshot
from sheetops.store import Batch, Store

HOUR = 3600.0
TRACEBACK = ('Traceback (most recent call last):\n  File "automations/http_get.py", line 42,'
             ' in run\n    resp.raise_for_status()\nrequests.HTTPError: 503 Server Error')

JOBS = [JobSpec("fetch-orders", "http_get", "every 10m", "UTC", owner="ana"),
        JobSpec("send-digest", "send_email", "0 7 * * 1-5", "Europe/Paris"),
        JobSpec("sync-crm", "http_get", "@hourly", "UTC", enabled=False)]


def make_run(job: str, start: float, status: str, duration: float | None, *,
             attempts: int = 1, records: tuple[int, int, int] = (10, 10, 0),
             error: tuple[str, str] = ("", ""), trigger: str = "schedule") -> dict[str, Any]:
    """A ``runs`` row as the runner records it."""
    return {"id": f"{job}-{uuid.uuid4().hex[:12]}", "job": job, "trigger": trigger,
            "scheduled_for": start, "started_at": start,
            "finished_at": None if duration is None else start + duration, "status": status,
            "attempts": attempts, "records_in": records[0], "records_out": records[1],
            "records_failed": records[2], "duration_s": duration, "result": "{}",
            "error_type": error[0], "error_message": error[1], "dry_run": False,
            "requested_by": ""}


def fill_realistic(store: Store, now: float) -> dict[str, str]:
    """Fill ``store`` the way the scheduler would; returns handy run ids
    (``failed``, ``timeout``, ``crm_failed``, ``running``).

    Over the last 24 h: fetch-orders 8 ok (1..8 s), 1 failed after 3 attempts (4.5 s),
    1 timeout (600 s); send-digest 4 ok (2, 2, 3, 10 s); sync-crm 2 ok, 1 failed on one
    record, 1 running. Five more fetch-orders runs 72..76 h ago."""
    runs, attempts, errors = [], [], []
    for i, d in enumerate([1, 2, 3, 4, 5, 6, 7, 8]):
        runs.append(make_run("fetch-orders", now - 20 * HOUR + i * HOUR, "ok", float(d)))
    failed = make_run("fetch-orders", now - 3 * HOUR, "failed", 4.5, attempts=3,
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
    timeout = make_run("fetch-orders", now - 2 * HOUR, "timeout", 600.0, records=(0, 0, 0),
                       error=("Timeout", "run exceeded timeout_s=600"))
    runs.append(timeout)
    errors.append({"time": now - 2 * HOUR + 600, "job": "fetch-orders", "run_id": timeout["id"],
                   "stage": "run", "attempt": 1, "error_type": "Timeout",
                   "message": "run exceeded timeout_s=600", "record_key": "", "traceback": ""})
    for i in range(5):  # outside a 24 h window
        runs.append(make_run("fetch-orders", now - 72 * HOUR - i * HOUR, "ok", 1.0))
    for i, d in enumerate([2, 2, 3, 10]):
        runs.append(make_run("send-digest", now - 10 * HOUR + i * HOUR, "ok", float(d),
                             records=(5, 5, 0)))
    runs.append(make_run("sync-crm", now - 6 * HOUR, "ok", 5.0))
    runs.append(make_run("sync-crm", now - 5 * HOUR, "ok", 7.0))
    crm_failed = make_run("sync-crm", now - 4 * HOUR, "failed", 1.5, records=(4, 3, 1),
                          error=("ValueError", "bad e-mail in row 12"), trigger="manual")
    runs.append(crm_failed)
    errors.append({"time": now - 4 * HOUR + 1, "job": "sync-crm", "run_id": crm_failed["id"],
                   "stage": "enrich", "attempt": 1, "error_type": "ValueError",
                   "message": "bad e-mail in row 12", "record_key": "row 12",
                   "traceback": "Traceback (most recent call last):\nValueError: bad e-mail"})
    running = make_run("sync-crm", now - 30, "running", None)
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
    store.publish_job_config({j.job: j for j in JOBS})
    return {"failed": failed["id"], "timeout": timeout["id"], "crm_failed": crm_failed["id"],
            "running": running["id"]}


def alert_rules(orders_failing_threshold: float = 0.1) -> tuple[AlertSpec, ...]:
    """The Alerts tab :func:`add_alerts` evaluates (rows 2-4)."""
    return (
        AlertSpec("orders-stuck", "fetch-orders", "consecutive_failures", 2, 0,
                  "webhook:ops", row=2),
        AlertSpec("orders-failing", "fetch-orders", "failure_rate",
                  orders_failing_threshold, 86400, "webhook:ops", row=3),
        AlertSpec("digest-slow", "send-digest", "duration_p95_s", 5, 86400,
                  "webhook:broken", row=4),
    )


def add_alerts(store: Store, now: float, server: Any) -> dict[str, Any]:
    """Evaluate real alert rules over a store filled by :func:`fill_realistic`,
    delivering to ``server`` (a running :class:`~sheetops.testing.http.HttpServer`):
    ``/hook`` accepts, ``/broken`` answers 500.

    - 20 minutes ago: orders-stuck (2 consecutive failures >= 2), orders-failing
      (failure rate 20% >= 10%) and digest-slow (p95 10 s >= 5 s) fire; digest-slow's
      message cannot be delivered (delivery_failed).
    - now, after the failure-rate threshold was raised to 50% on the sheet:
      orders-failing resolves; orders-stuck and digest-slow send a reminder (reminder
      interval 10 minutes), digest-slow's fails again.

    Leaves 2 alerts firing (orders-stuck, digest-slow) and 8 events; returns
    ``{"events": [...AlertEvent], "firing": [(rule, job), ...]}``."""
    from sheetops.alerts import AlertEvaluator, ChannelDelivery, DeliveryPolicy

    server.json("/hook", {"ok": True}, method="POST")
    server.json("/broken", {"error": "down"}, status=500, method="POST")
    environ = {"SHEETOPS_WEBHOOK_OPS": server.url("/hook"),
               "SHEETOPS_WEBHOOK_BROKEN": server.url("/broken")}
    jobs = {j.job: j for j in JOBS}
    box = {"snap": Snapshot(jobs=jobs, alerts=alert_rules(0.1),
                            settings=SheetSettings(alert_interval_s=60, alert_reminder_s=600))}
    delivery = ChannelDelivery(DeliveryPolicy(attempts=1, backoff_initial_s=0.01,
                                              backoff_max_s=0.01, timeout_s=5),
                               environ=environ)
    evaluator = AlertEvaluator(store, lambda: box["snap"], delivery)
    events = list(evaluator.evaluate(now - 1200))
    box["snap"] = Snapshot(jobs=jobs, alerts=alert_rules(0.5), settings=box["snap"].settings)
    events += evaluator.evaluate(now)
    return {"events": events, "firing": [("digest-slow", "send-digest"),
                                         ("orders-stuck", "fetch-orders")]}


def add_pipelines(store: Store, timeout_s: float = 60.0) -> None:
    """Run two real pipelines on ``store`` (a file or PostgreSQL store):
    ``contacts-sync`` (validate → enrich → deliver, 500 records, 3 of them dead
    letters) to its end, and ``orders-export`` (validate → transform → upload) stopped
    mid-pass while its upload stage is held, so its queue is the deepest."""
    import json
    import threading
    import time

    from sheetops.pipelines import pipeline
    from sheetops.pipelines.engine import PipelineRun
    from sheetops.store import pipeline_reads
    from sheetops.store.queue_sql import Queues

    bad = {17, 230, 411}
    contacts = pipeline("contacts-sync", key="id", source=[
        {"id": i, "email": f"user{i}@example.org" if i not in bad else "not-an-address"}
        for i in range(500)])

    @contacts.stage(batch_size=50, retries=0)
    def validate(records):
        for record in records:
            if "@" not in record["email"]:
                raise ValueError(f"contact {record['id']}: email address is not valid")
        return records

    @contacts.stage(batch_size=50)
    def enrich(records):
        return [{**r, "domain": r["email"].split("@")[1]} for r in records]

    @contacts.sink(batch_size=25)
    def deliver(records):
        return None

    started = time.time()
    report = contacts.run(store.engine, job="contacts-sync")
    run = make_run("contacts-sync", started, "ok", report.seconds,
                   records=(report.records_read, report.records_out, report.dead))
    run["result"] = json.dumps(report.result(), sort_keys=True)  # as the recorder does
    store.record(Batch(new_runs=[run], job_states={"contacts-sync": {
        "last_run_id": run["id"], "last_status": "ok", "last_start": started,
        "last_end": started + report.seconds, "records_in": report.records_read,
        "records_out": report.records_out, "records_failed": report.dead}}))

    gate = threading.Event()
    orders = pipeline("orders-export", key="id",
                      source=[{"id": i, "total": i * 3} for i in range(2000)])

    @orders.stage(batch_size=100)
    def validate_order(records):
        return records

    @orders.stage(batch_size=100)
    def transform(records):
        return [{**r, "cents": r["total"] * 100} for r in records]

    @orders.sink(batch_size=20)
    def upload(records):
        gate.wait(timeout_s)

    queues = Queues(store.engine)
    run = PipelineRun(orders, queues, job="orders-export", run_id="orders-export-demo")
    thread = threading.Thread(target=run.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    order = {"orders-export": orders.stage_names()}
    while time.monotonic() < deadline:
        found = pipeline_reads.pipeline_stats(store, order=order, jobs=["orders-export"])
        if found and len(found[0].stages) == 3 and found[0].stages[2].depth >= 10:
            break
        time.sleep(0.05)
    run.stop.set()
    gate.set()
    thread.join(timeout_s)
