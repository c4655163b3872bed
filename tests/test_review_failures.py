"""Defects found in review: bad input that must give one sentence, not a traceback or a
hang, and worker processes that must not outlive the scheduler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import cli, cli_env, probe, wait_for

from sheetops.config.schedule import ScheduleError, parse_schedule


def _one_error_line(result: subprocess.CompletedProcess, code: int = 2) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize("text", ["every 999999999999999s", "every 99999999d"])
def test_an_absurd_interval_is_a_schedule_problem(text):
    with pytest.raises(ScheduleError, match="too long"):
        parse_schedule(text)


def test_run_with_an_absurd_interval_keeps_the_good_jobs(workbook, tmp_path):
    workbook.jobs(probe("good", "every 1h"), probe("far", "every 99999999d"))
    checked = cli("validate", "--sheet", str(workbook.path), cwd=tmp_path)
    assert checked.returncode == 1 and "Jobs!C3:" in checked.stdout, checked.stdout
    ran = cli("run", "--sheet", str(workbook.path), "--for", "0.5", cwd=tmp_path, timeout=30)
    assert ran.returncode == 0, ran.stderr
    assert "running 1 job(s)" in ran.stdout
    assert "Traceback" not in ran.stderr


def test_a_bad_sheetops_setting_is_one_sentence(tmp_path):
    line = _one_error_line(cli("validate", "--sheet", "ops.xlsx", cwd=tmp_path,
                               SHEETOPS_WORKERS="many"))
    assert "SHEETOPS_WORKERS" in line and "'many'" in line


def test_a_store_url_with_a_bad_port_is_one_sentence_without_the_password(workbook,
                                                                          tmp_path):
    url = "postgresql+psycopg://ops:hunter2@127.0.0.1:notaport/x"
    line = _one_error_line(cli("run", "--sheet", str(workbook.path), "--for", "1",
                               cwd=tmp_path, SHEETOPS_STORE_URL=url))
    assert "store URL" in line and "hunter2" not in line


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[1].startswith("Z"))


def _run_with_two_workers(workbook, tmp_path) -> subprocess.Popen:
    """`sheetops run` with two worker processes and one hourly job, in the background."""
    workbook.jobs(probe("beat", "every 1h"))
    return subprocess.Popen([str(Path(sys.executable).with_name("sheetops")), "run",
                             "--sheet", str(workbook.path), "--workers", "2"],
                            cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_workers_do_not_outlive_a_killed_scheduler(workbook, tmp_path):
    proc = _run_with_two_workers(workbook, tmp_path)
    try:
        workers = wait_for(lambda: len(_children(proc.pid)) >= 2 and _children(proc.pid))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        deadline = time.time() + 5
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.05)
        left = [p for p in workers if _alive(p)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, "worker processes kept running after the scheduler was killed"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_workers_stop_on_sigterm(workbook, tmp_path):
    """multiprocessing stops daemon workers with SIGTERM at exit; a worker that ignores
    it (the CLI's own SIGTERM handler, inherited by fork) hangs the exiting scheduler."""
    proc = _run_with_two_workers(workbook, tmp_path)
    try:
        workers = wait_for(lambda: len(_children(proc.pid)) >= 2 and _children(proc.pid))
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 5
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.05)
        assert not [p for p in workers if _alive(p)]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


# -- secrets in what an automation logs, raises and returns ----------------------------------

def _leaky(ctx):
    token = ctx.params["token"]
    ctx.log.info("calling the API with %s", token)
    ctx.log.warning(f"inline {token} and %s", ctx.secret("REVIEW_OTHER"))
    try:
        raise ValueError(f"bad token {token}")
    except ValueError:
        ctx.log.exception("the API refused")
    if ctx.params.get("fail"):
        raise RuntimeError(f"refused {ctx.secret('REVIEW_OTHER')}")
    return {"echo": token, "nested": {"other": [ctx.secret("REVIEW_OTHER")]}}


def test_secrets_never_reach_logs_results_or_errors(monkeypatch, caplog, root_logging):
    from sheetops.attempt import run_attempt
    from sheetops.context import AttemptRequest
    from sheetops.logs import setup_logging
    from sheetops.registry import automation, registry

    if "t_review_leaky" not in registry.names():
        automation("t_review_leaky")(_leaky)
    monkeypatch.setenv("SHEETOPS_SECRETS", "REVIEW_TOKEN,REVIEW_OTHER")
    monkeypatch.setenv("REVIEW_TOKEN", "tok-very-secret-1")
    monkeypatch.setenv("REVIEW_OTHER", "other-very-secret-2")
    import io

    for fmt in ("text", "json"):
        setup_logging(fmt, "INFO")
        stream = io.StringIO()
        root_logging.handlers[0].setStream(stream)
        for fail in (False, True):
            request = AttemptRequest("r1", "leaky", "t_review_leaky", 1,
                                     {"token": "secret:REVIEW_TOKEN", "fail": fail}, 10)
            result = run_attempt(request)
            seen = (stream.getvalue() + repr(result.result) + result.error_message
                    + result.traceback)
            assert "calling the API with ***" in seen
            assert "very-secret" not in seen, seen
        assert "refused ***" in result.error_message



