"""The SMTP connector against a real aiosmtpd server on loopback."""

from __future__ import annotations

import logging
import traceback

import pytest
from pydantic import SecretStr
from sheetops.connectors.email import (
    EmailSender,
    SmtpConfig,
    TransientSmtpError,
    build_message,
    html_to_text,
    send_email,
)

from sheetops.errors import PermanentError, RetryableError
from sheetops.settings import get_settings
from sheetops.templates import Rendered
from sheetops.testing.ports import refused_port
from sheetops.testing.smtp import SmtpServer

FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05}
TEXT = Rendered("Hello Ana", "Your report is ready.\n", "text")
HTML = Rendered("Report", "<h1>Hi Ana</h1><p>Total: <b>3</b> &amp; more</p>", "html")


def config_for(server: SmtpServer, **overrides) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=server.port, sender="bot@example.com",
                      timeout_s=5, **overrides)


def test_text_message_arrives_with_envelope_and_headers():
    with SmtpServer() as server:
        message = build_message(TEXT, to="ana@example.com", sender="bot@example.com",
                                reply_to="ops@example.com", headers={"X-Sheetops-Job": "j"})
        send_email(config_for(server), message)
        (got,) = server.wait_for(1)
        delivery = server.deliveries[0]
    assert delivery.mail_from == "bot@example.com"
    assert delivery.rcpt_tos == ("ana@example.com",)
    assert got["Subject"] == "Hello Ana" and got["Reply-To"] == "ops@example.com"
    assert got["X-Sheetops-Job"] == "j" and got["Message-ID"]
    assert got.get_content_type() == "text/plain"
    assert got.get_content().replace("\r\n", "\n") == "Your report is ready.\n"


def test_html_message_has_text_alternative():
    with SmtpServer() as server:
        send_email(config_for(server), build_message(HTML, to="a@example.com",
                                                     sender="bot@example.com"))
        (got,) = server.wait_for(1)
    assert got.get_content_type() == "multipart/alternative"
    html = got.get_body(("html",)).get_content()
    text = got.get_body(("plain",)).get_content()
    assert "<b>3</b>" in html
    assert "Hi Ana" in text and "Total: 3 & more" in text and "<" not in text


def test_html_to_text_drops_tags_scripts_and_keeps_lines():
    assert html_to_text("<style>x{}</style><p>a</p><p>b<br>c</p>") == "a\nb\nc\n"


def test_one_connection_for_many_messages():
    with SmtpServer() as server, EmailSender(config_for(server)) as sender:
        for n in range(3):
            sender.send(build_message(TEXT, to=f"u{n}@example.com", sender="b@example.com"))
        assert len(server.wait_for(3)) == 3


def test_refused_recipient_is_permanent_and_connection_stays_usable():
    with SmtpServer(refuse={"gone@example.com"}) as server, \
            EmailSender(config_for(server), attempts=3, **FAST) as sender:
        with pytest.raises(PermanentError, match="550") as info:
            sender.send(build_message(TEXT, to="gone@example.com", sender="b@example.com"))
        assert not isinstance(info.value, RetryableError)
        sender.send(build_message(TEXT, to="ok@example.com", sender="b@example.com"))
        assert [m["To"] for m in server.wait_for(1)] == ["ok@example.com"]
        assert server.rcpt_attempts.count("gone@example.com") == 1


def test_temporary_451_is_retried_until_accepted():
    with SmtpServer(defer={"busy@example.com": 2}) as server:
        send_email(config_for(server), build_message(
            TEXT, to="busy@example.com", sender="b@example.com"), attempts=4, **FAST)
        assert len(server.wait_for(1)) == 1
        assert server.rcpt_attempts.count("busy@example.com") == 3


def test_temporary_failures_are_bounded_and_retryable():
    with SmtpServer(defer={"busy@example.com": 10}) as server, \
            pytest.raises(TransientSmtpError, match="451"):
        send_email(config_for(server), build_message(
            TEXT, to="busy@example.com", sender="b@example.com"), attempts=2, **FAST)


def test_connection_refused_is_retryable():
    with refused_port() as port, pytest.raises(RetryableError, match="ConnectionRefused"):
        config = SmtpConfig(host="127.0.0.1", port=port, timeout_s=2)
        send_email(config, build_message(TEXT, to="a@example.com", sender="b@example.com"),
                   attempts=2, **FAST)


def test_login_and_password_never_in_errors_or_logs(caplog):
    caplog.set_level(logging.DEBUG)
    password = "pa55-w0rd-xyz"
    with SmtpServer(auth=("bot", password)) as server:
        good = config_for(server, user="bot", password=SecretStr(password))
        send_email(good, build_message(TEXT, to="a@example.com", sender="b@example.com"))
        assert server.logins == ["bot"] and len(server.wait_for(1)) == 1
        bad = config_for(server, user="bot", password=SecretStr("wrong-" + password))
        with pytest.raises(PermanentError, match="login refused") as info:
            send_email(bad, build_message(TEXT, to="a@example.com", sender="b@example.com"),
                       attempts=3, **FAST)
    whole = "".join(traceback.format_exception(info.value))
    assert password not in whole and password not in caplog.text
    assert password not in repr(good) and password not in str(good)


def test_starttls_then_login_with_a_trusted_certificate():
    with SmtpServer(auth=("bot", "secret-1"), starttls=True) as server:
        config = config_for(server, user="bot", password=SecretStr("secret-1"),
                            starttls=True, ssl_context=server.client_ssl_context())
        send_email(config, build_message(TEXT, to="a@example.com", sender="b@example.com"))
        assert len(server.wait_for(1)) == 1 and server.logins == ["bot"]


def test_untrusted_certificate_is_permanent():
    with SmtpServer(starttls=True) as server, \
            pytest.raises(PermanentError, match="certificate is not trusted"):
        send_email(config_for(server, starttls=True),
                   build_message(TEXT, to="a@example.com", sender="b@example.com"))


def test_config_from_settings_with_overrides(monkeypatch):
    monkeypatch.setenv("SHEETOPS_SMTP_HOST", "mail.internal")
    monkeypatch.setenv("SHEETOPS_SMTP_PORT", "2525")
    monkeypatch.setenv("SHEETOPS_SMTP_PASSWORD", "from-env-secret")
    get_settings.cache_clear()
    try:
        config = SmtpConfig.from_settings(port="587", starttls="true", user="u")
    finally:
        get_settings.cache_clear()
    assert (config.host, config.port, config.starttls, config.user) == (
        "mail.internal", 587, True, "u")
    assert config.password.get_secret_value() == "from-env-secret"
    assert "from-env-secret" not in repr(config)
    with pytest.raises(PermanentError, match="unknown SMTP setting"):
        config.with_overrides(hostname="x")


def test_server_requiring_login_refuses_anonymous_senders_permanently():
    with SmtpServer(auth=("bot", "secret-1")) as server, \
            pytest.raises(PermanentError, match="530"):
        send_email(config_for(server), build_message(TEXT, to="a@example.com",
                                                     sender="b@example.com"))
