"""Benchmark: the dashboard's Overview queries on a large SQLite store.

Fills a store with N runs (default 200,000; ``--full`` for 1,000,000) across ~200 jobs
over 30 days, with failures and timeouts, builds the hourly/daily rollups (as the
engine's status loop keeps them), then times every query the Overview page makes
(``sheetops.dashboard.queries.overview``) for each window the page offers, against a
naive baseline that computes the same numbers by loading the window's runs into pandas.
Windows up to 24 h are exact SQL; longer ones read the rollups. Prints ``figure:``
lines: ``overview_query_s_<window>`` per window and ``overview_speedup_vs_naive``
(at ``--window``, default 30d).

    python bench/bench_dashboard.py            # 200k runs, < 2 minutes
    python bench/bench_dashboard.py --full     # 1M runs
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

from sheetops.dashboard import queries as q
from sheetops.store import Batch, Store
from sheetops.store import schema as t

DAY = 86400.0


def fill(store: Store, n_runs: int, n_jobs: int = 200, days: int = 30,
         now: float | None = None, seed: int = 7) -> float:
    """Insert ``n_runs`` finished runs (plus a few running) spread over ``days``; returns
    ``now``. Fast path: one executemany on the raw DBAPI connection."""
    now = now or time.time()
    rng = random.Random(seed)
    jobs = [f"job-{i:03d}" for i in range(n_jobs)]
    weights = [1.0 + (i % 10) for i in range(n_jobs)]
    median = {j: 0.2 * (1 + (i % 25)) for i, j in enumerate(jobs)}
    fail_p = {j: (0.02 if i % 7 else 0.25) for i, j in enumerate(jobs)}
    cols = ["id", "job", "trigger", "scheduled_for", "started_at", "finished_at", "status",
            "attempts", "records_in", "records_out", "records_failed", "duration_s",
            "result", "error_type", "error_message", "dry_run", "requested_by"]
    sql = f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    span = days * DAY
    chosen = rng.choices(jobs, weights=weights, k=n_runs)
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        batch = []
        for i, job in enumerate(chosen):
            start = now - span + span * (i + rng.random()) / n_runs
            dur = median[job] * math.exp(rng.gauss(0, 0.6))
            r = rng.random()
            if r < fail_p[job]:
                status, err, att = "failed", "HTTPError", 3
            elif r < fail_p[job] + 0.004:
                status, err, att, dur = "timeout", "Timeout", 1, 600.0
            else:
                status, err, att = "ok", "", 1
            rin = rng.randint(0, 500)
            rfail = rng.randint(1, 5) if status == "failed" else 0
            batch.append((f"r{i:08d}", job, "schedule", start, start, start + dur, status, att,
                          rin, rin - rfail if rin >= rfail else 0, rfail, dur, "{}", err,
                          "boom" if err else "", 0, ""))
            if len(batch) >= 50_000:
                cur.executemany(sql, batch)
                batch.clear()
        for k in range(3):
            batch.append((f"run-live-{k}", jobs[k], "schedule", now - 5, now - 5, None,
                          "running", 1, 0, 0, 0, None, "{}", "", "", 0, ""))
        cur.executemany(sql, batch)
        raw.commit()
    finally:
        raw.close()
    store.set_gauges({"queue_depth:fetch": 12, "queue_depth:enrich": 3, "running": 3,
                      "last_refresh_at": now - 20, "last_refresh_ok": 1})
    return now


def naive_overview(store: Store, window_s: float, now: float) -> dict:
    """The same per-job numbers the Overview shows, computed the obvious way: load the
    window's runs into pandas and aggregate there."""
    with store.engine.connect() as conn:
        df = pd.read_sql(t.runs.select().where(t.runs.c.started_at >= now - window_s), conn)
    fin = df[df.status.isin(["ok", "failed", "timeout"])]
    per_job = fin.groupby("job").agg(
        runs=("id", "size"), ok=("status", lambda s: (s == "ok").sum()),
        p50=("duration_s", lambda s: s.quantile(0.5)),
        p95=("duration_s", lambda s: s.quantile(0.95)))
    buckets = fin.groupby((fin.started_at // 3600).astype(int)).agg(
        runs=("id", "size"), failed=("status", lambda s: (s != "ok").sum()))
    running = int((df.status == "running").sum())
    return {"per_job": per_job, "buckets": buckets, "running": running,
            "total_p50": fin.duration_s.quantile(0.5), "total_p95": fin.duration_s.quantile(0.95)}


def _time(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1,000,000 runs")
    parser.add_argument("--runs", type=int, default=0, help="override the number of runs")
    parser.add_argument("--window", default="30d",
                        help="window of the speedup figure: 1h, 6h, 24h, 7d or 30d "
                             "(default 30d)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    n = args.runs or (1_000_000 if args.full else 200_000)
    q.parse_window(args.window)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        t0 = time.perf_counter()
        now = fill(store, n)
        t_fill = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.analyze()  # the engine's hourly housekeeping
        t_index = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.rollups.refresh(now)
        t_rollup = time.perf_counter() - t0
        print(f"filled {n:,} runs over 30 days, 200 jobs in {t_fill:.1f} s; "
              f"planner statistics in {t_index:.1f} s; rollups built in {t_rollup:.1f} s")
        # what the status loop does every few seconds: a few new runs, then a refresh
        store.record(Batch(new_runs=[{
            "id": f"new-{k}", "job": "job-001", "trigger": "schedule", "scheduled_for": now,
            "started_at": now - 1 + k / 10, "finished_at": now, "status": "ok",
            "attempts": 1, "duration_s": 0.5, "result": "{}"} for k in range(5)]))
        t_incr = _time(lambda: store.rollups.refresh(), args.repeat)
        q.overview(store, DAY, now=now)  # warm the page cache like a second render
        rows = []
        for label, w in q.WINDOWS.items():
            fast = _time(lambda w=w: q.overview(store, w, now=now), args.repeat)
            naive = _time(lambda w=w: naive_overview(store, w, now), 1)
            rows.append((label, fast, naive))
            kind = "rollups" if q.uses_rollups(w) else "exact"
            print(f"  window {label:>3} ({kind:>7}): overview queries {fast:.3f} s, naive "
                  f"pandas {naive:.3f} s, {naive / fast:.1f}x")
        for label, fast, _ in rows:
            print(f"figure: overview_query_s_{label} = {fast:.3f} s (goal <= 1) "
                  f"[{n:,} runs]")
        fast, naive = next((f, nv) for label, f, nv in rows if label == args.window)
        print(f"figure: overview_speedup_vs_naive = {naive / fast:.1f} x (goal > 1) "
              f"[window {args.window}]")
        print(f"figure: rollup_refresh_incremental_s = {t_incr:.3f} s [status loop, "
              f"{n:,} runs]")
        store.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
