"""Pipeline monitoring: per-stage queue depth, throughput, failures, dead letters and lag
— read from a store a real pipeline ran on, and shown on the Queues and Dead letters
pages (Streamlit AppTest), in Prometheus (scraped over HTTP), as alert metrics (mail to
a real SMTP server) and in the terminal (the real CLI in a subprocess)."""

from __future__ import annotations

import json
import threading
import time

import pytest
import test_pipelines_job
from conftest import wait_for
from test_dashboard_pages import _frame, _open

from sheetops.pipelines import pipeline
from sheetops.settings import get_settings
from sheetops.store import Store
from sheetops.store import pipeline_reads as reads

BAD = {7, 123}
pytestmark = pytest.mark.usefixtures("forget_pipelines")


def contacts_pipeline(name: str, n: int = 300, gate: threading.Event | None = None,
                      bad: set[int] | None = None, sink_high_water: int = 0):
    """check → deliver; records in ``bad`` (default BAD) fail the check (dead letters);
    ``gate`` holds the sink until set, so its queue fills (the bottleneck)."""
    bad = set(BAD) if bad is None else bad
    pipe = pipeline(name, source=[{"id": i, "email": f"c{i}@example.org"} for i in range(n)],
                    key="id")

    @pipe.stage(batch_size=50, retries=0)
    def check(records):
        for record in records:
            if record["id"] in bad:
                raise ValueError(f"contact {record['id']}: no consent")
        return records

    @pipe.sink(batch_size=20, high_water=sink_high_water)
    def deliver(records):
        if gate is not None:
            gate.wait(30)

    return pipe


@pytest.fixture
def servers():
    """The loopback contacts API and SMTP server of the example pipeline's job test."""
    yield from test_pipelines_job.servers.__wrapped__()


@pytest.fixture
def url(store_url: str) -> str:
    """The store's URL, for the pipeline runs and the dashboard (the test's SQLite file)."""
    return store_url


@pytest.fixture
def held(url, store):
    """A pipeline ``held`` running in a thread with its sink held: its ``deliver``
    queue is the bottleneck until ``release()``. The queue takes every record, so the
    check stage ends its work (a state at rest, which the backpressure of a smaller
    mark would stop at a moment that depends on how the bad records split)."""
    gate = threading.Event()
    pipe = contacts_pipeline("held", gate=gate, sink_high_water=1000)
    thread = threading.Thread(target=pipe.run, args=(url,), kwargs={"job": "held"})
    thread.start()

    def full():
        [pipe] = reads.pipeline_stats(store, order={"held": ["check", "deliver"]}) or [None]
        return (pipe is not None and len(pipe.stages) == 2
                and pipe.stages[0].records_in == 300 and pipe.stages[1].depth >= 10)

    wait_for(full, timeout=30, what="the check stage to hand every record to the held sink")

    def release():
        gate.set()
        thread.join(30)

    yield release
    release()


def test_stage_stats_show_the_bottleneck_then_counts_and_dead_letters(store, held):
    [pipe] = reads.pipeline_stats(store, order={"held": ["check", "deliver"]})
    check, deliver = pipe.stages
    assert (pipe.job, pipe.state, [s.stage for s in pipe.stages]) == (
        "held", "read", ["check", "deliver"])
    assert pipe.bottleneck is deliver and deliver.depth >= 10 and deliver.lag_s > 0
    assert (check.records_in, check.dead) == (300, 2) and check.rate > 0
    assert deliver.records_in == 0
    later = reads.pipeline_stats(store)
    assert reads.with_rates(later, [pipe], 2.0)[0].stages[0].rate == 0.0  # none since
    held()
    [done] = reads.pipeline_stats(store)
    check, deliver = done.stages
    assert done.state == "finished" and done.bottleneck is None
    assert (check.records_in, check.records_out, check.records_failed, check.dead) == (
        300, 298, 2, 2)
    assert (deliver.records_in, deliver.records_out, deliver.depth, deliver.lag_s) == (
        298, 298, 0, None)
    store.request_run("held", requested_by="ana")
    assert [(q.queue, q.waiting) for q in reads.other_queues(store)] == [("run_requests", 1)]


