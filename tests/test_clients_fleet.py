"""Many clients in one process, and in a fleet: /metrics for every client, log lines that
name their client, rate limits kept apart per client but shared by every process serving
one client, and pipeline stage limits shared fleet-wide through Redis.

Everything through real processes: ``sheetops run`` / ``run-job`` subprocesses on real
workbooks, /metrics scraped over HTTP, the real Redis on the machine, and two ``sheetops
worker`` processes on a PostgreSQL store for the Celery tier's stage limit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import requests
from automations_for_tests import read_attempts
from prometheus_client.parser import text_string_to_metric_families
from test_celery import _jobs, tier, with_services
from test_clients import SHEETOPS, client_workbook, env, probe, store_beside, wait_for
from test_fleet_rate_limit import _most_over_budget

from sheetops.testing.ports import free_port

#: A Redis database of this file's own (test_fleet_rate_limit uses 13).
REDIS_URL = "redis://127.0.0.1:6379/12"
#: One line of the text log format (sheetops.logs.TextFormatter).
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (\w+) +([\w.]+): (.*)$")


def scrape(port: int) -> tuple[str, dict[tuple[str, tuple], float]]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return text, samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def two_clients(tmp_path: Path, acme_jobs: list[dict], globex_jobs: list[dict]):
    acme = client_workbook(tmp_path, "acme", *acme_jobs)
    globex = client_workbook(tmp_path, "globex", *globex_jobs)
    return acme, globex


def run_with_metrics(tmp_path: Path, **sheets: Path) -> tuple[subprocess.Popen, int]:
    """``sheetops run`` of one client per ``name=sheet``, serving /metrics on a port."""
    port = free_port()
    args = [arg for name, sheet in sheets.items() for arg in ("--sheet", f"{name}={sheet}")]
    proc = subprocess.Popen([SHEETOPS, "run", "--workers", "1", *args], cwd=tmp_path,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env(SHEETOPS_METRICS_PORT=str(port)))
    return proc, port


# -- 1. /metrics for every client ------------------------------------------------------

def test_one_metrics_endpoint_counts_each_clients_runs_apart(tmp_path, test_automations):
    # both sheets have a job "sync": acme's always fails, globex's always succeeds
    acme, globex = two_clients(
        tmp_path, [probe("sync", fail="permanent", message="acme down")],
        [probe("sync", records=3), probe("globex-only", "every 2s")])
    proc, port = run_with_metrics(tmp_path, acme=acme.path, globex=globex.path)
    try:
        def both_counted():
            text, samples = scrape(port)
            done = (value(samples, "sheetops_runs_total", client="acme", job="sync",
                          status="failed") >= 2
                    and value(samples, "sheetops_runs_total", client="globex", job="sync",
                              status="ok") >= 2)
            return (text, samples) if done else None

        text, samples = wait_for(both_counted, 60, "both clients' runs on /metrics")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, out + err
    assert "Traceback" not in err and "Duplicated timeseries" not in err
    # one family per name, and every series says whose it is
    types = re.findall(r"^# TYPE (\S+)", text, re.M)
    assert len(types) == len(set(types))
    assert {dict(labels).get("client") for _, labels in samples} == {"acme", "globex"}
    # each client's runs counted apart, though the job names are the same
    assert value(samples, "sheetops_runs_total", client="acme", job="sync", status="ok") == 0
    assert value(samples, "sheetops_runs_total", client="globex", job="sync",
                 status="failed") == 0
    assert value(samples, "sheetops_records_in_total", client="globex", job="sync") >= 6
    assert value(samples, "sheetops_records_in_total", client="acme", job="sync") == 0
    # the store gauges are each client's own store's
    for client in ("acme", "globex"):
        assert value(samples, "sheetops_store_up", client=client) == 1
        assert value(samples, "sheetops_sheet_requests_total", client=client,
                     kind="read") >= 1
    assert value(samples, "sheetops_job_consecutive_failures", client="acme", job="sync") >= 1
    assert value(samples, "sheetops_job_consecutive_failures", client="globex",
                 job="sync") == 0
    assert ("sheetops_job_consecutive_failures", (("client", "acme"),
                                                  ("job", "globex-only"))) not in samples
    # what /metrics counted happened: never more than each store recorded
    for workbook, client, status in ((acme, "acme", "failed"), (globex, "globex", "ok")):
        store = store_beside(workbook)
        try:
            recorded = store.count_runs(status=status)
        finally:
            store.dispose()
        assert value(samples, "sheetops_runs_total", client=client, job="sync",
                     status=status) <= recorded


def test_a_client_that_cannot_start_has_a_client_up_series_of_zero(tmp_path, test_automations):
    good = client_workbook(tmp_path, "good", probe("tick"))
    (tmp_path / "broken.xlsx").write_bytes(os.urandom(4000))
    proc, port = run_with_metrics(tmp_path, good=good.path, broken=tmp_path / "broken.xlsx")
    try:
        def both_reported():
            try:
                _, samples = scrape(port)
            except requests.ConnectionError:
                return None
            seen = {dict(labels)["client"]: v for (name, labels), v in samples.items()
                    if name == "sheetops_client_up"}
            return seen if len(seen) == 2 else None

        up = wait_for(both_reported, 60, "sheetops_client_up for both clients")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, out + err
    assert up == {"good": 1, "broken": 0}
    assert "Traceback" not in err


# -- 2. log lines name their client ------------------------------------------------------

def test_every_log_line_of_a_two_client_run_names_its_client(tmp_path, test_automations):
    webhook = "http://127.0.0.1:9/hook"  # nothing listens: every alert delivery fails
    sheets = {}
    for name in ("acme", "globex"):
        jobs = [{**probe("sync", "every 1s", succeed_on=9), "max_attempts": "2",
                 "backoff_initial_s": "0.1"},
                probe(f"{name}-tick"),
                {"job": "leaky", "automation": "t_leak", "schedule": "every 2s",
                 "enabled": "TRUE", "params": json.dumps({"token": f"tok-{name}-0123"}),
                 "max_attempts": "1"},  # logs from inside its worker process
                {"job": "broken", "automation": "no_such_automation",
                 "schedule": "every 1s", "enabled": "TRUE"}]
        workbook = client_workbook(tmp_path, name, *jobs)
        workbook.settings(refresh_interval_s=1, status_flush_interval_s=1,
                          alert_interval_s=1)
        workbook.write("Alerts", ["name", "job", "metric", "threshold", "window",
                                  "channel", "enabled"],
                       [["sync_failing", "sync", "consecutive_failures", "1", "1h",
                         "webhook:ops", "TRUE"]])
        sheets[name] = workbook
    proc = subprocess.Popen(
        [SHEETOPS, "run", "--workers", "1", "--progress",
         "--sheet", f"acme={sheets['acme'].path}",
         "--sheet", f"globex={sheets['globex'].path}"], cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env(SHEETOPS_WEBHOOK_OPS=webhook, SHEETOPS_LOG_LEVEL="INFO"))
    try:
        acme_store = store_beside(sheets["acme"])
        try:
            wait_for(lambda: acme_store.count_runs(status="failed") >= 2, 60,
                     "acme's failed runs")
        finally:
            acme_store.dispose()
        # acme's workbook becomes unreadable and unwritable: its config reads and
        # status flushes fail (and say so), globex's go on
        aside = tmp_path / "acme-aside.xlsx"
        os.replace(sheets["acme"].path, aside)
        sheets["acme"].path.mkdir()
        globex_store = store_beside(sheets["globex"])
        try:
            seen = globex_store.count_runs()
            wait_for(lambda: globex_store.count_runs() >= seen + 3, 60, "globex runs on")
        finally:
            globex_store.dispose()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, out + err
    assert "Traceback" not in err
    lines = [m for m in map(LOG_LINE.match, err.splitlines()) if m]
    unnamed = [m.group(0) for m in lines
               if not re.search(r"\[client=(acme|globex)[ \]]|client (acme|globex)\b",
                                m.group(0))]
    assert not unnamed, "\n".join(unnamed)

    def named(client: str, pattern: str) -> bool:
        return any(re.search(pattern, m.group(0)) and
                   re.search(rf"\[client={client}[ \]]|client {client}\b", m.group(0))
                   for m in lines)

    for client in ("acme", "globex"):
        assert named(client, r"job sync run \w+ attempt 1 failed .*retrying")  # a retry
        assert named(client, r"job sync run \w+ failed after 2 attempt")  # a run's end
        assert named(client, r"config problem: .*no_such_automation")  # a config problem
        assert named(client, r"alert sync_failing fired")  # an alert
        assert named(client, r"alert sync_failing: could not deliver")
        assert named(client, r"sheetops\.automation\.t_leak: server echoed")
    assert named("acme", r"could not read the config sheet")
    for client in ("acme", "globex"):  # --progress lines too say whose run it was
        assert re.search(rf"^\d\d:\d\d:\d\d {client}: ✓ {client}-tick", out, re.M), out
    assert named("acme", r"status write to .* failed")


# -- 3. RateLimits rows: apart per client, shared by one client's processes --------------

def test_same_named_limit_is_one_budget_per_client_shared_by_its_processes(
        tmp_path, services, test_automations):
    services.redis()
    amount, window = 20, 10.0
    limit = f"api-{uuid.uuid4().hex[:8]}"  # fresh keys in the shared Redis
    evidence = {name: tmp_path / f"evidence-{name}" for name in ("acme", "globex")}
    for name in ("acme", "globex"):
        workbook = client_workbook(tmp_path, name, {
            **probe("caller", "manual", dir=str(evidence[name]), throttle=amount),
            "rate_limit": limit})
        workbook.write("RateLimits", ["name", "rate", "scope"],
                       [[limit, f"{amount}/{window:g} seconds", "global"]])
    listing = tmp_path / "clients.toml"
    listing.write_text('acme = "acme.xlsx"\nglobex = "globex.xlsx"\n')
    # two processes for acme (its fleet), one for globex, all at once
    procs = [subprocess.Popen(
        [SHEETOPS, "run-job", "caller", "--sheet", str(tmp_path / f"{name}.xlsx")],
        cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=env(SHEETOPS_RATE_LIMIT_STORAGE=REDIS_URL, SHEETOPS_CLIENTS=str(listing),
                SHEETOPS_STORE_URL=f"sqlite:///{tmp_path}/{{client}}-{n}.db"))
        for n, name in enumerate(("acme", "acme", "globex"))]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    permits = {name: sorted(t for a in read_attempts(folder) for t in a["permits"])
               for name, folder in evidence.items()}
    assert len(permits["acme"]) == 2 * amount and len(permits["globex"]) == amount
    acme, globex = permits["acme"], permits["globex"]
    # acme's two processes share one budget: never more than it allows (5%) ...
    assert _most_over_budget(acme, amount, window) <= 1.05
    assert acme[-1] - acme[0] >= window * 0.95  # ... so the rest waited for the next
    # ... and globex's row of the same name is its own: all its calls in its first
    # window, while acme used its own; one shared bucket never holds more than `amount`
    assert globex[-1] - globex[0] < window
    both = sorted(acme + globex)
    assert max(sum(s <= t < s + window for t in both) for s in both) > amount * 1.05


# -- 4. pipeline stage limits, fleet-wide ------------------------------------------------

_STAGE_PROCESS = """
import json, sys, time
from sheetops.pipelines import pipeline

