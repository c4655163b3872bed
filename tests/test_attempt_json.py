"""The JSON form of an attempt (what a Celery task will carry) round-trips, holds no
secret and no store password, and a worker process running only from that JSON does the
same work: resolves its secrets and reaches the store's delivery notes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import fresh_pg_database

from sheetops import automation
from sheetops.attempt import run_attempt
from sheetops.context import AttemptRequest, AttemptResult, RecordFailure
from sheetops.ratelimit import RateLimitSpec
from sheetops.registry import registry
from sheetops.store import Store
from sheetops.store.deliveries import Deliveries
from sheetops.templates import TemplateSpec
from sheetops.wire import WireFormatError, store_ref

TESTS_DIR = Path(__file__).resolve().parent
PG_URL = "postgresql+psycopg://ops:hunter2-pw@db.example:5432/ops?sslmode=require&password=q-pw"


def _request(**overrides) -> AttemptRequest:
    values = dict(
        run_id="run-7", job="mail-customers", automation="t_probe", attempt=2,
        params={"to": ["a@example.com", "b@example.com"], "token": "secret:WIRE_TOKEN",
                "limits": {"max": 3, "ratio": 0.5, "on": True, "none": None}},
        timeout_s=12.5, dry_run=True,
        template=TemplateSpec("welcome", "Hello {{ name }}", "<p>Hi</p>", "html"),
        rate_limit=RateLimitSpec("smtp", "10/minute", "job"), trigger="manual",
        memory_mb=256, store_url="")
    values.update(overrides)
    return AttemptRequest(**values)


def test_a_request_round_trips_through_json_with_everything_it_carries():
    request = _request()
    text = request.to_json()
    assert json.loads(text)["kind"] == "attempt_request"
    assert AttemptRequest.from_json(text) == request
    bare = AttemptRequest("r", "j", "t_probe", 1, {}, 10)
    assert AttemptRequest.from_json(bare.to_json()) == bare


def test_the_json_holds_secret_references_and_the_store_without_its_password(monkeypatch):
    monkeypatch.setenv("SHEETOPS_SECRETS", "WIRE_TOKEN")
    monkeypatch.setenv("WIRE_TOKEN", "tok-wire-secret-1")
    text = _request(store_url=PG_URL).to_json()
    assert "tok-wire-secret-1" not in text and "secret:WIRE_TOKEN" in text
    assert "hunter2" not in text and "q-pw" not in text
    assert json.loads(text)["store_ref"] == (
        "postgresql+psycopg://ops@db.example:5432/ops?sslmode=require")
    assert store_ref("sqlite:////var/lib/ops.db") == "sqlite:////var/lib/ops.db"


def test_a_worker_takes_the_store_password_from_its_own_environment_only():
    text = _request(store_url=PG_URL).to_json()
    same_store = {"SHEETOPS_STORE_URL": PG_URL}
    other_store = {"SHEETOPS_STORE_URL": "postgresql+psycopg://ops:pw@elsewhere/ops"}
    assert AttemptRequest.from_json(text, same_store).store_url == PG_URL
    assert AttemptRequest.from_json(text, other_store).store_url == store_ref(PG_URL)
    assert AttemptRequest.from_json(text, {}).store_url == store_ref(PG_URL)


def test_a_result_round_trips_through_json_with_its_record_failures():
    def fails(ctx):
        ctx.record_failure("row-3", ValueError("bad address"))
        raise RuntimeError("SMTP refused")

    if "t_wire_fails" not in registry.names():
        automation("t_wire_fails")(fails)
    result = run_attempt(AttemptRequest("r", "j", "t_wire_fails", 1, {}, 10))
    assert not result.ok and result.record_failures == [
        RecordFailure("row-3", "ValueError", "bad address")]
    assert AttemptResult.from_json(result.to_json()) == result


@pytest.mark.parametrize("text, problem", [
    ('{"v": 99, "kind": "attempt_request"}', "version 99"),
    ('{"v": 1, "kind": "attempt_result"}', "expected a attempt_request"),
    ('{"v": 1, "kind": "attempt_request", "run_id": "r"}', "not an attempt request"),
    ("[1]", "not a JSON object"),
    ("{oops", "not JSON"),
])
def test_a_message_that_is_not_a_request_is_one_clear_error(text, problem):
    with pytest.raises(WireFormatError, match=problem):
        AttemptRequest.from_json(text)


def test_params_json_cannot_hold_are_refused_with_their_type():
    with pytest.raises(WireFormatError, match="set"):
        _request(params={"ids": {1, 2}}).to_json()


WORKER = """
import sys
from sheetops.attempt import run_attempt
from sheetops.context import AttemptRequest
from sheetops.registry import registry
from sheetops.store.deliveries import Deliveries
registry.discover(["automations_for_tests"])
request = AttemptRequest.from_json(sys.stdin.read())
print(run_attempt(request).to_json())
"""


def _worker(request_json: str, env: dict[str, str]) -> AttemptResult:
    """A separate process that knows the attempt only from its JSON, like a Celery worker."""
    done = subprocess.run([sys.executable, "-c", WORKER], input=request_json, text=True,
                          capture_output=True, timeout=60, check=True,
                          env={**env, "PYTHONPATH": str(TESTS_DIR)})
    return AttemptResult.from_json(done.stdout.strip().splitlines()[-1])


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, services) -> Iterator[str]:
    """A store URL; on PostgreSQL a fresh database and a URL with a password in it (the
    server trusts loopback, so only where the password travels matters)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ops.sheetops.db'}"
        return
    services.postgres()
    with fresh_pg_database("sheetops_wire", "postgres:pw-only-the-worker-knows") as url:
        yield url


def test_a_worker_process_runs_the_attempt_from_json_alone(store_url: str):
    """Secrets resolve from the worker's environment and deliveries reach the store the
    reference names, so a retry on another worker skips what the first one sent."""
    env = {**os.environ, "SHEETOPS_STORE_URL": store_url, "SHEETOPS_SECRETS": "WIRE_TOKEN",
           "WIRE_TOKEN": "tok-wire-secret-2"}
    Store(store_url).dispose()  # the scheduler made (and migrated) the store before any run
    sent = []
    for attempt in (1, 2):
        request = AttemptRequest("run-9", "wire", "t_wire_deliver", attempt,
                                 {"token": "secret:WIRE_TOKEN", "keys": ["k1", "k2"]}, 30,
                                 store_url=store_url)
        text = request.to_json()
        assert "pw-only-the-worker-knows" not in text and "tok-wire" not in text
        result = _worker(text, env)
        assert result.ok, result.error_message + result.traceback
        assert result.result["token_length"] == len("tok-wire-secret-2")
        sent.append(result.result["sent"])
    assert sent == [["k1", "k2"], []]
    assert Deliveries(store_url, "run-9").done("k2")