@pytest.fixture
def dashboard(url, monkeypatch):
    monkeypatch.setenv("SHEETOPS_STORE_URL", url)
    monkeypatch.delenv("SHEETOPS_DASHBOARD_PASSWORD", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_queues_page_draws_each_stage_in_a_row_and_marks_the_bottleneck(store, held,
                                                                         dashboard):
    store.request_run("held", requested_by="ana")
    at = _open("queues.py")
    metrics = {m.label: m.value for m in at.metric}
    depth = int(metrics["held › deliver depth"].replace(",", ""))
    assert depth >= 10 and int(metrics["Queued in stages"]) >= depth
    boxes = [m.value for m in at.markdown]
    assert "#### held" in boxes
    assert ":red[**deliver**] :red-badge[bottleneck]" in boxes
    assert not any(b.startswith(":red[**check**]") for b in boxes)
    stages = _frame(at, "stage", "rate_per_s", "lag_s")
    assert stages["stage"].tolist() == ["check", "deliver"]
    assert stages.set_index("stage").loc["deliver", "lag_s"] > 0
    other = _frame(at, "queue", "depth")
    assert other.set_index("queue")["depth"].to_dict() == {"run_requests": 1}
    held()
    at.run()
    stages = _frame(at, "stage", "rate_per_s", "dead_letters").set_index("stage")
    assert stages["depth"].to_dict() == {"check": 0, "deliver": 0}
    assert stages["dead_letters"].to_dict() == {"check": 2, "deliver": 0}
    assert stages.loc["deliver", "records_out"] == 298
    assert {m.label: m.value for m in at.metric}["Dead letters"] == "2"


def test_dead_letters_page_filters_and_replays_behind_the_login(url, store, dashboard,
                                                                monkeypatch):
    bad = set(BAD)
    pipe = contacts_pipeline("contacts", bad=bad)
    pipe.run(url)
    at = _open("dead_letters.py")
    letters = _frame(at, "key", "error_type", "message")
    assert sorted(letters["key"]) == ["123", "7"]
    assert set(letters["stage"]) == {"check"} and set(letters["error_type"]) == {"ValueError"}
    assert "contact 7: no consent" in letters.set_index("key").loc["7", "message"]
    at.text_input(key="dl_error_type").set_value("KeyError").run()
    assert any(c.value == "No dead letters match." for c in at.caption)
    at.text_input(key="dl_error_type").set_value("").run()
    at.multiselect(key="dl_keys").set_value(["7"]).run()
    at.button(key="dl_replay").click().run()
    assert any("1 record(s) of contacts put back" in s.value for s in at.success)
    assert sorted(_frame(at, "key", "error_type")["key"]) == ["123"]
    # the replayed record goes through once the stage is fixed (here: drained at once)
    bad.discard(7)
    report = pipe.run(url, drain_only=True)
    assert report.stages["deliver"]["records_out"] == 299
    assert sorted(_frame(at.run(), "key", "error_type")["key"]) == ["123"]
    # with a password set, nobody logged in cannot replay (nor see the page)
    monkeypatch.setenv("SHEETOPS_DASHBOARD_PASSWORD", "s3cret")
    get_settings.cache_clear()
    at = _open("dead_letters.py")
    assert not [b for b in at.button if b.key == "dl_replay"]
    assert any("log in" in t.value for t in at.title)


def test_prometheus_serves_each_stage_and_a_durable_queue_named_run_apart(store, held):
    from prometheus_client import CollectorRegistry
    from test_metrics import scrape, value

    from sheetops.metrics import Metrics, MetricsHook, start_metrics_server

    metrics = Metrics(CollectorRegistry())
    MetricsHook(store, metrics)
    server = start_metrics_server(0, metrics.registry)
    store.queues.queue("run").put([{"mine": 1}, {"mine": 2}])  # a user's own queue
    store.set_gauges({"attempts_waiting": 4})
    try:
        samples = scrape(server.server_port)
        depth = value(samples, "sheetops_stage_queue_depth", job="held", stage="deliver")
        assert depth >= 10
        assert value(samples, "sheetops_queue_depth", queue="held.deliver") == depth
        assert value(samples, "sheetops_stage_lag_seconds", job="held", stage="deliver") > 0
        assert value(samples, "sheetops_queue_depth", queue="run") == 2
        assert value(samples, "sheetops_attempts_waiting") == 4
        held()
        samples = scrape(server.server_port)
    finally:
        server.shutdown()
    assert value(samples, "sheetops_dead_letters", job="held", stage="check") == 2
    assert value(samples, "sheetops_dead_letters", job="held", stage="deliver") == 0
    assert value(samples, "sheetops_stage_lag_seconds", job="held", stage="deliver") == 0
    records = "sheetops_stage_records_total"
    assert value(samples, records, job="held", stage="check", outcome="in") == 300
    assert value(samples, records, job="held", stage="check", outcome="dead") == 2
    assert value(samples, records, job="held", stage="deliver", outcome="out") == 298


def test_alerts_fire_by_email_on_dead_letters_stage_lag_and_stage_queue_depth(store, held,
                                                                              smtp):
    from test_alerts import FAST, Box, rule, snapshot

    from sheetops.alerts import AlertEvaluator, ChannelDelivery

    rules = (rule("dead contacts", "held", "dead_letters", 1, window_s=3600),
             rule("slow stage", "*", "stage_lag_s", 0.001),
             rule("stage backlog", "held", "queue_depth", 10))
    box = Box(snapshot(*rules, jobs=("held",)))
    evaluator = AlertEvaluator(store, box, ChannelDelivery(FAST))
    fired = evaluator.evaluate(time.time())  # the check stage is done: both are dead
    assert ("stage backlog", "held.deliver") in {(e.rule, e.job) for e in fired}
    assert ("slow stage", "held.deliver") in {(e.rule, e.job) for e in fired}
    [dead] = [e for e in fired if e.rule == "dead contacts"]
    assert (dead.kind, dead.job, dead.value) == ("fired", "held", 2)
    held()
    fired = evaluator.evaluate(time.time() + 60)
    assert ("stage backlog", "resolved") in {(e.rule, e.kind) for e in fired}  # drained
    mails = smtp.wait_for(3)
    mail = next(m for m in mails if "dead contacts" in m["Subject"])
    assert mail["Subject"] == "[sheetops] FIRING: dead contacts — held"
    assert "dead letters made over the last 1h 00m is 2" in mail.get_content()
    # once replayed, the dead letters leave the count and the alert resolves
    from sheetops.pipelines import deadletters

    assert deadletters.requeue(store.queues, None, "held") == 2
    resolved = evaluator.evaluate(time.time() + 120)
    assert ("dead contacts", "resolved") in {(e.rule, e.kind) for e in resolved}


def stage_lines(out: str, job: str) -> list[str]:
    return [line for line in out.splitlines() if f" {job} " in line and "│" in line]


def test_run_job_and_run_progress_show_each_stage_live(workbook, tmp_path, servers):
    """The real CLI in a subprocess: ``run-job`` of a rate-limited pipeline prints its
    stages while it runs, then the final counts; ``run --progress`` does the same for
    a Run now of it."""
    from test_cli import cli, running_cli
    from test_pipelines_job import CONTACTS

    http, smtp = servers
    params = {"url": http.url("/contacts"), "smtp": {"host": "127.0.0.1", "port": smtp.port}}
    workbook.jobs({"job": "welcome", "automation": "welcome_contacts", "schedule": "manual",
                   "params": json.dumps(params), "template": "hello"})
    workbook.write("Templates", ["name", "subject", "body"],
                   [["hello", "Hi {{ first_name }}", "Welcome to {{ domain }}."]])
    workbook.write("Stages", ["job", "stage", "batch_size", "rate_limit"],
                   [["welcome", "deliver", "2", "8/second"]])  # about 3 s for 23 records
    sheet = ["--sheet", str(workbook.path)]
    run = cli("run-job", "welcome", *sheet, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = stage_lines(run.stdout, "welcome")
    assert len(lines) >= 2, run.stdout  # live: counts moved while it ran
    assert "validate" in lines[-1] and "deliver 23 done" in lines[-1]
    assert "dead 2" in lines[-1] and "read 25" in lines[-1]
    assert lines[0] != lines[-1]
    assert len(smtp.messages) == len(CONTACTS) - 2
    # the Status tab's result cell: each stage's records done and dead, in order
    [status] = [r for r in workbook.records("Status") if r["job"] == "welcome"]
    assert status["result"] == ("validate: 23 done, 2 dead → enrich: 23 done → "
                                "render_email: 23 done → deliver: 23 done · pass=1")


    store = Store(get_settings().resolved_store_url(str(workbook.path)))
    [pipe] = reads.pipeline_stats(store)  # the order of the last run, not by name
    assert [s.stage for s in pipe.stages] == ["validate", "enrich", "render_email",
                                              "deliver"]
    store.request_run("welcome", requested_by="test")
    store.dispose()
    out: list[str] = []
    with running_cli("run", "--progress", *sheet, cwd=tmp_path) as proc:
        reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
        reader.start()
        wait_for(lambda: any("✓ welcome" in line for line in out), timeout=60,
                 what="the Run now of welcome to finish")
        proc.terminate()
        proc.wait(30)
    text = "".join(out)
    assert stage_lines(text, "welcome"), text
    last = stage_lines(text, "welcome")[-1]  # a new pass; the idempotent sink skips all
    assert "read 25" in last and "validate 23 done" in last and "deliver 0 done" in last