store_url, evidence, rate, start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
pipe = pipeline("fleet_limited", source=lambda: ({"id": i} for i in range(start, start + 20)),
                key="id")

@pipe.sink(batch_size=1, rate_limit=rate)
def deliver(records):
    with open(evidence, "a") as out:
        for _ in records:
            out.write(json.dumps(time.time()) + "\\n")

report = pipe.run(store_url, job="fleet_limited")
print("records out", report.records_out, flush=True)
"""


def test_a_stage_rate_limit_holds_across_three_processes_through_redis(tmp_path,
                                                                       services):
    services.redis()
    amount, window, processes = 20, 4.0, 3
    # a fresh stage key: the pipeline's job name is the same in every process
    rate = f"{amount}/{window:g} seconds"
    namespace = uuid.uuid4().hex[:8]
    procs = []
    for n in range(processes):
        folder = tmp_path / f"p{n}"
        folder.mkdir()
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _STAGE_PROCESS.replace("fleet_limited",
                                                          f"fleet_{namespace}"),
             f"sqlite:///{folder / 's.db'}", str(folder / "times.jsonl"), rate,
             str(n * 1000)], cwd=folder, text=True, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env(SHEETOPS_RATE_LIMIT_STORAGE=REDIS_URL)))
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * processes, outputs
    assert all("records out 20" in out for out in outputs), outputs
    times = sorted(json.loads(line) for n in range(processes)
                   for line in (tmp_path / f"p{n}" / "times.jsonl").read_text().splitlines())
    assert len(times) == processes * 20  # every record went through: waited, not failed
    # never more than the stage's limit across the three processes: no 95% of a window
    # holds more than `amount` records (a record is noted a few ms after its permit, and
    # unevenly, so a full window of notes can catch one permit of the next) ...
    busiest = max(sum(t0 <= t < t0 + 0.95 * window for t in times) for t0 in times)
    assert busiest <= amount, busiest
    # ... so 60 records at 20 per window took at least two full windows
    assert times[-1] - times[0] >= (len(times) / amount - 1) * window * 0.95
    # ... and the budget was used: after the first window, records came at the rate
    rate_seen = (len(times) - amount) / (times[-1] - times[0])
    assert rate_seen >= 0.9 * amount / window, f"{rate_seen:.2f} records/s"



def test_an_attempt_carries_its_client_to_workers_and_one_sheets_message_is_unchanged(
        caplog):
    from sheetops.context import AttemptRequest, RunContext
    from sheetops.ratelimit import RateLimitSpec, limit_key

    limit = RateLimitSpec("api", "10/second")
    plain = AttemptRequest("r1", "sync", "t_probe", 1, {}, 60.0, rate_limit=limit)
    data = json.loads(plain.to_json())
    assert "client" not in data and "namespace" not in data["rate_limit"]
    ours = AttemptRequest.from_json(
        AttemptRequest("r2", "sync", "t_probe", 1, {}, 60.0, rate_limit=limit,
                       client="acme").to_json())
    assert ours.client == "acme"
    asked = []
    RunContext(ours, throttle=lambda spec, job: asked.append(spec) or 0.0).throttle()
    assert [s.namespace for s in asked] == ["acme"]  # the worker asks in acme's keys
    with caplog.at_level("INFO"):  # what the automation logs there names the client
        RunContext(ours).log.info("hello")
    assert [r.client for r in caplog.records if r.getMessage() == "hello"] == ["acme"]
    assert limit_key("api", "acme") == ("sheetops", "client", "acme", "api")
    assert limit_key("api") == ("sheetops", "api")  # one sheet: the keys it always had


@with_services
def test_a_stage_rate_limit_holds_across_celery_workers(services, tmp_path, workbook):
    from celery_for_tests import LIMITED_RATE
    from sqlalchemy import text

    services.redis()
    amount, window, n = 20, 4.0, 60
    assert f"{amount}/{window:g} seconds" == LIMITED_RATE
    source = tmp_path / "input.jsonl"
    source.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(n)))
    _jobs(workbook, {"job": "limited", "automation": "cel_limited", "schedule": "manual",
                     "enabled": "TRUE", "timeout_s": "60", "max_attempts": "1",
                     "params": json.dumps({"input": str(source)})})
    with tier(services, "redis", tmp_path, workbook) as t1:
        t1.env["SHEETOPS_BROKER_VISIBILITY_TIMEOUT_S"] = "80"  # > the pass's timeout_s
        # a fresh Redis database for the windows: the stage's key is the same each run
        t1.env["SHEETOPS_RATE_LIMIT_STORAGE"] = REDIS_URL.rsplit("/", 1)[0] + "/11"
        _flush_redis(t1.env["SHEETOPS_RATE_LIMIT_STORAGE"])
        t1.worker("w1", concurrency=2)
        t1.worker("w2", concurrency=2)
        t1.scheduler()
        t1.store.request_run("limited", "ops")
        [run] = wait_for(lambda: t1.finished("limited", 1), 120, "the pipeline's run")
        with t1.store.engine.connect() as conn:
            rows = conn.execute(text("SELECT key, at, pid FROM cel_limited_at")).all()
    assert run["status"] == "ok", run["error_message"]
    assert sorted(int(k) for k, _, _ in rows) == list(range(n))  # each once
    assert len({pid for _, _, pid in rows}) >= 2  # batches went through several processes
    times = sorted(at for _, at, _ in rows)
    busiest = max(sum(t0 <= t < t0 + 0.95 * window for t in times) for t0 in times)
    assert busiest <= amount, busiest  # the stage's limit held across the workers
    assert times[-1] - times[0] >= (n / amount - 1) * window * 0.95


def _flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()

