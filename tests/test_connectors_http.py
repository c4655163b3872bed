"""The HTTP connector and the webhook connector against a real loopback server."""

from __future__ import annotations

import time
import traceback

import pytest
from sheetops.connectors import webhook
from sheetops.connectors.http import (
    HttpClient,
    HttpStatusError,
    TransientHttpError,
    parse_retry_after,
    secrets_in,
)

from sheetops.errors import PermanentError, RetryableError
from sheetops.testing.http import HttpServer, Reply
from sheetops.testing.ports import refused_port

FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05}


@pytest.fixture
def server():
    with HttpServer() as srv:
        yield srv


def test_get_json_and_headers_are_sent(server):
    server.json("/items", {"data": [1, 2]})
    with HttpClient(headers={"X-Team": "ops"}, timeout_s=5) as client:
        assert client.get_json(server.url("/items")) == {"data": [1, 2]}
    request = server.requests[0]
    assert request.headers["x-team"] == "ops"
    assert request.headers["user-agent"].startswith("sheetops/")


def test_retries_through_503_then_succeeds(server):
    server.sequence("/flaky", [503, 503, 200], body=[1])
    with HttpClient(attempts=4, **FAST) as client:
        assert client.get(server.url("/flaky")).json() == [1]
    assert server.count("/flaky") == 3


def test_gives_up_after_bounded_attempts_with_retryable_error(server):
    server.sequence("/down", [502])
    with HttpClient(attempts=3, **FAST) as client, \
            pytest.raises(TransientHttpError) as info:
        client.get(server.url("/down"))
    assert isinstance(info.value, RetryableError)
    assert info.value.status == 502
    assert server.count("/down") == 3


def test_404_is_permanent_with_status_and_url_and_not_retried(server):
    with HttpClient(attempts=5, **FAST) as client, pytest.raises(HttpStatusError) as info:
        client.get(server.url("/missing"))
    assert isinstance(info.value, PermanentError)
    assert info.value.status == 404
    assert "404" in str(info.value) and server.url("/missing") in str(info.value)
    assert server.count("/missing") == 1


def test_429_honours_retry_after(server):
    server.add("/limited", Reply(429, {"error": "slow down"}, {"Retry-After": "1"}),
               Reply(200, {"ok": True}))
    started = time.monotonic()
    with HttpClient(attempts=3, **FAST) as client:
        assert client.get_json(server.url("/limited")) == {"ok": True}
    assert time.monotonic() - started >= 0.9
    assert server.count("/limited") == 2


def test_retry_after_longer_than_cap_fails_at_once_for_the_engine_to_retry(server):
    server.add("/later", Reply(503, None, {"Retry-After": "3600"}))
    with HttpClient(attempts=5, max_retry_after_s=5, **FAST) as client, \
            pytest.raises(TransientHttpError) as info:
        client.get(server.url("/later"))
    assert info.value.retry_after == 3600
    assert server.count("/later") == 1


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("7") == 7
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10


def test_connection_refused_is_retried_then_retryable():
    with refused_port() as port, HttpClient(attempts=2, timeout_s=2, **FAST) as client, \
            pytest.raises(TransientHttpError, match="could not connect"):
        client.get(f"http://127.0.0.1:{port}/x")


def test_timeout_is_always_set_and_transient(server):
    server.add("/slow", Reply(200, {"ok": True}, delay_s=1.0))
    with HttpClient(attempts=1, timeout_s=0.2) as client, \
            pytest.raises(TransientHttpError, match="timed out"):
        client.get(server.url("/slow"))
    with pytest.raises(ValueError):
        HttpClient(timeout_s=0)


def test_errors_never_show_credentials(server):
    server.add("/secret", Reply(401, {"error": "bad token sk-live-123456"}))
    headers = {"Authorization": "Bearer sk-live-123456"}
    url = server.url("/secret?api_key=qwerty-987&page=2")
    with HttpClient(headers=headers, secrets=["other-secret-value"], **FAST) as client, \
            pytest.raises(HttpStatusError) as info:
        client.get(url)
    text = str(info.value)
    assert "401" in text and "page=2" in text
    whole = "".join(traceback.format_exception(info.value))
    for secret in ("sk-live-123456", "qwerty-987"):
        assert secret not in text and secret not in whole
    assert server.requests[0].headers["authorization"] == "Bearer sk-live-123456"


def test_secrets_in_finds_passwords_query_keys_and_tokens():
    found = secrets_in("https://u:pw-1234@h/x?token=abc123&q=hello",
                       {"Authorization": "Bearer tok-9876", "Accept": "json"})
    assert {"pw-1234", "abc123", "Bearer tok-9876", "tok-9876"} <= found
    assert "hello" not in found and "json" not in found


def test_webhook_posts_json_to_url_from_environment(server):
    server.json("/hook", {"ok": True}, method="POST")
    env = {"SHEETOPS_WEBHOOK_DEPLOYS": server.url("/hook")}
    assert webhook.post_webhook("deploys", {"job": "x", "status": "failed"},
                                environ=env) == 200
    request = server.requests[0]
    assert request.method == "POST" and request.json() == {"job": "x", "status": "failed"}
    assert request.headers["content-type"] == "application/json"


def test_slack_channel_sends_text_payload(server):
    server.add("/services/T0/B0/xyz", Reply(200, "ok"), method="POST")
    env = {"SHEETOPS_SLACK_OPS_ALERTS": server.url("/services/T0/B0/xyz")}
    assert webhook.send("slack:ops-alerts", "job x failed", environ=env) == 200
    assert server.requests[0].json() == {"text": "job x failed"}


def test_missing_webhook_name_is_a_clear_permanent_error():
    with pytest.raises(PermanentError, match="SHEETOPS_WEBHOOK_NOPE"):
        webhook.post_webhook("nope", {}, environ={})
    with pytest.raises(PermanentError, match="slack:NAME or webhook:NAME"):
        webhook.send("email:ops@example.com", "x", environ={})


def test_webhook_errors_name_the_hook_not_its_url(server):
    url = server.url("/services/T0/B0/very-secret-token")
    server.add("/services/T0/B0/very-secret-token", Reply(403, "invalid_token"),
               method="POST")
    with pytest.raises(PermanentError) as info:
        webhook.post_slack("ops", "hi", environ={"SHEETOPS_SLACK_OPS": url})
    assert "slack:ops" in str(info.value) and "403" in str(info.value)
    assert "very-secret-token" not in str(info.value)
