"""Logs of real runs: one line per failure with job, run id, attempt, stage and record
key; JSON when SHEETOPS_LOG_FORMAT=json."""

from __future__ import annotations

import functools
import io
import json
import logging
from pathlib import Path

import pytest

from sheetops.config.model import JobSpec, Snapshot
from sheetops.executors.local import LocalExecutor
from sheetops.hooks import Hooks
from sheetops.logs import JsonFormatter, LoggingHook, TextFormatter, setup_logging
from sheetops.runner import Runner
from sheetops.settings import get_settings
from sheetops.store import Store

pytestmark = pytest.mark.usefixtures("test_automations")




def run_jobs(tmp_path: Path, *jobs: JobSpec) -> list[str]:
    store = Store(f"sqlite:///{tmp_path / 'logs.db'}")
    runner = Runner(store, functools.partial(LocalExecutor), Hooks([LoggingHook()]),
                    workers=2)
    snapshot = Snapshot(jobs={j.job: j for j in jobs})
    runner.start()
    try:
        ids = [runner.submit(j, snapshot, "manual") for j in jobs]
        assert runner.wait_idle(30)
    finally:
        runner.stop()
        store.dispose()
    return ids


def probe(job: str, params: dict, **kwargs) -> JobSpec:
    return JobSpec(job=job, automation="t_probe", schedule="manual", timezone="UTC",
                   params_json=json.dumps(params), backoff_initial_s=0.05,
                   backoff_max_s=0.1, **kwargs)


def test_json_lines_carry_the_failure_context(tmp_path, monkeypatch, capsys, root_logging):
    monkeypatch.setenv("SHEETOPS_LOG_FORMAT", "json")
    get_settings.cache_clear()
    settings = get_settings()
    setup_logging(settings.log_format, settings.log_level)
    failing, records = run_jobs(
        tmp_path,
        probe("l_failing", {"succeed_on": 9, "message": "api said no"}, max_attempts=2),
        probe("l_records", {"records": 3, "bad_records": ["row-7", "row-9"]}))

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()
             if line.strip()]
    assert lines, "nothing was logged"
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    about = [line for line in lines if line.get("run_id") == failing]
    retry = [line for line in about if line["attempt"] == 1]
    final = [line for line in about if line["attempt"] == 2]
    assert len(retry) == 1 and "retrying" in retry[0]["message"]
    assert retry[0]["job"] == "l_failing" and retry[0]["stage"] == "run"
    assert len(final) == 1
    assert final[0]["level"] == "warning" and final[0]["stage"] == "run"
    assert final[0]["error_type"] == "RuntimeError"
    assert "failed after 2 attempt(s)" in final[0]["message"]
    assert "api said no" in final[0]["message"]

    bad = [line for line in lines if line.get("run_id") == records and "record_key" in line]
    assert sorted(line["record_key"] for line in bad) == ["row-7", "row-9"]
    assert all(line["job"] == "l_records" and line["attempt"] == 1 and
               line["stage"] == "run" and line["error_type"] == "ValueError" for line in bad)


def test_text_lines_add_the_fields_the_message_does_not_already_say():
    record = logging.LogRecord("sheetops.runs", logging.WARNING, __file__, 1,
                               "job %s failed", ("sync",), None)
    record.job, record.run_id, record.attempt = "sync", "abc123", 3
    record.stage, record.record_key, record.error_type = "enrich", "row-4", "KeyError"
    line = TextFormatter().format(record)
    assert line.endswith("job sync failed [run_id=abc123 attempt=3 stage=enrich "
                         "record_key=row-4 error_type=KeyError]")
    payload = json.loads(JsonFormatter().format(record))
    assert payload["record_key"] == "row-4" and payload["attempt"] == 3


def test_many_failed_records_are_capped_with_a_summary_line(tmp_path):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("sheetops.test_logs_cap")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    from sheetops.context import AttemptResult, RecordFailure
    from sheetops.hooks import RunInfo

    hook = LoggingHook(logger, max_record_lines=3)
    run = RunInfo("r1", "bulk", "t_probe", "manual", None, 0.0)
    hook.on_attempt_end(run, AttemptResult(
        "r1", "bulk", 1, 0.0, 1.0, True,
        record_failures=[RecordFailure(f"k{i}", "ValueError", "bad") for i in range(10)]))
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [x.get("record_key") for x in lines] == ["k0", "k1", "k2", None]
    assert "7 more failed records" in lines[-1]["message"]


# -- secrets in what an automation logs, raises and returns ------------------------------

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
