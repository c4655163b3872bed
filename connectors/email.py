"""Send email over SMTP (``smtplib``), classifying every failure as retry or give up.

- :class:`SmtpConfig` comes from the ``SHEETOPS_SMTP_*`` settings (a job may override
  fields); its password is a ``SecretStr`` and is never logged or put in an error.
- :func:`build_message` turns a rendered template into an ``EmailMessage``: plain text,
  or ``multipart/alternative`` with a text part derived from the HTML.
- :class:`EmailSender` keeps one connection for many messages (STARTTLS and login when
  configured) and retries temporary failures — ``4xx`` replies, refused or dropped
  connections, timeouts — a bounded number of times, reconnecting each time. When they
  run out it raises a ``RetryableError``. ``5xx`` replies (a refused recipient, a bad
  login, a rejected message) and certificate failures raise ``PermanentError``.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from pydantic import SecretStr

from sheetops.context import mask
from sheetops.errors import PermanentError, RetryableError
from sheetops.retry import call_policy
from sheetops.settings import Settings, get_settings
from sheetops.templates import Rendered, html_to_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to send. ``ssl_context`` verifies the server on STARTTLS
    (default: the system's trust store)."""

    host: str = "127.0.0.1"
    port: int = 25
    user: str = ""
    password: SecretStr = field(default_factory=lambda: SecretStr(""))
    starttls: bool = False
    sender: str = "sheetops@localhost"
    timeout_s: float = 30.0
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> SmtpConfig:
        """The config from ``SHEETOPS_SMTP_*``, with ``overrides`` (e.g. a job's
        ``params["smtp"]``) on top; unknown override keys are a ``PermanentError``."""
        s = settings or get_settings()
        config = cls(host=s.smtp_host, port=s.smtp_port, user=s.smtp_user,
                     password=s.smtp_password, starttls=s.smtp_starttls,
                     sender=s.smtp_sender)
        return config.with_overrides(**overrides) if overrides else config

    def with_overrides(self, **overrides: Any) -> SmtpConfig:
        allowed = {"host", "port", "user", "password", "starttls", "sender", "timeout_s",
                   "ssl_context"}
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise PermanentError(f"unknown SMTP setting(s) {', '.join(unknown)}; "
                                 f"allowed: {', '.join(sorted(allowed))}")
        values = dict(overrides)
        if "password" in values and not isinstance(values["password"], SecretStr):
            values["password"] = SecretStr(str(values["password"] or ""))
        if "port" in values:
            values["port"] = int(values["port"])
        if "starttls" in values and isinstance(values["starttls"], str):
            values["starttls"] = values["starttls"].strip().lower() in {"1", "true", "yes"}
        return replace(self, **values)

    def __repr__(self) -> str:
        return (f"SmtpConfig(host={self.host!r}, port={self.port}, user={self.user!r}, "
                f"password={'***' if self.password.get_secret_value() else ''!r}, "
                f"starttls={self.starttls}, sender={self.sender!r})")


