"""The Celery tier's scaling, in one run, against baselines measured in the same run:

* I/O-bound runs (50 ms each) on 4 Celery worker processes vs 1 (goal >= 3.5x);
* no-op runs recorded per second on the celery executor vs bare Celery doing the same
  no-op tasks with a Redis result backend, on the same 2 worker processes (goal >= 0.8),
  in turns: three rounds of each side, the best of each kept;
* the 3-stage pipeline (CPU-bound stages) on 2 worker processes vs 1 (goal >= 1.6x),
  with the CPU seconds the workers spent on it (what spreading it costs): passes on 1
  worker (the second's consumers stopped) and on 2 in turns, medians of ``--repeat``
  each, after one warm-up pass on both;
* the embedded default (local executor, SQLite) vs Celery with 1 worker on the same
  no-op runs and the same pipeline: what the distributed tier costs.

Needs PostgreSQL (127.0.0.1:5432, trust) and Redis (127.0.0.1:6379, DB 14).

    python bench/bench_scale.py [--full] [--only io|noop|pipeline|embedded ...] [--repeat N]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import figure, quiet

from sheetops.testing.postgres import fresh_pg_database

BENCH = Path(__file__).resolve().parent
SHEETOPS = str(Path(sys.executable).with_name("sheetops"))
CELERY = str(Path(sys.executable).with_name("celery"))
BROKER = "redis://127.0.0.1:6379/14"


def pg_database():
    """A throwaway PostgreSQL database for this run, as a store URL."""
    return fresh_pg_database("bench_scale")


class Workers:
    """Worker processes (each its own process group), stopped on exit."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env, self.folder, self.procs = env, folder, []

    def start(self, args: list[str], name: str, env: dict[str, str] | None = None) -> None:
        log_path = self.folder / f"{name}.log"
        proc = subprocess.Popen(args, env={**self.env, **(env or {})}, cwd=BENCH,
                                stdout=log_path.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        deadline = time.time() + 120
        while " ready." not in log_path.read_text():
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"worker {name} did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)

    def node(self, name: str) -> str:
        """Worker ``name``'s Celery node name, unique to this run (remote control
        reaches every worker on the broker: another run's ``w2`` must not answer)."""
        return f"{name}@{self.env.get('SHEETOPS_CELERY_QUEUE', 'bench')}"

    def sheetops(self, name: str, concurrency: int) -> None:
        self.start([SHEETOPS, "worker", "-c", str(concurrency), "-n", self.node(name)], name)

    def cpu_seconds(self) -> float:
        """CPU seconds the workers' processes (each a process group) used so far."""
        groups, ticks = {proc.pid for proc in self.procs}, 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) in groups:
                    ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs = []


