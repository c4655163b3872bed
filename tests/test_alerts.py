"""Alerts against a store of real runs, delivered to a real SMTP server (aiosmtpd) and
a loopback webhook receiver: fire once, remind, resolve, templates, delivery failures."""

from __future__ import annotations

import json
import time

import pytest

from sheetops.alerts import (
    AlertEvaluator,
    ChannelDelivery,
    DeliveryPolicy,
    firing_alerts,
    format_duration,
    recent_alert_events,
)
from sheetops.config.model import AlertSpec, JobSpec, SheetSettings, Snapshot
from sheetops.runner import new_run_id
from sheetops.settings import get_settings
from sheetops.store import Batch, Store
from sheetops.templates import TemplateSpec
from sheetops.testing.http import HttpServer
from sheetops.testing.ports import free_port
from sheetops.testing.smtp import SmtpServer

T0 = time.time()
FAST = DeliveryPolicy(attempts=2, backoff_initial_s=0.01, backoff_max_s=0.02, timeout_s=5)


# -- helpers ---------------------------------------------------------------------------

@pytest.fixture
def hooks(monkeypatch):
    with HttpServer() as server:
        server.json("/hook", {"ok": True}, method="POST")
        server.json("/slack", "ok", method="POST")
        monkeypatch.setenv("SHEETOPS_WEBHOOK_OPS", server.url("/hook"))
        monkeypatch.setenv("SHEETOPS_SLACK_ALERTS", server.url("/slack"))
        yield server


def job(name: str, enabled: bool = True) -> JobSpec:
    return JobSpec(job=name, automation="flaky", schedule="every 1m", timezone="UTC",
                   enabled=enabled)


def snapshot(*rules: AlertSpec, jobs=("sync",), templates=(), reminder_s=600.0,
             disabled=()) -> Snapshot:
    return Snapshot(
        jobs={**{j: job(j) for j in jobs}, **{j: job(j, False) for j in disabled}},
        templates={t.name: t for t in templates}, alerts=tuple(rules),
        settings=SheetSettings(alert_interval_s=60, alert_reminder_s=reminder_s))


def rule(name="sync failing", job="sync", metric="failure_rate", threshold=0.5,
         window_s=3600, channel="email:ops@example.com", enabled=True) -> AlertSpec:
    return AlertSpec(name, job, metric, threshold, window_s, channel, enabled, row=2)


def record_runs(store: Store, job_name: str, statuses: list[str], *, start: float = T0 - 600,
                step: float = 10.0, duration: float = 1.0) -> None:
    """Finished runs of ``job_name`` (one per status) and the job state they leave, as the
    runner records them."""
    runs, failures, last_success = [], 0, None
    for i, status in enumerate(statuses):
        started = start + i * step
        runs.append({"id": new_run_id(started), "job": job_name, "trigger": "schedule",
                     "scheduled_for": started, "started_at": started,
                     "finished_at": started + duration, "status": status, "attempts": 1,
                     "duration_s": duration, "result": "{}",
                     "error_type": "" if status == "ok" else "RuntimeError",
                     "error_message": "" if status == "ok" else "boom"})
        if status == "ok":
            failures, last_success = 0, started + duration
        else:
            failures += 1
    state = {"last_status": statuses[-1], "consecutive_failures": failures}
    if last_success is not None:
        state["last_success_at"] = last_success
    store.record(Batch(new_runs=runs, job_states={job_name: state}))


