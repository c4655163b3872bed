"""Stages worked by forked processes (the ``processes`` setting): every record once,
in processes other than the run's, a SIGKILL of the run leaving no process behind and
resuming exactly once, a record that kills its stage process set aside within the
run, and the settings that would break a guarantee refused.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from test_pipelines import (
    CHILD,
    delivered,
    pass_finished,
    run_until_finished,
    write_records,
)

from sheetops import tabs
from sheetops.config import parse_config
from sheetops.errors import PermanentError
from sheetops.pipelines import PipelineError, iterable, pipeline
from sheetops.pipelines import deadletters as dl
from sheetops.pipelines.processes import RunBell
from sheetops.store.queue_sql import Queues

pytestmark = pytest.mark.usefixtures("forget_pipelines")

PIDS = "CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, pid INTEGER)"


def _pid_pipeline(name: str, n: int, processes: int, source=None):
    """tag (forked) → keep (a SQL sink recording each record's key and tagging pid);
    ``source`` (default: ids 0 to ``n`` - 1)."""
    pipe = pipeline(name, key="id", source=source or iterable(
        lambda: ({"id": i} for i in range(n))))

    @pipe.stage(batch_size=50, processes=processes)
    def tag(records):
        time.sleep(0.005)  # a batch keeps its process busy: the other claims the next
        return [{**r, "pid": os.getpid()} for r in records]

    @pipe.sink(batch_size=50, sql=True, processes=processes)
    def keep(records, ctx):
        ctx.connection.exec_driver_sql(PIDS)
        ctx.connection.execute(text("INSERT INTO seen (key, pid) VALUES (:k, :p)"),
                               [{"k": str(r["id"]), "p": r["pid"]} for r in records])

    return pipe


def _seen(url: str) -> list[tuple[str, int]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text("SELECT key, pid FROM seen"))]
    finally:
        engine.dispose()


def test_forked_stages_deliver_every_record_once_from_processes_of_their_own(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    report = _pid_pipeline("forked", 3_000, processes=2).run(url)

    rows = _seen(url)
    assert sorted(int(k) for k, _ in rows) == list(range(3_000))
    pids = {pid for _, pid in rows}
    assert os.getpid() not in pids and len(pids) == 2  # both processes took batches
    assert report.finished and report.records_out == 3_000
    assert report.stages["tag"]["records_in"] == 3_000


def test_a_forked_process_wakes_the_run_through_its_bell():
    rung = threading.Event()
    bell = RunBell(rung.set)
    try:
        pid = os.fork()
        if pid == 0:  # a stage process: rings and ends
            bell.ring()
            os._exit(0)
        assert rung.wait(30)  # the run's process heard it, from another process
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        rung.clear()
        bell.ring()  # its own process may ring too
        assert rung.wait(30)
    finally:
        bell.close()
    bell.ring()  # closed: a late ring is dropped, never raised


def test_the_source_is_read_in_a_stage_process_and_its_error_ends_the_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"

    def rows():
        for i in range(300):
            if i == 250:
                raise PermanentError(f"page 6 failed (read in process {os.getpid()})")
            yield {"id": i}

    pipe = pipeline("failing-source", source=iterable(rows), key="id")
    pipe.stage(lambda records: records, name="keep", batch_size=50, processes=2)
    pipe.sink(lambda records: None, name="drop", batch_size=50, processes=2)
    with pytest.raises(PermanentError, match=r"page 6 failed") as raised:
        pipe.run(url)
    reader = int(re.search(r"process (\d+)", str(raised.value)).group(1))
    assert reader != os.getpid()  # the first stage's process read it, and said why it stopped


def test_the_stage_process_reading_the_source_is_replaced_and_reads_on_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    readers = tmp_path / "readers"

    def rows():
        with readers.open("a") as out:  # each process that starts reading
            out.write(f"{os.getpid()}\n")
        yield from ({"id": i} for i in range(6_000))

    pipe = _pid_pipeline("killed-reader", 6_000, processes=2, source=iterable(rows))
    ran: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: ran.update(report=pipe.run(url)))
    thread.start()
    deadline = time.monotonic() + 60
    while not (readers.exists() and _count_seen(url) >= 300):
        assert thread.is_alive() and time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.01)
    first = int(readers.read_text().split()[0])
    assert first != os.getpid()  # read in a stage process, not in the run's
    os.kill(first, signal.SIGKILL)  # mid-read: the source is far from its end
    thread.join(120)

    report = ran["report"]
    keys = [k for k, _ in _seen(url)]
    assert sorted(map(int, keys)) == list(range(6_000))  # each once (the key is unique)
    assert report.finished and report.records_read == 6_000 and report.dead == 0
    pids = [int(p) for p in readers.read_text().split()]
    assert len(pids) == 2 and os.getpid() not in pids  # a new stage process read on


def _count_seen(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if not conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'seen'"
                                        ).first():
                return 0
            return conn.exec_driver_sql("SELECT count(*) FROM seen").scalar()
    finally:
        engine.dispose()


def test_a_dry_run_works_every_stage_in_its_own_process(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    pipe = pipeline("dry-forked", source=iterable(lambda: ({"id": i} for i in range(20))),
                    key="id")
    pids: set[int] = set()

    @pipe.stage(processes=2)
    def tag(records):
        pids.add(os.getpid())
        return records

    pipe.sink(lambda records: None, name="drop", processes=2)
    report = pipe.run(url, dry_run=True)
    assert report.records_out == 20 and pids == {os.getpid()}


def _processes_of(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def _kill_when_delivered(url: str, path: Path, env: dict[str, str], count: int) -> bool:
    """Run the copy pipeline in a child and SIGKILL it once ``count`` records reached
    its sink (a point inside the run, wherever its speed puts it); whether it was
    killed before it finished."""
    proc = subprocess.Popen([*CHILD, "copy", url, str(path)], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and len(delivered(url)) < count:
        assert time.monotonic() < deadline, "the pipeline did not get going"
        time.sleep(0.005)
    proc.kill()
    return proc.wait() != 0


def test_sigkill_of_a_run_with_forked_stages_leaves_no_process_and_resumes_once(tmp_path):
    rng = random.Random(16)
    env = {"PROCESSES": "2"}
    kills = 0
    for trial in range(5):
        url = f"sqlite:///{tmp_path / f'store{trial}.db'}"
        path = write_records(tmp_path / f"in{trial}.jsonl", 2_000, bad={77})
        killed = _kill_when_delivered(url, path, env, rng.randint(1, 1_900))
        kills += killed
        deadline = time.monotonic() + 30
        while _processes_of(str(path)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_of(str(path)) == [], trial  # no stage process outlives it
        if not pass_finished(url):
            run_until_finished("copy", url, path, env)
        keys = [k for k, _ in delivered(url)]
        assert len(keys) == len(set(keys)) == 1_999, (trial, killed)
        assert [x.key for x in dl.letters(Queues(create_engine(url)), "copy")] == ["77"]
    assert kills >= 4  # the kills landed inside the runs


def test_a_record_that_kills_its_stage_process_is_set_aside_within_the_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    path = write_records(tmp_path / "in.jsonl", 40)
    starts = run_until_finished("killer", url, path, env={"KILL_KEY": "13",
                                                          "PROCESSES": "1"})

    assert starts == 1  # the run's own process lived on and started another
    assert sorted(int(k) for k, _ in delivered(url)) == [i for i in range(40) if i != 13]
    letters = dl.letters(Queues(create_engine(url)), "killer")
    assert [(x.stage, x.key, x.error_type, x.attempts) for x in letters] == [
        ("double", "13", "LeaseExpired", 3)]


def test_a_rate_limit_kept_in_memory_is_refused_for_several_processes(tmp_path, monkeypatch):
    monkeypatch.delenv("SHEETOPS_RATE_LIMIT_STORAGE", raising=False)
    pipe = pipeline("limited-forked", source=[{"id": 1}], key="id")
    pipe.stage(lambda records: records, name="send", rate_limit="10/second", processes=2)
    pipe.sink(lambda records: None, name="drop")
    with pytest.raises(PipelineError, match=r"stage 'send' has rate_limit "
                                            r"'10/second' and processes 2"):
        pipe.run(f"sqlite:///{tmp_path / 'store.db'}")


def test_the_stages_tab_sets_processes_and_names_a_bad_cell():
    pipe = pipeline("tuned-p", source=[], key="id")
    pipe.stage(lambda records: records, name="parse")
    pipe.sink(lambda records: None, name="deliver")
    header = [c.name for c in tabs.STAGE_COLUMNS]
    column = header.index("processes")

    def row(stage: str, processes: str) -> list[str]:
        cells = [""] * len(header)
        cells[0], cells[1], cells[column] = "job-p", stage, processes
        return cells

    snap = parse_config({
        tabs.JOBS: [["job", "automation", "schedule"], ["job-p", "tuned-p", "manual"]],
        tabs.STAGES: [header, row("parse", "2"), row("deliver", "65")],
    }, {"tuned-p"})
    assert snap.stages == {"job-p": {"parse": {"processes": 2}}}
    letter = chr(ord("A") + column)
    assert [str(p) for p in snap.problems if p.tab == tabs.STAGES] == [
        f"Stages!{letter}3: processes must be at most 64, got '65'; the stage keeps the "
        "code's settings"]


def test_a_pipeline_job_forks_its_stages_from_the_sheet_inside_an_executor_worker(
        workbook, tmp_path):
    from test_cli import cli
    from test_pipelines_job import CONTACTS

    from sheetops.testing.http import HttpServer
    from sheetops.testing.smtp import SmtpServer

    http, smtp = HttpServer(), SmtpServer()
    http.start()
    smtp.start()
    try:
        http.json("/contacts", {"items": CONTACTS, "next": None})
        params = {"url": http.url("/contacts"),
                  "smtp": {"host": "127.0.0.1", "port": smtp.port}}
        workbook.jobs({"job": "welcome", "automation": "welcome_contacts",
                       "schedule": "manual", "params": json.dumps(params)})
        workbook.write("Stages", ["job", "stage", "batch_size", "processes", "rate_limit"],
                       [["welcome", "validate", "5", "2", ""],
                        ["welcome", "render_email", "5", "2", ""],
                        ["welcome", "deliver", "5", "1", "50/second"]])
        run = cli("run-job", "welcome", "--sheet", str(workbook.path), cwd=tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "records in/out/failed 25/23/2" in run.stdout
        assert sorted(m["To"] for m in smtp.messages) == sorted(
            c["email"] for c in CONTACTS if c["id"] not in (7, 19))
        assert [r["status"] for r in workbook.records("Runs")] == ["ok"]
        assert sorted(str(e["record_key"]) for e in workbook.records("Errors")) == ["19", "7"]
    finally:
        http.stop()
        smtp.stop()