def build_message(rendered: Rendered, *, to: str, sender: str,
                  reply_to: str | None = None,
                  headers: dict[str, str] | None = None) -> EmailMessage:
    """An ``EmailMessage`` for one recipient: text, or HTML with a text alternative."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = rendered.subject
    message["Date"] = formatdate(localtime=True)
    domain = sender.rpartition("@")[2].strip(" >") or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    if reply_to:
        message["Reply-To"] = reply_to
    for name, value in (headers or {}).items():
        message[name] = value
    if rendered.is_html:
        message.set_content(html_to_text(rendered.body))
        message.add_alternative(rendered.body, subtype="html")
    else:
        message.set_content(rendered.body)
    return message


class TransientSmtpError(RetryableError):
    """A temporary SMTP failure; sending again later may work."""


def _classify(exc: BaseException, where: str, secrets: set[str]) -> Exception:
    """Turn any exception from smtplib into a Transient/PermanentError with a masked,
    one-line message."""
    if isinstance(exc, PermanentError | RetryableError):
        return exc
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(f"{rcpt}: {code} {_text(msg)}"
                           for rcpt, (code, msg) in exc.recipients.items())
        cls = TransientSmtpError if codes and all(400 <= c < 500 for c in codes) \
            else PermanentError
        return cls(mask(f"{where}: recipient refused ({detail})", secrets))
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return PermanentError(mask(f"{where}: login refused ({exc.smtp_code} "
                                   f"{_text(exc.smtp_error)})", secrets))
    if isinstance(exc, smtplib.SMTPResponseException):
        cls = TransientSmtpError if 400 <= exc.smtp_code < 500 else PermanentError
        return cls(mask(f"{where}: server answered {exc.smtp_code} "
                        f"{_text(exc.smtp_error)}", secrets))
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return PermanentError(mask(f"{where}: {exc}", secrets))
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentError(f"{where}: the server's certificate is not trusted "
                              f"({exc.verify_message})")
    if isinstance(exc, smtplib.SMTPServerDisconnected | OSError):
        return TransientSmtpError(mask(f"{where}: {type(exc).__name__}: {exc}", secrets))
    return PermanentError(mask(f"{where}: {type(exc).__name__}: {exc}", secrets))


def _text(raw: Any) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


class EmailSender:
    """Sends messages through one SMTP connection, reconnecting after failures.

    ``attempts`` bounds tries per message (temporary failures only)."""

    def __init__(self, config: SmtpConfig, *, attempts: int = 4,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 8.0) -> None:
        self.config = config
        self.attempts = max(1, attempts)
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._smtp: smtplib.SMTP | None = None
        password = config.password.get_secret_value()
        self._secrets = {password} if len(password) >= 3 else set()

    @property
    def where(self) -> str:
        return f"SMTP {self.config.host}:{self.config.port}"

    def __enter__(self) -> EmailSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, message: EmailMessage) -> None:
        """Send ``message`` to all its recipients or raise (Transient/Permanent)."""
        policy = call_policy(lambda e: isinstance(e, TransientSmtpError),
                             attempts=self.attempts, initial=self.backoff_initial_s,
                             maximum=self.backoff_max_s,
                             before_sleep=lambda s: log.warning(
                                 "%s; retrying (attempt %d of %d)",
                                 s.outcome.exception() if s.outcome else "?",
                                 s.attempt_number, self.attempts))
        policy(self._send_once, message)

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def _connect(self) -> smtplib.SMTP:
        if self._smtp is not None:
            return self._smtp
        c = self.config
        smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout_s)
        try:
            smtp.ehlo()
            if c.starttls:
                smtp.starttls(context=c.ssl_context or ssl.create_default_context())
                smtp.ehlo()
            if c.user:
                smtp.login(c.user, c.password.get_secret_value())
        except BaseException:
            smtp.close()
            raise
        self._smtp = smtp
        return smtp

    def _send_once(self, message: EmailMessage) -> None:
        try:
            smtp = self._connect()
            refused = smtp.send_message(message, from_addr=self.config.sender)
        except Exception as exc:
            error = _classify(exc, self.where, self._secrets)
            if isinstance(error, TransientSmtpError) or isinstance(
                    exc, smtplib.SMTPServerDisconnected | OSError):
                self._drop()
            raise error from None
        if refused:
            detail = "; ".join(f"{rcpt}: {code} {_text(msg)}"
                               for rcpt, (code, msg) in refused.items())
            raise PermanentError(f"{self.where}: some recipients refused ({detail}); "
                                 "the others were sent")
        log.info("sent %r to %s via %s", message["Subject"], message["To"], self.where)

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()


def send_email(config: SmtpConfig, message: EmailMessage, **kwargs: Any) -> None:
    """Send one message on a fresh connection (see :class:`EmailSender`)."""
    with EmailSender(config, **kwargs) as sender:
        sender.send(message)