# -- the docs say what the code does ------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def test_the_spring_forward_rule_in_the_tab_reference_is_what_happens():
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from sheetops.config.schedule import next_fire_times

    berlin = ZoneInfo("Europe/Berlin")
    trigger = parse_schedule("30 2 * * *").trigger(berlin)
    first = next_fire_times(trigger, datetime(2026, 3, 28, 12, tzinfo=UTC), 1)[0]
    assert first.astimezone(UTC).astimezone(berlin).strftime("%Y-%m-%d %H:%M") == (
        "2026-03-29 03:30")
    text = " ".join((ROOT / "config_sheets" / "README.md").read_text().split())
    assert "(02:30 in Europe/Berlin, where clocks go from 02:00 to 03:00, runs at 03:30)" in text


def test_the_status_state_note_names_every_state_the_writer_shows():
    from sheetops import tabs
    from sheetops.store import RunStatus

    note = next(c.note for c in tabs.STATUS_COLUMNS if c.name == "state")
    shown = {"idle", "queued", "running", "disabled", "invalid"} | {
        s.value for s in RunStatus if s not in (RunStatus.RUNNING, RunStatus.QUEUED)}
    assert {s for s in shown if s not in note} == set()
    assert note in (ROOT / "config_sheets" / "README.md").read_text()


def test_status_shows_a_spring_forward_run_at_the_wall_clock_time_it_happens():
    """02:30 does not exist in Berlin on 2026-03-29: the run happens at 03:30 CEST, and the
    Status tab must say so, not '02:30 CET' (a time no clock showed that day)."""
    from datetime import UTC, datetime

    from sheetops.config.model import JobSpec
    from sheetops.scheduler import Scheduler
    from sheetops.status import fmt_dt

    spec = JobSpec("nightly", "heartbeat", "30 2 * * *", "Europe/Berlin")
    times = Scheduler(None).next_run_times(spec, 2, now=datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert [fmt_dt(t) for t in times] == ["2026-03-29 03:30:00 CEST",
                                          "2026-03-30 02:30:00 CEST"]


# -- the lease: losing it and taking it back ---------------------------------------------------

def test_taking_the_lease_back_keeps_own_runs_and_fires_nothing_twice(workbook, tmp_path):
    """A scheduler that lost its lease (another took it while this one was paused) and
    then takes it back must not record its own still-running run as Interrupted, and must
    not replay the fires the other scheduler already ran."""
    from sheetops.engine import Engine, EngineOptions
    from sheetops.leader import Lease
    from sheetops.store import Store

    workbook.jobs(probe("long", "manual", tmp_path / "long", sleep=2.5),
                  probe("tick", "every 1s", tmp_path / "tick"))
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    store = Store(url)
    engine = Engine(workbook.sheet, store,
                    EngineOptions(workers=2, lease_ttl_s=0.6, control_interval_s=0.05))
    engine.start()
    try:
        long_run = engine.scheduler.run_now("long")
        wait_for(lambda: (store.run(long_run) or {}).get("status") == "running")
        other = Lease(Store(url), ttl_s=1.5, holder="elsewhere:1:x")
        store.release_lease("scheduler", engine.lease.holder)  # as if it had expired
        assert other.acquire()
        wait_for(lambda: not engine.is_leader, timeout=5)
        time.sleep(1.2)  # fires of "tick" are due meanwhile: the other scheduler's to run
        store.set_fire_times({"tick": time.time()})  # what the other scheduler noted
        fired_before = engine.scheduler.fired
        other.release()
        wait_for(lambda: engine.is_leader, timeout=5)
        record = wait_for(lambda: (store.run(long_run) or {}).get("status") != "running"
                          and store.run(long_run), timeout=10)
        engine.runner.flush()
        assert record["status"] == "ok", record
        assert [e for e in store.recent_errors(50) if e["error_type"] == "Interrupted"] == []
        assert engine.scheduler.fired - fired_before <= 2  # no replay of the paused fires
        time.sleep(1.5)
        engine.runner.flush()
        fires = [r["scheduled_for"] for r in store.recent_runs(100, "tick")]
        assert len(fires) == len(set(fires)), "a fire time ran twice"
    finally:
        engine.stop()
        store.dispose()


def test_a_sheet_is_opened_by_url_or_key_only_as_the_google_guide_says():
    from sheetops.connectors.sheets import open_sheet

    from sheetops.errors import SheetError

    with pytest.raises(SheetError, match=r"neither an \.xlsx workbook path nor a Google Sheet"):
        open_sheet("Ops config")  # a title
    guide = " ".join((ROOT / "docs" / "google_sheets.md").read_text().split())
    assert "found by title" not in guide
    assert "by its URL or key only (never by title)" in guide
