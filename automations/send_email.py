"""``send_email``: send the job's template to each recipient, one email each.

Params (the Jobs tab's ``params`` JSON):

- ``recipients`` (required): a list of addresses, or of objects with ``email`` plus
  template variables for that recipient, e.g.
  ``[{"email": "ana@example.com", "name": "Ana"}, "ops@example.com"]``.
- ``vars``: template variables shared by every recipient (a recipient's own win).
- ``reply_to``: an optional Reply-To address.
- ``smtp``: optional overrides of the ``SHEETOPS_SMTP_*`` settings (``host``, ``port``,
  ``user``, ``password``, ``starttls``, ``sender``); write the password as
  ``"secret:SMTP_PASSWORD"`` so it stays in the environment.

The template (Templates tab) is rendered in Jinja2's sandbox with the variables plus
``email``. Every email waits for the job's rate limit. A recipient that cannot be
served — a refused address, a missing template variable — is recorded on the Errors tab
and the others still get theirs. If the mail server stays unreachable after the
connector's retries, the run fails and is retried only when nothing was sent yet in
this attempt; once some emails went out the rest are recorded as failed instead. Every
email sent is noted in the store for its run and recipient, and a retried attempt (after
a timeout or a lost worker) skips the recipients an earlier attempt served, so a retry
never sends anyone a duplicate. A recipient whose email cannot be built (a CR/LF in a
header value) is a failed record; a run in which no recipient got the email fails. A dry
run renders every email but sends none (and, sending nothing, does not wait for the rate
limit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import TemplateError, UndefinedError
from jinja2.exceptions import SecurityError
from sheetops.connectors.email import EmailSender, SmtpConfig, build_message

from sheetops.dryrun import capturing
from sheetops.errors import PermanentError, RetryableError
from sheetops.registry import automation


def _recipients(raw: Any) -> list[dict[str, Any] | str]:
    if isinstance(raw, str | Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise PermanentError('params.recipients must be a non-empty list, e.g. '
                             '["ana@example.com"] or [{"email": "ana@example.com", '
                             '"name": "Ana"}]')
    return [dict(r) if isinstance(r, Mapping) else r for r in raw]


@automation("send_email")
def send_email(ctx: Any) -> dict[str, Any]:
    """Send the job's template to each recipient in params.recipients (one email each)."""
    params = ctx.params
    recipients = _recipients(params.get("recipients"))
    shared = params.get("vars") or {}
    if not isinstance(shared, Mapping):
        raise PermanentError("params.vars must be a JSON object of template variables")
    smtp_overrides = params.get("smtp") or {}
    if not isinstance(smtp_overrides, Mapping):
        raise PermanentError("params.smtp must be a JSON object of SMTP settings")
    config = SmtpConfig.from_settings(**smtp_overrides)
    headers = {"X-Sheetops-Job": ctx.job, "X-Sheetops-Run": ctx.run_id}
    sent = ready = 0
    with EmailSender(config) as sender:
        for index, recipient in enumerate(recipients):
            person = recipient if isinstance(recipient, dict) else {"email": recipient}
            address = str(person.get("email") or "").strip()
            key = address or f"recipients[{index}]"
            if "@" not in address:
                ctx.record_failure(key, PermanentError(
                    f"recipient {index + 1} has no valid email address"))
                continue
            if not ctx.dry_run and ctx.deliveries.done(address):
                sent += 1  # an earlier attempt of this run sent it: never twice
                continue
            try:
                rendered = ctx.render(**{**shared, **person, "email": address})
            except SecurityError as exc:
                raise PermanentError(f"template {ctx.template.name!r} tried something the "
                                     f"sandbox forbids (SecurityError: {exc})") from None
            except UndefinedError as exc:
                ctx.record_failure(key, PermanentError(
                    f"template {ctx.template.name!r}: {exc.message}"), stage="render")
                continue
            except TemplateError as exc:
                raise PermanentError(f"template {ctx.template.name!r} cannot be rendered: "
                                     f"{type(exc).__name__}: {exc}") from None
            try:
                message = build_message(rendered, to=address, sender=config.sender,
                                        reply_to=params.get("reply_to"), headers=headers)
            except (ValueError, PermanentError) as exc:  # e.g. CR/LF in a header
                ctx.record_failure(key, PermanentError(
                    f"recipient {index + 1}: the email cannot be built: {exc}"),
                    stage="render")
                continue
            ready += 1
            if ctx.dry_run:
                ctx.log.info("dry run: would send %r to %s", rendered.subject, address)
                if capturing():  # run-job --dry-run / a notebook's dry_run: show it
                    sender.send(message)
                continue
            ctx.throttle()
            try:
                sender.send(message)
            except PermanentError as exc:
                ctx.record_failure(address, exc, stage="send")
                continue
            except RetryableError as exc:
                if sent == 0:
                    raise
                for rest in [address, *_addresses(recipients[index + 1:])]:
                    ctx.record_failure(rest, RetryableError(
                        f"not sent, mail server unavailable after {sent} sent: {exc}"),
                        stage="send")
                break
            ctx.deliveries.add(address)
            sent += 1
    failed = len(ctx.record_failures)
    if not ctx.dry_run and sent == 0 and failed >= len(recipients):
        raise PermanentError(f"none of the {len(recipients)} recipient(s) got the email; "
                             "each one is listed on the Errors tab")
    result: dict[str, Any] = {"records_in": len(recipients),
                              "records_out": ready if ctx.dry_run else sent,
                              "records_failed": failed, "sent": sent}
    if ctx.dry_run:
        result["dry_run"] = True
    return result


def _addresses(recipients: list[dict[str, Any] | str]) -> list[str]:
    return [str((r.get("email") if isinstance(r, dict) else r) or "?") for r in recipients]
