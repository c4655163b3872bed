"""Prometheus metrics from real runs (Runner + LocalExecutor worker processes), scraped
over HTTP and parsed with prometheus-client's own parser."""

from __future__ import annotations

import functools
import json

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sheetops.config.model import JobSpec, Snapshot
from sheetops.executors.local import LocalExecutor
from sheetops.hooks import Hooks
from sheetops.logs import LoggingHook
from sheetops.metrics import (
    REGISTRY,
    SHEET_REQUESTS,
    Metrics,
    MetricsHook,
    start_metrics_server,
)
from sheetops.ratelimit import RateLimitSpec
from sheetops.runner import Runner
from sheetops.store import Store
from sheetops.testing.ports import free_port

pytestmark = pytest.mark.usefixtures("test_automations")



def spec(job: str, **kwargs) -> JobSpec:
    params = kwargs.pop("params", {})
    return JobSpec(job=job, automation="t_probe", schedule="manual", timezone="UTC",
                   params_json=json.dumps(params), backoff_initial_s=0.05,
                   backoff_max_s=0.1, **kwargs)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_runs_attempts_durations_records_waits_and_store_gauges(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'metrics.db'}")
    metrics = Metrics(CollectorRegistry())
    hook = MetricsHook(store, metrics)
    server = start_metrics_server(0, metrics.registry)
    assert server.server_address[0] == "127.0.0.1"
    runner = Runner(store, functools.partial(LocalExecutor), Hooks([hook, LoggingHook()]),
                    workers=3)
    jobs = {
        "m_ok": spec("m_ok", params={"records": 5, "bad_records": ["r1"], "succeed_on": 2}),
        "m_fail": spec("m_fail", params={"fail": "permanent"}),
        "m_slow": spec("m_slow", params={"sleep": 5}, timeout_s=0.5, max_attempts=1),
        "m_throttle": spec("m_throttle", params={"throttle": 2}, rate_limit="m_limit"),
    }
    snapshot = Snapshot(jobs=jobs,
                        rate_limits={"m_limit": RateLimitSpec("m_limit", "1/second", "job")})
    runner.start()
    try:
        for job in jobs.values():
            assert runner.submit(job, snapshot, "manual") is not None
        assert runner.wait_idle(30)
    finally:
        runner.stop()
    store.set_gauges({"attempts_waiting": 3, "outbox_depth": 2, "outbox_age_s": 4.5,
                      "last_refresh_at": 1_700_000_000.0, "running": 0})
    try:
        samples = scrape(server.server_port)
    finally:
        server.shutdown()
        store.dispose()

    runs = "sheetops_runs_total"
    assert value(samples, runs, job="m_ok", status="ok") == 1
    assert value(samples, runs, job="m_fail", status="failed") == 1
    assert value(samples, runs, job="m_slow", status="timeout") == 1
    assert value(samples, runs, job="m_throttle", status="ok") == 1
    attempts = "sheetops_attempts_total"
    assert value(samples, attempts, job="m_ok", status="failed") == 1
    assert value(samples, attempts, job="m_ok", status="ok") == 1
    assert value(samples, attempts, job="m_slow", status="timeout") == 1

    hist = "sheetops_run_duration_seconds"
    assert value(samples, hist + "_count", job="m_slow") == 1
    assert 0.5 <= value(samples, hist + "_sum", job="m_slow") < 5
    assert value(samples, hist + "_bucket", job="m_slow", le="0.1") == 0
    assert value(samples, hist + "_bucket", job="m_slow", le="+Inf") == 1
    assert value(samples, hist + "_count", job="m_ok") == 1

    assert value(samples, "sheetops_records_in_total", job="m_ok") == 5
    assert value(samples, "sheetops_records_out_total", job="m_ok") == 4
    assert value(samples, "sheetops_records_failed_total", job="m_ok") == 1
    assert value(samples, "sheetops_rate_limit_waits_total", job="m_throttle",
                 limit="m_limit") >= 1
    assert value(samples, "sheetops_rate_limit_wait_seconds_total", job="m_throttle",
                 limit="m_limit") > 0.3

    assert value(samples, "sheetops_store_up") == 1
    assert value(samples, "sheetops_attempts_waiting") == 3
    assert value(samples, "sheetops_outbox_depth") == 2
    assert value(samples, "sheetops_outbox_age_seconds") == 4.5
    assert value(samples, "sheetops_running") == 0
    assert value(samples, "sheetops_last_refresh_timestamp_seconds") == 1_700_000_000.0
    assert value(samples, "sheetops_job_consecutive_failures", job="m_fail") == 1
    assert value(samples, "sheetops_job_consecutive_failures", job="m_ok") == 0
    assert value(samples, "sheetops_job_last_success_timestamp_seconds", job="m_ok") > 0
    assert not [k for k in samples if k[0] == "sheetops_alerts_firing"]


def test_store_gauges_report_a_broken_store_instead_of_failing_the_scrape(tmp_path):
    metrics = Metrics(CollectorRegistry())
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    MetricsHook(store, metrics)

    def down():
        raise RuntimeError("store down")

    store.gauges = down
    text = generate_latest(metrics.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["sheetops_store_up"].samples[0].value == 0


def test_sheet_requests_counter_is_on_the_sheetops_registry():
    before = REGISTRY.get_sample_value("sheetops_sheet_requests_total", {"kind": "read"}) or 0
    SHEET_REQUESTS.labels("read").inc()
    after = REGISTRY.get_sample_value("sheetops_sheet_requests_total", {"kind": "read"})
    assert after == before + 1


def test_cli_serves_metrics_only_when_a_port_is_set(workbook, monkeypatch):
    from sheetops.cli import _engine
    from sheetops.settings import get_settings

    engine = _engine(get_settings(), workbook.sheet, 1, False)
    assert not any(isinstance(h, MetricsHook) for h in engine.hooks.hooks)
    assert any(isinstance(h, LoggingHook) for h in engine.hooks.hooks)

    port = free_port()
    monkeypatch.setenv("SHEETOPS_METRICS_PORT", str(port))
    get_settings.cache_clear()
    engine = _engine(get_settings(), workbook.sheet, 1, False)
    assert any(isinstance(h, MetricsHook) for h in engine.hooks.hooks)
    engine.store.set_gauges({"outbox_depth": 7})
    assert value(scrape(port), "sheetops_outbox_depth") == 7
    # a second engine in the same process (run-job beside run): a warning, not a crash
    _engine(get_settings(), workbook.sheet, 1, False)