def phase(name: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {name}", file=sys.stderr, flush=True)


def runs_per_s(runner, automation: str, n: int, params: str = "{}") -> float:
    """Submit ``n`` runs of ``automation`` (one job each) and wait for every one."""
    from sheetops.config.model import JobSpec, Snapshot

    tag = uuid.uuid4().hex[:6]
    specs = [JobSpec(job=f"{automation}-{tag}-{i}", automation=automation,
                     schedule="manual", timezone="UTC", timeout_s=30, max_attempts=1,
                     params_json=params) for i in range(n)]
    phase(f"{n} runs of {automation}")
    t0 = time.perf_counter()
    runner.submit_many(specs, Snapshot(), "bench", [None])
    if not runner.wait_idle(600):
        raise SystemExit(f"{automation}: runs did not finish")
    return n / (time.perf_counter() - t0)


def pipeline_seconds(runner, store, records: int, workers: Workers | None = None,
                     cpu: list[float] | None = None) -> float:
    """Seconds of one pass of the 3-stage pipeline over ``records``; the CPU seconds
    the ``workers`` used meanwhile are appended to ``cpu``."""
    from sheetops.config.model import JobSpec, Snapshot

    spec = JobSpec(job=f"pipe-{uuid.uuid4().hex[:6]}", automation="scale_pipe",
                   schedule="manual", timezone="UTC", timeout_s=300, max_attempts=1,
                   params_json=f'{{"n": {records}}}')
    phase(f"pipeline of {records}")
    cpu0 = workers.cpu_seconds() if workers else 0.0
    t0 = time.perf_counter()
    run_id = runner.submit(spec, Snapshot(), "bench")
    runner.wait(run_id, 600)
    elapsed = time.perf_counter() - t0
    deadline = time.time() + 30  # the local executor's recorder flushes a moment later
    while (run := store.run(run_id))["status"] in ("queued", "running") and (
            time.time() < deadline):
        time.sleep(0.05)
    if workers is not None and cpu is not None:
        cpu.append(workers.cpu_seconds() - cpu0)
    if run["status"] != "ok" or run["records_out"] != records:
        raise SystemExit(f"pipeline run {run['status']}: {run['error_message']}")
    return elapsed


class Paused:
    """Stop and restart one sheetops worker's consumers (Celery remote control), so
    passes on 1 and on 2 workers can be measured in turns with both processes up."""

    def __init__(self, node: str) -> None:
        from celery import Celery

        self.name = node
        self.control = Celery("bench-control", broker=BROKER).control
        replies = None
        for _ in range(5):  # a worker just started may not answer at once
            replies = self.control.inspect(destination=[node], timeout=5).active_queues()
            if replies and node in replies:
                break
        if not replies or node not in replies:
            raise SystemExit(f"worker {node} did not answer")
        self.queues = [(q["name"], q["exchange"]["name"], q["routing_key"])
                       for q in replies[self.name]]

    def __enter__(self) -> Paused:
        for name, _, _ in self.queues:
            self._ask(self.control.cancel_consumer, name)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, exchange, key in self.queues:
            self._ask(self.control.add_consumer, name, exchange=exchange, routing_key=key)

    def _ask(self, command, queue: str, **options) -> None:
        if not command(queue, destination=[self.name], reply=True, timeout=10, **options):
            raise SystemExit(f"worker {self.name} did not answer")


def pipeline_in_turns(runner, store, records: int, workers: Workers, repeat: int,
                      cpu_1: list[float], cpu_2: list[float]) -> tuple[list[float], list[float]]:
    """Passes of the pipeline on 1 worker (w2's consumers stopped) and on 2, in turns
    (``repeat`` each), after one pass on both that warms them: a burst of load from
    elsewhere on the machine then weighs on both sides alike, as in
    :func:`noop_vs_bare`."""
    pipeline_seconds(runner, store, records)  # warm-up, not counted
    paused = Paused(workers.node("w2"))
    one: list[float] = []
    two: list[float] = []
    for _ in range(repeat):
        with paused:
            one.append(pipeline_seconds(runner, store, records, workers, cpu_1))
        two.append(pipeline_seconds(runner, store, records, workers, cpu_2))
    return one, two


def celery_runner(store, queue: str):
    from sheetops.executors.celery import CeleryExecutor
    from sheetops.executors.celery_config import CeleryConfig
    from sheetops.runner import Runner

    config = CeleryConfig(BROKER, queue=queue, poll_interval_s=0.05)
    runner = Runner(store, functools.partial(CeleryExecutor, config=config),
                    flush_interval_s=0.05)
    runner.start()
    return runner


class BareCelery:
    """Bare Celery: no-op tasks with a Redis result backend on 2 worker processes."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        queue = f"bare{uuid.uuid4().hex[:6]}"
        bare_env = {"BARE_QUEUE": queue, "BARE_BROKER": BROKER, "BARE_BACKEND": BROKER}
        os.environ.update(bare_env)
        sys.path.insert(0, str(BENCH))
        from _scale_automations import bare_app

        self.workers = Workers(env, folder)
        self.workers.start([CELERY, "-A", "_scale_automations", "worker", "-c", "2", "-Q",
                            queue, "--without-gossip", "--without-mingle",
                            "--without-heartbeat", "-l", "INFO", "-n", f"bare@{queue}"],
                           "bare", bare_env)
        self.noop = bare_app().tasks["bare.noop"]
        [r.get(timeout=60) for r in [self.noop.delay() for _ in range(50)]]  # warm up

    def per_s(self, n: int) -> float:
        phase(f"{n} bare Celery tasks")
        t0 = time.perf_counter()
        results = [self.noop.delay() for _ in range(n)]
        for result in results:
            result.get(timeout=600)
        return n / (time.perf_counter() - t0)

    def stop(self) -> None:
        self.workers.stop()


def noop_vs_bare(runner, env: dict[str, str], folder: Path, n: int,
                 rounds: int = 3) -> tuple[float, float]:
    """Recorded no-op runs per second on the celery executor and bare Celery tasks per
    second, measured in turns (``rounds`` each, the best of each side kept), so a burst
    of load from elsewhere on the machine weighs on both sides alike."""
    bare = BareCelery(env, folder)
    try:
        best_runs = best_bare = 0.0
        for _ in range(rounds):
            best_runs = max(best_runs, runs_per_s(runner, "scale_noop", n))
            best_bare = max(best_bare, bare.per_s(n))
        return best_runs, best_bare
    finally:
        bare.stop()


def embedded(n: int, records: int) -> tuple[float, float]:
    """The embedded default (local executor, SQLite): no-op runs per second, and the
    seconds of the 3-stage pipeline over ``records``."""
    from sheetops.executors.local import LocalExecutor
    from sheetops.runner import Runner
    from sheetops.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/embedded.db")
        runner = Runner(store, LocalExecutor, workers=1, flush_interval_s=0.05)
        runner.start()
        try:
            return (runs_per_s(runner, "scale_noop", n),
                    pipeline_seconds(runner, store, records))
        finally:
            runner.stop()
            store.dispose()


PARTS = ("io", "noop", "pipeline", "embedded")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="full size (slower)")
    parser.add_argument("--only", choices=PARTS, action="append",
                        help="print only this part's figures (repeatable; default: all)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="passes of the pipeline on 1 and on 2 workers (medians printed)")
    args = parser.parse_args()
    parts = set(args.only or PARTS)
    scale = 4 if args.full else 1
    quiet()
    sys.path.insert(0, str(BENCH))
    os.environ.setdefault("SHEETOPS_AUTOMATIONS", "_scale_automations")
    from sheetops.registry import registry

    registry.discover(["_scale_automations"])
    from sheetops.store import Store

    queue = f"scale{uuid.uuid4().hex[:6]}"
    pipes: list[tuple[float, float]] = []
    cpu_1: list[float] = []
    cpu_2: list[float] = []
    with pg_database() as url, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {**os.environ, "SHEETOPS_STORE_URL": url, "SHEETOPS_BROKER_URL": BROKER,
               "SHEETOPS_EXECUTOR": "celery", "SHEETOPS_CELERY_QUEUE": queue,
               "SHEETOPS_AUTOMATIONS": "_scale_automations", "SHEETOPS_LOG_LEVEL": "INFO",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH),
                                                           os.environ.get("PYTHONPATH")]))}
        store = Store(url)
        runner = celery_runner(store, queue)
        workers = Workers(env, folder)
        try:
            workers.sheetops("w1", 1)
            runs_per_s(runner, "scale_noop", 20)  # warm up
            if "io" in parts:
                io_1 = runs_per_s(runner, "scale_sleep", 40 * scale)
            if parts & {"noop", "embedded"}:
                noop_1 = runs_per_s(runner, "scale_noop", 300 * scale)
            if "embedded" in parts and "pipeline" not in parts:
                pipe_1 = [pipeline_seconds(runner, store, 3000 * scale, workers, cpu_1)
                          for _ in range(args.repeat)]
            if parts & {"pipeline", "noop", "io"}:
                workers.sheetops("w2", 1)
            if "pipeline" in parts:  # 1 and 2 workers in turns
                pipe_1, pipe_2 = pipeline_in_turns(runner, store, 3000 * scale, workers,
                                                   args.repeat, cpu_1, cpu_2)
                pipes = list(zip(pipe_1, pipe_2, strict=True))
                phase("pipeline seconds, 1 worker: " + ", ".join(f"{p:.2f}" for p in pipe_1)
                      + "; 2 workers: " + ", ".join(f"{p:.2f}" for p in pipe_2))
            if "noop" in parts:  # in turns with bare Celery on the same 2 workers
                noop_2, bare = noop_vs_bare(runner, env, folder, 600 * scale)
            if "io" in parts:
                workers.sheetops("w3", 2)
                io_4 = runs_per_s(runner, "scale_sleep", 160 * scale)
        finally:
            runner.stop()
            workers.stop()
            store.dispose()
    if "embedded" in parts:
        embedded_noop, embedded_pipe = embedded(300 * scale, 3000 * scale)
    if "io" in parts:
        figure("celery_io_runs_per_s_1_worker", io_1, "runs/s")
        figure("celery_io_runs_per_s_4_workers", io_4, "runs/s")
        figure("celery_io_4_vs_1_workers", io_4 / io_1, "x", ">= 3.5")
    if "noop" in parts:
        figure("celery_noop_recorded_runs_per_s_2_workers", noop_2, "runs/s")
        figure("bare_celery_noop_tasks_per_s_2_workers", bare, "tasks/s")
        figure("celery_executor_vs_bare_celery", noop_2 / bare, "x", ">= 0.8")
    if pipes:  # the medians of --repeat passes each (a shared machine's load varies)
        one = statistics.median(p for p, _ in pipes)
        two = statistics.median(p for _, p in pipes)
        figure("celery_pipeline_s_1_worker", one, "s")
        figure("celery_pipeline_s_2_workers", two, "s")
        figure("celery_pipeline_2_vs_1_workers", one / two, "x", ">= 1.6")
        # what spreading the pass over two processes costs in CPU (load-independent)
        figure("celery_pipeline_worker_cpu_s_1_worker", statistics.median(cpu_1), "s")
        figure("celery_pipeline_worker_cpu_s_2_workers", statistics.median(cpu_2), "s")
    if "embedded" in parts:
        figure("embedded_noop_runs_per_s_1_worker", embedded_noop, "runs/s")
        figure("celery_noop_runs_per_s_1_worker", noop_1, "runs/s")
        figure("celery_1_worker_vs_embedded", noop_1 / embedded_noop, "x")
        figure("embedded_pipeline_s_1_worker", embedded_pipe, "s")
        figure("celery_1_worker_vs_embedded_pipeline",
               embedded_pipe / statistics.median(pipe_1), "x")

if __name__ == "__main__":
    main()
