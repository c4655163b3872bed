"""Prometheus metrics on an opt-in port (``SHEETOPS_METRICS_PORT``; 0 = off).

Counters and the duration histogram are updated by :class:`MetricsHook` as runs happen;
gauges (durable queue depths, attempts waiting, outbox, last refresh, running, alerts
firing, per-job consecutive failures and last success) and each pipeline stage's depth,
lag, dead letters and record counters (:mod:`sheetops.store.pipeline_reads`) are read
from the store at scrape time by :class:`StoreCollector`, so they are right even for
work done by other processes.

Everything lives on a dedicated :class:`~prometheus_client.CollectorRegistry`
(:data:`REGISTRY`), never on prometheus-client's global one. Sheet backends count their
API calls with :func:`count_sheet_request` (kinds: ``read``, ``write``, ``retry``).

One process serving several clients serves them all from one endpoint and one registry
of its own (:data:`CLIENTS_REGISTRY`): every series there has a ``client`` label first
(``sheetops_runs_total{client="acme",job="sync",status="ok"}``), the run counters come
from each client's :class:`MetricsHook`, the store gauges from one
:class:`ClientsCollector` over every running client's store. A single sheet's output is
unchanged: no ``client`` label at all.

Metric names (all prefixed ``sheetops_``) are listed in docs/monitoring.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sheetops import client_context
from sheetops.context import AttemptResult
from sheetops.events import attempt_status
from sheetops.hooks import RunHook, RunInfo, RunOutcome
from sheetops.store import pipeline_reads

if TYPE_CHECKING:
    from sheetops.store import Store

log = logging.getLogger("sheetops.metrics")

DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """The counters and histogram of one registry; ``by_client``: each with a
    ``client`` label before its others (one process serving several clients)."""

    def __init__(self, registry: CollectorRegistry, by_client: bool = False) -> None:
        self.registry = registry
        self.by_client = by_client
        r, c = registry, ["client"] if by_client else []
        self.runs = Counter("sheetops_runs", "Finished runs by job and status "
                            "(ok, failed, timeout).", [*c, "job", "status"], registry=r)
        self.attempts = Counter("sheetops_attempts", "Finished attempts by job and status.",
                                [*c, "job", "status"], registry=r)
        self.duration = Histogram("sheetops_run_duration_seconds",
                                  "Duration of finished runs, all attempts included.",
                                  [*c, "job"], buckets=DURATION_BUCKETS, registry=r)
        self.records_in = Counter("sheetops_records_in", "Records read by runs.",
                                  [*c, "job"], registry=r)
        self.records_out = Counter("sheetops_records_out", "Records written by runs.",
                                   [*c, "job"], registry=r)
        self.records_failed = Counter("sheetops_records_failed",
                                      "Records runs could not process.", [*c, "job"],
                                      registry=r)
        self.rate_limit_waits = Counter("sheetops_rate_limit_waits",
                                        "Times an attempt had to wait for a rate limit.",
                                        [*c, "job", "limit"], registry=r)
        self.rate_limit_wait_seconds = Counter("sheetops_rate_limit_wait_seconds",
                                               "Seconds attempts waited for rate limits.",
                                               [*c, "job", "limit"], registry=r)
        self.sheet_requests = Counter("sheetops_sheet_requests",
                                      "Requests to the config sheet's API by kind "
                                      "(read, write, retry).", [*c, "kind"], registry=r)


REGISTRY = CollectorRegistry(auto_describe=True)
_store_collectors: dict[int, StoreCollector] = {}  # registry id → its store collector
METRICS = Metrics(REGISTRY)
#: The single-sheet counter of sheet API requests (by kind); see count_sheet_request.
SHEET_REQUESTS = METRICS.sheet_requests
#: One process serving several clients: every series labelled with its client.
CLIENTS_REGISTRY = CollectorRegistry(auto_describe=True)
CLIENT_METRICS = Metrics(CLIENTS_REGISTRY, by_client=True)


def count_sheet_request(kind: str) -> None:
    """Count one request to a sheet's API: under the client whose code makes it
    (:mod:`sheetops.client_context`), else on the single-sheet registry."""
    client = client_context.current()
    if client:
        CLIENT_METRICS.sheet_requests.labels(client, kind).inc()
    else:
        SHEET_REQUESTS.labels(kind).inc()


class MetricsHook(RunHook):
    """Counts runs, attempts, durations, records and rate-limit waits.

    With a ``store``, also registers a :class:`StoreCollector` on the metrics' registry
    (replacing one registered before), so gauges are served from the same endpoint.
    On metrics ``by_client``, each series is labelled ``client`` (the store gauges then
    come from a :class:`ClientsCollector`)."""

    def __init__(self, store: Store | None = None, metrics: Metrics | None = None,
                 client: str = "") -> None:
        self.metrics = metrics or METRICS
        self._client = (client,) if self.metrics.by_client else ()
        self.collector: StoreCollector | None = None
        if store is not None:
            self.collector = StoreCollector(store)
            registry = self.metrics.registry
            old = _store_collectors.pop(id(registry), None)
            if old is not None:
                registry.unregister(old)
            registry.register(self.collector)
            _store_collectors[id(registry)] = self.collector

    def on_attempt_end(self, run: RunInfo, result: AttemptResult) -> None:
        self.metrics.attempts.labels(*self._client, run.job,
                                     attempt_status(result).value).inc()

    def on_run_end(self, run: RunInfo, outcome: RunOutcome) -> None:
        m, job = self.metrics, (*self._client, run.job)
        m.runs.labels(*job, str(outcome.status)).inc()
        m.duration.labels(*job).observe(outcome.duration_s)
        m.records_in.labels(*job).inc(outcome.records_in)
        m.records_out.labels(*job).inc(outcome.records_out)
        m.records_failed.labels(*job).inc(outcome.records_failed)

    def on_throttle(self, job: str, limit: str, waited_s: float) -> None:
        self.metrics.rate_limit_waits.labels(*self._client, job, limit).inc()
        self.metrics.rate_limit_wait_seconds.labels(*self._client, job, limit).inc(
            max(0.0, waited_s))


class StoreCollector(Collector):
    """Gauges read from the store at each scrape (a handful of small queries)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> list:
        return []  # collected lazily: never query the store at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("sheetops_store_up",
                               "1 when the store answered this scrape, else 0.")
        try:
            families = list(self._collect())
        except Exception as exc:
            log.warning("metrics: could not read the store: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.time()
        gauges = self.store.gauges()
        queues = pipeline_reads.queue_stats(self.store, now=now)
        queue = GaugeMetricFamily("sheetops_queue_depth", "Items not yet done in a durable "
                                  "queue (a pipeline stage's is <job>.<stage>).",
                                  labels=["queue"])
        for name, stats in sorted(queues.items()):
            queue.add_metric([name], stats.waiting)
        yield queue
        yield from self._stages()
        simple = (
            ("attempts_waiting", "sheetops_attempts_waiting",
             "Attempts waiting for a worker process."),
            ("running", "sheetops_running", "Attempts running now."),
            ("outbox_depth", "sheetops_outbox_depth",
             "Sheet writes waiting in the outbox."),
            ("outbox_age_s", "sheetops_outbox_age_seconds",
             "Age of the oldest undelivered outbox entry."),
            ("last_refresh_at", "sheetops_last_refresh_timestamp_seconds",
             "When the config sheet was last read successfully (epoch seconds)."),
            ("last_refresh_ok", "sheetops_last_refresh_ok",
             "1 when the last read of the config sheet worked."),
            ("config_errors", "sheetops_config_errors",
             "Config errors (rows skipped) on the Validation tab."),
            ("scheduler_heartbeat", "sheetops_scheduler_heartbeat_timestamp_seconds",
             "Last time the scheduler published its gauges (epoch seconds)."),
        )
        for key, name, doc in simple:
            if key in gauges:
                yield GaugeMetricFamily(name, doc, value=gauges[key][0])
        failures = GaugeMetricFamily("sheetops_job_consecutive_failures",
                                     "Failed runs in a row, per job.", labels=["job"])
        success = GaugeMetricFamily("sheetops_job_last_success_timestamp_seconds",
                                    "When the job last succeeded (epoch seconds).",
                                    labels=["job"])
        for job, state in sorted(self.store.job_states().items()):
            failures.add_metric([job], state.get("consecutive_failures") or 0)
            if state.get("last_success_at"):
                success.add_metric([job], state["last_success_at"])
        yield failures
        yield success
        from sheetops.alerts import firing_alerts

        firing = GaugeMetricFamily("sheetops_alerts_firing",
                                   "Alert rules firing now, per rule and job.",
                                   labels=["rule", "job"])
        for alert in firing_alerts(self.store):
            firing.add_metric([alert["rule"], alert["job"]], 1)
        yield firing
        yield GaugeMetricFamily("sheetops_scrape_timestamp_seconds",
                                "When these gauges were read.", value=now)

    def _stages(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Per pipeline stage: depth, lag and dead letters now, records over all passes."""
        labels = ["job", "stage"]
        depth = GaugeMetricFamily("sheetops_stage_queue_depth", "Items (batches) waiting "
                                  "in a pipeline stage's queue.", labels=labels)
        lag = GaugeMetricFamily("sheetops_stage_lag_seconds", "Age of the oldest item "
                                "waiting in a stage's queue (0 when empty).", labels=labels)
        dead = GaugeMetricFamily("sheetops_dead_letters", "Dead letters a stage's queue "
                                 "holds (until replayed).", labels=labels)
        for pipe in pipeline_reads.pipeline_stats(self.store):
            for s in pipe.stages:
                depth.add_metric([s.job, s.stage], s.depth)
                lag.add_metric([s.job, s.stage], s.lag_s or 0.0)
                dead.add_metric([s.job, s.stage], s.dead)
        records = CounterMetricFamily("sheetops_stage_records", "Records a pipeline stage "
                                      "took (in), handed on (out), failed and dead-lettered, "
                                      "over every pass.", labels=[*labels, "outcome"])
        for (job, stage), totals in pipeline_reads.stage_totals(self.store).items():
            for outcome, n in totals.items():
                records.add_metric([job, stage, outcome], n)
        yield from (depth, lag, dead, records)


class ClientsCollector(Collector):
    """The store gauges of every client's store, each series labelled ``client``:
    one family per metric name (never a name twice on the endpoint), clients sorted.
    ``stores`` tells the running clients' stores at each scrape (a client that starts
    later joins; one whose store fails shows ``sheetops_store_up{client=…} 0``);
    ``failed`` names the clients that could not start, which ``sheetops_client_up``
    shows as 0 (each running one as 1), so a client that never started is seen too."""

    def __init__(self, stores: Callable[[], Mapping[str, Store]],
                 failed: Callable[[], Iterable[str]] = tuple) -> None:
        self.stores = stores
        self.failed = failed

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[Metric]:
        running = dict(self.stores())
        up = GaugeMetricFamily("sheetops_client_up", "1 when the client's engine runs, 0 "
                               "while it cannot start (retried).", labels=["client"])
        for client in sorted({*running, *self.failed()}):
            up.add_metric([client], 1 if client in running else 0)
        yield up
        merged: dict[str, Metric] = {}
        for client, store in sorted(running.items()):
            for family in StoreCollector(store).collect():
                out = merged.get(family.name)
                if out is None:
                    out = merged[family.name] = Metric(family.name, family.documentation,
                                                       family.type, family.unit)
                for sample in family.samples:
                    out.add_sample(sample.name, {"client": client, **sample.labels},
                                   sample.value, sample.timestamp)
        yield from merged.values()


def start_metrics_server(port: int, registry: CollectorRegistry | None = None,
                         host: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` on ``host:port`` in a daemon thread (port 0 picks a free one;
    ``server.server_port`` tells which). Returns the server; ``shutdown()`` stops it."""
    server, _thread = start_http_server(port, addr=host, registry=registry or REGISTRY)
    log.info("Prometheus metrics on http://%s:%d/metrics", host, server.server_port)
    return server
