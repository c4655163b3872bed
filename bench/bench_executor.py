"""Throughput of the local executor: no-op runs recorded per second, with hard
timeouts on (every attempt in a killable worker process), next to a plain Python loop
calling the same automation in-process (no isolation, no recording). Also the recording
path alone: a run's four events through the recorder into the store (with their outbox
marks), no executor, so a change to recording shows on a busy machine too.

    python bench/bench_executor.py [--runs N] [--workers W]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from _common import figure, quiet

from sheetops import automation
from sheetops.attempt import run_attempt
from sheetops.config.model import JobSpec, Snapshot
from sheetops.context import AttemptRequest
from sheetops.events import AttemptFinished, RunFinished, RunQueued, RunStarted
from sheetops.executors.local import LocalExecutor
from sheetops.recorder import Recorder
from sheetops.runner import Runner
from sheetops.store import RunStatus, Store


@automation("bench_noop")
def bench_noop(ctx):
    return None


def plain_loop(n: int) -> float:
    request = AttemptRequest("r", "j", "bench_noop", 1, {}, 10)
    t0 = time.perf_counter()
    for _ in range(n):
        run_attempt(request)
    return n / (time.perf_counter() - t0)


def process_pool(n: int, workers: int) -> float:
    """concurrent.futures with the same worker count: isolation, but no deadlines, no
    retries, nothing recorded."""
    from concurrent.futures import ProcessPoolExecutor

    request = AttemptRequest("r", "j", "bench_noop", 1, {}, 10)
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(run_attempt, [request] * 100))  # warm up
        t0 = time.perf_counter()
        for future in [pool.submit(run_attempt, request) for _ in range(n)]:
            future.result()
        return n / (time.perf_counter() - t0)


def recorded(n: int, workers: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        runner = Runner(store, LocalExecutor, workers=workers)
        runner.start()
        specs = [JobSpec(job=f"j{i}", automation="bench_noop", schedule="manual",
                         timezone="UTC", timeout_s=30) for i in range(n)]
        snapshot = Snapshot()
        t0 = time.perf_counter()
        for spec in specs:
            runner.submit(spec, snapshot, "bench")
        runner.wait_idle(600)
        runner.flush()
        elapsed = time.perf_counter() - t0
        runner.stop()
        count = store.count_runs(status="ok")
        store.dispose()
    return n / elapsed, count


def recording_only(n: int, jobs: int = 100, flush_every: int = 2000) -> float:
    """Runs a second through Recorder.record (queued, started, attempt, finished) and one
    Recorder.flush per ``flush_every`` runs, as the runner's flush loop does."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/recording.db")
        recorder = Recorder(store)
        t0 = time.perf_counter()
        for i in range(n):
            run_id, job, now = f"run-{i:08d}", f"j{i % jobs}", time.time()
            recorder.record_many((
                RunQueued(run_id, job, "bench_noop", "bench", now),
                RunStarted(run_id, job, now),
                AttemptFinished(run_id, job, 1, RunStatus.OK, now, now),
                RunFinished(run_id, job, RunStatus.OK, 1, now, now)))
            if i % flush_every == flush_every - 1:
                recorder.flush()
        recorder.flush()
        rate = n / (time.perf_counter() - t0)
        assert store.count_runs(status="ok") == n
        store.dispose()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    quiet()
    baseline = plain_loop(args.runs)
    pool = process_pool(args.runs, args.workers)
    rate, count = recorded(args.runs, args.workers)
    recording = recording_only(args.runs)
    assert count == args.runs, f"only {count} of {args.runs} runs recorded"
    figure("plain_loop_calls_per_s", baseline, "calls/s")
    figure("process_pool_calls_per_s", pool, "calls/s")
    figure("local_executor_recorded_runs_per_s", rate, "runs/s", ">= 3000")
    figure("local_executor_vs_process_pool", rate / pool, "x", ">= 1")
    figure("local_executor_vs_plain_loop", rate / baseline, "x")
    figure("recorder_runs_per_s", recording, "runs/s", ">= 10000")


if __name__ == "__main__":
    main()
