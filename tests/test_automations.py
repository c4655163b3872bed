"""The shipped automations, run through a real RunContext against real loopback servers."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
import traceback

import pytest
import sheetops.automations.demo
import sheetops.automations.heartbeat
import sheetops.automations.http_get
import sheetops.automations.send_email
from jinja2.exceptions import SecurityError
from sheetops.connectors.email import EmailSender

from sheetops.context import AttemptRequest, RunContext
from sheetops.errors import PermanentError, RetryableError
from sheetops.ratelimit import RateLimiter, RateLimitSpec
from sheetops.registry import registry
from sheetops.templates import TemplateSpec
from sheetops.testing.http import Reply
from sheetops.testing.ports import refused_port
from sheetops.testing.smtp import SmtpServer

TEXT_TEMPLATE = TemplateSpec("welcome", "Hello {{ name }}", "Hi {{ name }}, code {{ code }}.\n")
HTML_TEMPLATE = TemplateSpec("report", "Report for {{ name }}",
                             "<p>Dear {{ name }}, total <b>{{ total }}</b></p>", "html")


def make_ctx(automation: str, params: dict, *, attempt: int = 1, dry_run: bool = False,
             template: TemplateSpec | None = None, rate: str | None = None,
             job: str = "job-1") -> RunContext:
    request = AttemptRequest(
        run_id="run-1", job=job, automation=automation, attempt=attempt, params=params,
        timeout_s=30, dry_run=dry_run, template=template,
        rate_limit=RateLimitSpec(f"limit-{job}", rate, "job") if rate else None)
    return RunContext(request, throttle=RateLimiter().acquire)


@pytest.fixture
def run(run_automation):
    """The plugin's ``run_automation`` with this module's run id, a rate limit given as
    text; returns the context the automation saw and its result."""
    def call(automation: str, params: dict, *, rate: str | None = None, job: str = "job-1",
             **kwargs):
        result = run_automation(automation, params, job=job, run_id="run-1",
                                rate_limit=RateLimitSpec(f"limit-{job}", rate, "job")
                                if rate else None, timeout_s=30, **kwargs)
        return run_automation.last.ctx, result
    return call


@pytest.fixture
def http(sheetops_http):
    return sheetops_http


def test_every_automation_is_registered_with_a_user_facing_description():
    for name in ("http_get", "send_email", "heartbeat", "flaky", "sleep", "always_fails"):
        assert registry.get(name).description, name


# http_get ------------------------------------------------------------------------------

def test_http_get_counts_records_at_json_path(sheetops_http, run_automation):
    sheetops_http.json("/api/items", {"data": {"items": [{"id": 1}, {"id": 2}, {"id": 3}]}})
    url = sheetops_http.url("/api/items")
    assert run_automation("http_get", params={"url": url, "json_path": "data.items"}) == {
        "records_in": 3, "records_out": 3, "status": 200, "url": url}


def test_http_get_throttles_before_each_request(http):
    http.json("/list", [1, 2])
    calls = []
    ctx = make_ctx("http_get", {"url": http.url("/list")}, rate="1/second")
    ctx._throttle = lambda spec, job: calls.append((spec.name, http.count())) or 0.0
    assert registry.get("http_get").fn(ctx)["records_in"] == 2
    assert calls == [("limit-job-1", 0)]


def test_http_get_retries_through_503s(http, run):
    http.sequence("/flaky", [503, 503, 200], body=[1, 2])
    _, result = run("http_get", {"url": http.url("/flaky")})
    assert result["records_in"] == 2 and http.count("/flaky") == 3


def test_http_get_404_is_permanent_and_not_retried(http, run):
    with pytest.raises(PermanentError, match="404"):
        run("http_get", {"url": http.url("/nope")})
    assert http.count("/nope") == 1


def test_http_get_sends_secret_headers_and_never_shows_them(http, monkeypatch, caplog, run):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SHEETOPS_SECRETS", "API_AUTH")
    monkeypatch.setenv("API_AUTH", "Bearer tok-supersecret-42")
    http.add("/private", Reply(403, {"error": "token tok-supersecret-42 revoked"}))
    with pytest.raises(PermanentError) as info:
        run("http_get", {"url": http.url("/private"),
                         "headers": {"Authorization": "secret:API_AUTH"}})
    assert http.requests[0].headers["authorization"] == "Bearer tok-supersecret-42"
    whole = "".join(traceback.format_exception(info.value))
    assert "403" in whole
    assert "tok-supersecret-42" not in whole and "tok-supersecret-42" not in caplog.text


def test_http_get_secret_in_url_is_masked_in_result(http, monkeypatch, run):
    monkeypatch.setenv("API_KEY", "key-abcdef-123")
    http.json("/q", {"rows": []})
    _, result = run("http_get", {"url": http.url("/q?api_key=") + "key-abcdef-123",
                                 "json_path": "rows"})
    assert result["records_in"] == 0 and "key-abcdef-123" not in result["url"]


def test_http_get_explains_a_wrong_json_path(http, run):
    http.json("/obj", {"data": {"items": []}, "meta": {}})
    with pytest.raises(PermanentError, match="lists found at: items"):
        run("http_get", {"url": http.url("/obj"), "json_path": "data"})
    with pytest.raises(PermanentError, match="has no key 'itemz'"):
        run("http_get", {"url": http.url("/obj"), "json_path": "data.itemz"})
    with pytest.raises(PermanentError, match=r"params\.url"):
        run("http_get", {})


def test_http_get_dry_run_still_reads(http, run):
    http.json("/list", [1])
    _, result = run("http_get", {"url": http.url("/list")}, dry_run=True)
    assert result["records_in"] == 1 and http.count("/list") == 1


# send_email ----------------------------------------------------------------------------

def test_send_email_one_text_email_per_recipient(smtp, run):
    params = {"recipients": ["ann@example.com", {"email": "bob@example.com", "name": "Bob"}],
              "vars": {"name": "friend", "code": "X1"}}
    _, result = run("send_email", params, template=TEXT_TEMPLATE)
    assert result == {"records_in": 2, "records_out": 2, "records_failed": 0, "sent": 2}
    messages = {m["To"]: m for m in smtp.wait_for(2)}
    assert messages["ann@example.com"]["Subject"] == "Hello friend"
    assert messages["bob@example.com"]["Subject"] == "Hello Bob"
    assert messages["bob@example.com"].get_content().strip() == "Hi Bob, code X1."
    assert messages["bob@example.com"]["From"] == "sheetops@example.com"
    assert messages["bob@example.com"]["X-Sheetops-Run"] == "run-1"


def test_send_email_through_the_plugin_fixtures(sheetops_smtp, run_automation):
    result = run_automation("send_email", params={"recipients": ["ann@example.com",
                            "refused@example.com"], "vars": {"name": "Ann", "code": 7}},
                            template=TEXT_TEMPLATE)
    assert (result["sent"], result["records_failed"]) == (1, 1)
    assert sheetops_smtp.wait_for(1)[0]["To"] == "ann@example.com"
    assert [f.record_key for f in run_automation.last.record_failures] == [
        "refused@example.com"]


def test_send_email_html_is_escaped_and_has_text_part(smtp, run):
    params = {"recipients": [{"email": "c@example.com", "name": "<Cy & Co>", "total": 7}]}
    run("send_email", params, template=HTML_TEMPLATE)
    (message,) = smtp.wait_for(1)
    html = message.get_body(("html",)).get_content()
    assert "&lt;Cy &amp; Co&gt;" in html and "<b>7</b>" in html
    assert "Dear <Cy & Co>, total 7" in message.get_body(("plain",)).get_content()
    assert message["Subject"] == "Report for <Cy & Co>"


def test_send_email_refused_recipient_is_recorded_and_others_arrive(smtp, run):
    params = {"recipients": ["a@example.com", "refused@example.com", "b@example.com",
                             {"name": "no address"}],
              "vars": {"name": "x", "code": 1}}
    ctx, result = run("send_email", params, template=TEXT_TEMPLATE)
    assert result["records_in"] == 4 and result["records_out"] == 2
    assert result["records_failed"] == 2
    assert sorted(m["To"] for m in smtp.wait_for(2)) == ["a@example.com", "b@example.com"]
    failures = {f.record_key: f for f in ctx.record_failures}
    assert failures["refused@example.com"].error_type == "PermanentError"
    assert "550" in failures["refused@example.com"].message
    assert "recipients[3]" in failures


def test_send_email_missing_variable_fails_only_that_recipient(smtp, run):
    params = {"recipients": [{"email": "a@example.com", "name": "A", "code": 1},
                             {"email": "b@example.com", "name": "B"}]}
    ctx, result = run("send_email", params, template=TEXT_TEMPLATE)
    assert (result["records_out"], result["records_failed"]) == (1, 1)
    assert ctx.record_failures[0].record_key == "b@example.com"
    assert "code" in ctx.record_failures[0].message


def test_send_email_throttles_to_the_rate_limit(smtp, run):
    params = {"recipients": [f"u{n}@example.com" for n in range(5)],
              "vars": {"name": "n", "code": 0}}
    started = time.monotonic()
    _, result = run("send_email", params, template=TEXT_TEMPLATE, rate="2/second",
                    job="throttled")
    assert time.monotonic() - started >= 1.4
    assert result["sent"] == 5 and len(smtp.wait_for(5)) == 5


def test_send_email_dry_run_renders_but_sends_nothing(smtp, run):
    params = {"recipients": ["a@example.com", "b@example.com"],
              "vars": {"name": "n", "code": 0}}
    _, result = run("send_email", params, template=TEXT_TEMPLATE, dry_run=True)
    assert result == {"records_in": 2, "records_out": 2, "records_failed": 0, "sent": 0,
                      "dry_run": True}
    assert smtp.messages == [] and smtp.rcpt_attempts == []


def test_send_email_smtp_password_from_secret_never_logged(monkeypatch, caplog, run):
    caplog.set_level(logging.DEBUG)
    password = "smtp-pass-7788"
    monkeypatch.setenv("SHEETOPS_SECRETS", "SMTP_PASSWORD")
    monkeypatch.setenv("SMTP_PASSWORD", password)
    with SmtpServer(auth=("bot", password)) as server:
        smtp = {"host": "127.0.0.1", "port": server.port, "user": "bot",
                "password": "secret:SMTP_PASSWORD", "sender": "bot@example.com"}
        _, result = run("send_email", {"recipients": ["a@example.com"], "smtp": smtp,
                                       "vars": {"name": "n", "code": 0}},
                        template=TEXT_TEMPLATE)
        assert result["sent"] == 1 and server.logins == ["bot"]
        monkeypatch.setenv("SMTP_PASSWORD", password + "-wrong")
        ctx = make_ctx("send_email", {"recipients": ["a@example.com"], "smtp": smtp,
                                      "vars": {"name": "n", "code": 0}},
                       template=TEXT_TEMPLATE)
        with pytest.raises(PermanentError, match="none of the 1 recipient"):  # nobody got it
            registry.get("send_email").fn(ctx)
    assert "login refused" in ctx.record_failures[0].message
    text = caplog.text + repr(ctx.record_failures)
    assert password not in text


@pytest.fixture
def quick_smtp_retries(monkeypatch):
    monkeypatch.setattr(sheetops.automations.send_email, "EmailSender", functools.partial(
        EmailSender, attempts=2, backoff_initial_s=0.01, backoff_max_s=0.02))


def test_send_email_unreachable_server_before_any_send_is_retryable(quick_smtp_retries, run):
    with refused_port() as port, pytest.raises(RetryableError, match="ConnectionRefused"):
        run("send_email", {"recipients": ["a@example.com"], "vars": {"name": "n", "code": 0},
                           "smtp": {"port": port, "timeout_s": 2}}, template=TEXT_TEMPLATE)


def test_send_email_outage_after_some_sent_records_the_rest_without_raising(
        quick_smtp_retries, run):
    with SmtpServer(defer={"b@example.com": 100}) as server:
        params = {"recipients": ["a@example.com", "b@example.com", "c@example.com"],
                  "vars": {"name": "n", "code": 0},
                  "smtp": {"port": server.port, "sender": "bot@example.com"}}
        ctx, result = run("send_email", params, template=TEXT_TEMPLATE)
        assert [m["To"] for m in server.wait_for(1)] == ["a@example.com"]
    assert (result["sent"], result["records_failed"]) == (1, 2)
    assert [f.record_key for f in ctx.record_failures] == ["b@example.com", "c@example.com"]
    assert all(f.error_type == "RetryableError" for f in ctx.record_failures)


def test_sandboxed_template_cannot_reach_python_internals(smtp, run):
    evil = TemplateSpec("evil", "x", "{{ ''.__class__.__mro__[1].__subclasses__() }}")
    ctx = make_ctx("send_email", {}, template=evil)
    with pytest.raises(SecurityError):
        ctx.render()
    with pytest.raises(PermanentError, match="SecurityError"):
        run("send_email", {"recipients": ["a@example.com"]}, template=evil)
    assert smtp.messages == []


def test_send_email_without_template_is_permanent(smtp, run):
    with pytest.raises(PermanentError, match="no template"):
        run("send_email", {"recipients": ["a@example.com"]})


# heartbeat and demos -------------------------------------------------------------------

def test_heartbeat_is_one_record_with_a_utc_time(run_automation):
    result = run_automation("heartbeat")
    assert result["records_out"] == 1
    beat = dt.datetime.fromisoformat(result["beat"])
    assert abs((dt.datetime.now(dt.UTC) - beat).total_seconds()) < 5


def test_flaky_fails_until_the_configured_attempt(run):
    with pytest.raises(RetryableError, match="attempt 1"):
        run("flaky", {})
    assert run("flaky", {}, attempt=2)[1] == {"records_out": 1, "succeeded_on_attempt": 2}
    with pytest.raises(RetryableError):
        run("flaky", {"succeed_on_attempt": 4}, attempt=3)


def test_sleep_and_always_fails(run):
    started = time.monotonic()
    assert run("sleep", {"seconds": 0.2})[1]["slept_s"] == 0.2
    assert time.monotonic() - started >= 0.2
    with pytest.raises(PermanentError, match=r"params\.seconds"):
        run("sleep", {"seconds": "soon"})
    with pytest.raises(PermanentError, match="boom"):
        run("always_fails", {"message": "boom"})
    with pytest.raises(PermanentError, match="on purpose"):
        run("always_fails", {})


# the pytest plugin, as a user of the installed package gets it ----------------------

USER_TEST = '''
def test_fetch(sheetops_http, run_automation):
    sheetops_http.json("/items", [1, 2, 3])
    assert run_automation("http_get", params={"url": sheetops_http.url("/items")}
                          )["records_in"] == 3


def test_config_and_store(sheetops_workbook, sheetops_store):
    assert sheetops_workbook.exists() and sheetops_store.count_runs() == 0
'''


def test_plugin_is_loaded_by_entry_point_in_a_project_without_conftest(tmp_path):
    import subprocess
    import sys

    (tmp_path / "test_user.py").write_text(USER_TEST)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_user.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