class Box:
    """Holds the snapshot an evaluator sees, so a test can change the sheet."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def __call__(self) -> Snapshot:
        return self.snap


def kinds(events) -> list[str]:
    return [e.kind for e in events]


# -- fire once, remind, resolve ---------------------------------------------------------
def test_fires_once_reminds_and_resolves_by_email(store, smtp):
    record_runs(store, "sync", ["ok", "failed", "failed", "timeout"])
    evaluator = AlertEvaluator(store, Box(snapshot(rule())),
                               ChannelDelivery(FAST))

    fired = evaluator.evaluate(T0)
    assert kinds(fired) == ["fired"] and fired[0].delivered
    assert fired[0].value == pytest.approx(0.75)
    first = smtp.wait_for(1)[0]
    assert first["Subject"] == "[sheetops] FIRING: sync failing — sync"
    assert first["To"] == "ops@example.com"
    body = first.get_content()
    assert "failure rate over the last 1h 00m is 75%" in body
    assert "threshold 50%" in body

    # still failing for several evaluations: no storm
    for minute in range(1, 9):
        assert evaluator.evaluate(T0 + minute * 60) == []
    assert len(smtp.messages) == 1
    [firing] = firing_alerts(store)
    assert (firing["rule"], firing["job"], firing["firing_since"]) == ("sync failing",
                                                                       "sync", T0)
    assert firing["last_value"] == pytest.approx(0.75) and not firing["undelivered"]

    # a reminder once alert_reminder_s (600 s) has passed since the last message
    reminder = evaluator.evaluate(T0 + 600)
    assert kinds(reminder) == ["reminder"]
    assert smtp.wait_for(2)[1]["Subject"] == "[sheetops] STILL FIRING: sync failing — sync"
    assert "reminder" in smtp.messages[1].get_content()
    assert evaluator.evaluate(T0 + 660) == []

    # the job recovers: 4 failed of 10 is below 50%
    record_runs(store, "sync", ["ok"] * 6, start=T0 + 700, step=5)
    resolved = evaluator.evaluate(T0 + 800)
    assert kinds(resolved) == ["resolved"] and resolved[0].value == pytest.approx(0.3)
    last = smtp.wait_for(3)[2]
    assert last["Subject"] == "[sheetops] RESOLVED: sync failing — sync"
    assert "below the threshold 50%" in last.get_content()
    assert evaluator.evaluate(T0 + 860) == [] and len(smtp.messages) == 3
    assert firing_alerts(store) == []

    history = recent_alert_events(store, 10)
    assert [e["kind"] for e in history] == ["resolved", "reminder", "fired"]
    assert all(e["delivered_at"] is not None for e in history)
    assert history[2]["channel"] == "email:ops@example.com"


def test_failure_rate_needs_a_minimum_of_runs(store):
    sent = []
    record_runs(store, "sync", ["failed", "failed"])
    evaluator = AlertEvaluator(store, Box(snapshot(rule())), sent.append)
    assert evaluator.evaluate(T0) == []  # 2 of 2 failed: not enough runs to judge
    record_runs(store, "sync", ["failed"], start=T0 - 100)
    assert kinds(evaluator.evaluate(T0 + 60)) == ["fired"]
    assert len(sent) == 1


def test_star_rule_watches_each_job_separately_over_webhook_and_slack(store, hooks):
    record_runs(store, "sync", ["ok", "failed", "failed", "failed"])
    record_runs(store, "report", ["failed", "ok"])
    record_runs(store, "old", ["failed"] * 5)  # disabled job: not watched
    rules = (rule("failing in a row", "*", "consecutive_failures", 3, channel="webhook:ops"),
             rule("failing (slack)", "*", "consecutive_failures", 3, channel="slack:alerts"))
    evaluator = AlertEvaluator(store, Box(snapshot(*rules, jobs=("sync", "report"),
                                                   disabled=("old",))),
                               ChannelDelivery(FAST))
    events = evaluator.evaluate(T0)
    assert sorted((e.rule, e.job, e.kind) for e in events) == [
        ("failing (slack)", "sync", "fired"), ("failing in a row", "sync", "fired")]
    [hook] = [r for r in hooks.requests if r.path == "/hook"]
    payload = hook.json()
    assert payload["kind"] == "fired" and payload["rule"] == "failing in a row"
    assert payload["job"] == "sync" and payload["value"] == 3 and payload["threshold"] == 3
    assert payload["firing_since"].endswith("+00:00")
    assert "consecutive failures is 3" in payload["text"]
    [slack] = [r for r in hooks.requests if r.path == "/slack"]
    assert set(slack.json()) == {"text"}
    assert slack.json()["text"].startswith("*[sheetops] FIRING: failing (slack) — sync*")
    assert evaluator.evaluate(T0 + 60) == [] and len(hooks.requests) == 2

    record_runs(store, "sync", ["ok"], start=T0 + 100)
    assert sorted(kinds(evaluator.evaluate(T0 + 120))) == ["resolved", "resolved"]
    assert [r.json()["kind"] for r in hooks.requests if r.path == "/hook"] == ["fired",
                                                                               "resolved"]


def test_other_metrics(store):
    sent = []
    record_runs(store, "sync", ["ok"] * 19 + ["ok"], duration=2.0)
    record_runs(store, "slow", ["ok"] * 18, duration=1.0)
    record_runs(store, "slow", ["ok"] * 2, duration=90.0, start=T0 - 100)  # p95 of 20 = 19th
    record_runs(store, "never", ["failed"], start=T0 - 7200)
    store.set_gauges({"attempts_waiting": 40, "queue_depth:enrich": 2})
    rules = (rule("slow runs", "*", "duration_p95_s", 60),
             rule("stuck", "*", "no_success_for_s", 3600),
             rule("backlog", "*", "queue_depth", 25),
             rule("sync backlog", "sync", "queue_depth", 100))
    evaluator = AlertEvaluator(store, Box(snapshot(*rules, jobs=("sync", "slow", "never"))),
                               sent.append)
    events = evaluator.evaluate(T0)
    assert sorted((e.rule, e.job) for e in events) == [
        ("backlog", "(runner)"), ("slow runs", "slow"), ("stuck", "never")]
    by_rule = {e.rule: e for e in events}
    assert by_rule["slow runs"].value == 90.0
    assert by_rule["stuck"].value == pytest.approx(7200, abs=1)
    assert "95th percentile run duration over the last 1h 00m is 1m 30s" in \
        next(m.body for m in sent if m.rule == "slow runs")
    states = {(s["rule"], s["job"]): s["last_value"] for s in _all_states(store)}
    assert states[("sync backlog", "(runner)")] == 40  # no queue of its own: the runner
    assert states[("backlog", "enrich")] == 2
    assert states[("slow runs", "sync")] == 2.0
    assert states[("stuck", "sync")] == pytest.approx(600 - 19 * 10 - 2, abs=1)


def _all_states(store):
    return list(store.alerts.states().values())


def test_removed_rule_closes_its_incident_without_a_message(store):
    sent = []
    record_runs(store, "sync", ["failed"] * 3)
    box = Box(snapshot(rule()))
    evaluator = AlertEvaluator(store, box, sent.append)
    assert kinds(evaluator.evaluate(T0)) == ["fired"]
    box.snap = snapshot(rule(enabled=False))
    [closed] = evaluator.evaluate(T0 + 60)
    assert closed.kind == "resolved" and "no longer evaluated" in closed.message
    assert len(sent) == 1 and firing_alerts(store) == []


# -- templates ----------------------------------------------------------------------------
def test_templates_tab_overrides_the_email_text(store, smtp):
    record_runs(store, "sync", ["failed"] * 4)
    templates = (
        TemplateSpec("sync failing", "{{ job }} is failing ({{ value_text }})",
                     "Hello ops,\n{{ description }}\nSince {{ since }}. Kind: {{ kind }}.\n"),
        TemplateSpec("alert_resolved", "OK again: {{ rule }}",
                     "<p>{{ job }} recovered after <b>{{ firing_for }}</b></p>", "html"),
    )
    evaluator = AlertEvaluator(store, Box(snapshot(rule(), templates=templates)),
                               ChannelDelivery(FAST))
    evaluator.evaluate(T0)
    fired = smtp.wait_for(1)[0]
    assert fired["Subject"] == "sync is failing (100%)"
    text = fired.get_content().replace("\r\n", "\n")
    assert text.startswith("Hello ops,\nsync failing for sync: failure rate over the last")
    assert "Kind: fired." in text

    record_runs(store, "sync", ["ok"] * 10, start=T0 + 10, step=1)
    evaluator.evaluate(T0 + 300)
    resolved = smtp.wait_for(2)[1]
    assert resolved["Subject"] == "OK again: sync failing"
    assert resolved.get_content_type() == "multipart/alternative"
    html = resolved.get_body(("html",)).get_content()
    assert "<b>" + format_duration(300) + "</b>" in html
    assert "sync recovered after 5m 00s" in resolved.get_body(("plain",)).get_content()


def test_broken_template_still_alerts_with_the_built_in_text(store):
    sent = []
    record_runs(store, "sync", ["failed"] * 3)
    templates = (TemplateSpec("alert", "{{ no_such_variable }}", "x"),)
    evaluator = AlertEvaluator(store, Box(snapshot(rule(), templates=templates)),
                               sent.append)
    assert kinds(evaluator.evaluate(T0)) == ["fired"]
    assert sent[0].subject == "[sheetops] FIRING: sync failing — sync"
    assert "Template 'alert' could not be used" in sent[0].body


def test_an_endless_alert_template_is_stopped_and_the_built_in_text_is_sent(store, smtp):
    record_runs(store, "sync", ["failed"] * 3)
    endless = ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
               "{% endfor %}")
    evaluator = AlertEvaluator(store, Box(snapshot(rule(), templates=(
        TemplateSpec("alert", "x", endless),))), ChannelDelivery(FAST),
        template_time_limit_s=1.0)
    started = time.monotonic()
    assert kinds(evaluator.evaluate(T0)) == ["fired"]
    assert time.monotonic() - started < 10
    mail = smtp.wait_for(1)[0]
    assert mail["Subject"] == "[sheetops] FIRING: sync failing — sync"
    assert ("Template 'alert' could not be used: TemplateLimitError: template render took "
            "longer than 1 s") in mail.get_content()


# -- delivery failures --------------------------------------------------------------------
def test_webhook_500_is_recorded_and_retried_at_the_next_evaluation(store, monkeypatch):
    record_runs(store, "sync", ["failed"] * 3)
    with HttpServer() as server:
        server.sequence("/hook", [500, 500, 200], body={"ok": True}, method="POST")
        monkeypatch.setenv("SHEETOPS_WEBHOOK_OPS", server.url("/hook"))
        evaluator = AlertEvaluator(store, Box(snapshot(rule(channel="webhook:ops"))),
                                   ChannelDelivery(FAST))
        first = evaluator.evaluate(T0)
        assert kinds(first) == ["fired", "delivery_failed"]
        assert not first[0].delivered and server.count("/hook") == 2  # bounded retries
        assert "500" in first[1].error and server.url() not in first[1].message
        [firing] = firing_alerts(store)
        assert firing["undelivered"]

        second = evaluator.evaluate(T0 + 60)
        assert kinds(second) == ["fired"] and second[0].delivered
        assert second[0].id == first[0].id  # the same message, not a new incident
        assert server.count("/hook") == 3
        assert evaluator.evaluate(T0 + 120) == [] and server.count("/hook") == 3
    history = recent_alert_events(store, 10)
    assert [e["kind"] for e in history] == ["delivery_failed", "fired"]
    assert history[1]["delivered_at"] is not None
    assert not firing_alerts(store)[0]["undelivered"]


def test_smtp_down_never_raises_and_the_message_arrives_when_it_is_back(store, monkeypatch):
    port = free_port()
    monkeypatch.setenv("SHEETOPS_SMTP_PORT", str(port))
    get_settings.cache_clear()
    record_runs(store, "sync", ["failed"] * 3)
    evaluator = AlertEvaluator(store, Box(snapshot(rule())), ChannelDelivery(FAST))
    events = evaluator.evaluate(T0)
    assert kinds(events) == ["fired", "delivery_failed"]
    assert "ConnectionRefusedError" in events[1].error
    assert kinds(evaluator.evaluate(T0 + 60)) == ["delivery_failed"]  # still down
    with SmtpServer(port=port) as server:
        retried = evaluator.evaluate(T0 + 120)
        assert kinds(retried) == ["fired"] and retried[0].delivered
        assert server.wait_for(1)[0]["Subject"].startswith("[sheetops] FIRING")


def test_unconfigured_channel_gives_up_after_max_tries_then_reminds(store):
    record_runs(store, "sync", ["failed"] * 3)
    evaluator = AlertEvaluator(store, Box(snapshot(rule(channel="slack:nowhere"))),
                               ChannelDelivery(FAST), max_pending_tries=2)
    assert kinds(evaluator.evaluate(T0)) == ["fired", "delivery_failed"]
    [gave_up] = evaluator.evaluate(T0 + 60)
    assert "SHEETOPS_SLACK_NOWHERE" in gave_up.error and "giving up" in gave_up.message
    assert evaluator.evaluate(T0 + 120) == []  # no storm once it gave up
    assert kinds(evaluator.evaluate(T0 + 600)) == ["reminder", "delivery_failed"]


def test_a_raising_channel_never_reaches_the_scheduler(store):
    def explode(message):
        raise RuntimeError("channel exploded")

    record_runs(store, "sync", ["failed"] * 3)
    evaluator = AlertEvaluator(store, Box(snapshot(rule())), explode)
    assert kinds(evaluator.evaluate_safely(T0)) == ["fired", "delivery_failed"]
    store.dispose()
    broken = AlertEvaluator(store, Box(snapshot(rule())), explode)
    broken.alerts = None  # anything going wrong inside: logged, not raised
    assert broken.evaluate_safely(T0) == []
    assert broken.tick(T0) is True
    broken.join(5)


def test_engine_evaluates_alerts_from_the_sheet(workbook, hooks, tmp_path):
    from sheetops.engine import Engine, EngineOptions

    workbook.jobs({"job": "broken", "automation": "always_fails", "schedule": "every 1s",
                   "max_attempts": 1})
    workbook.settings(alert_interval_s=1, refresh_interval_s=1)
    workbook.write("Alerts", ["name", "job", "metric", "threshold", "window", "channel"],
                   [["broken job", "*", "consecutive_failures", 2, "1h", "webhook:ops"]])
    engine = Engine(workbook.sheet, Store(f"sqlite:///{tmp_path / 'engine.db'}"),
                    EngineOptions(workers=1))
    engine.start()
    try:
        deadline = time.time() + 20
        while time.time() < deadline and not hooks.count("/hook"):
            time.sleep(0.2)
    finally:
        engine.stop()
    assert hooks.count("/hook") == 1
    payload = json.loads(hooks.requests[0].body)
    assert (payload["rule"], payload["job"], payload["kind"]) == ("broken job", "broken",
                                                                  "fired")
    assert firing_alerts(engine.store)[0]["rule"] == "broken job"
