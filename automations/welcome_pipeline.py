"""``welcome_contacts``: a pipeline that welcomes new contacts by email, record by record.

    contacts (JSON pages over HTTP) → validate → enrich → render → deliver (SMTP)

Params (the Jobs tab's ``params`` JSON):

- ``url`` (required): the first page of contacts, e.g. ``"http://crm.local/contacts"``;
  each page is ``{"items": [{"id": …, "email": …, "name": …}, …], "next": "/contacts/2"}``
  (``next`` absent or null on the last page).
- ``smtp``: optional overrides of the ``SHEETOPS_SMTP_*`` settings, as for
  ``send_email``.

A contact without a valid email or name fails ``validate`` and becomes a dead letter
(``sheetops dead-letters JOB``; fix it and ``sheetops replay JOB --edited fixed.json``);
the others go on. ``render`` fills the job's template (Templates tab) per contact —
without one, a built-in welcome text. ``deliver`` sends one email per contact under its
rate limit (10 a second unless the Stages tab says otherwise) and is idempotent: a
contact welcomed once is never emailed again, across retries, crashes and reruns. A
dry run renders every email and sends none.
"""

from __future__ import annotations

import re
from typing import Any

from sheetops.connectors.email import EmailSender, SmtpConfig, build_message

from sheetops.errors import PermanentError
from sheetops.pipelines import from_params, json_pages, pipeline
from sheetops.templates import Rendered, TemplateSpec, render

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DEFAULT_TEMPLATE = TemplateSpec(
    "welcome", "Welcome, {{ first_name }}!",
    "Hello {{ first_name }},\n\nwelcome aboard. Your account at {{ domain }} is ready.\n")

welcome = pipeline("welcome_contacts", source=from_params(lambda p: json_pages(p["url"])),
                   key="id", description="Welcome new contacts by email: HTTP pages → "
                                         "validate → enrich → render → SMTP")


@welcome.stage(batch_size=200, retries=0)
def validate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every contact needs a plausible email and a name; a bad one raises (and is
    isolated as a dead letter)."""
    for contact in records:
        email = str(contact.get("email") or "").strip()
        if not EMAIL.match(email):
            raise ValueError(f"contact {contact.get('id')}: {email or 'no'} email address "
                             "is not valid")
        if not str(contact.get("name") or "").strip():
            raise ValueError(f"contact {contact.get('id')}: the name is empty")
    return records


@welcome.stage(batch_size=200)
def enrich(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add first_name and the email's domain."""
    return [{**c, "email": c["email"].strip().lower(),
             "first_name": str(c["name"]).split()[0].title(),
             "domain": c["email"].rpartition("@")[2].lower()} for c in records]


@welcome.stage(batch_size=200)
def render_email(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    """Render the job's template (or the built-in one) for each contact."""
    out = []
    for contact in records:
        rendered = (ctx.render(**contact) if ctx.template is not None
                    else render(DEFAULT_TEMPLATE, contact))
        out.append({**contact, "subject": rendered.subject, "body": rendered.body,
                    "format": rendered.format})
    return out


@welcome.sink(batch_size=20, idempotent=True, rate_limit="10/second", retries=3,
              backoff_initial_s=0.5)
def deliver(records: list[dict[str, Any]], ctx: Any):
    """One email per contact; each one sent is entered in the ledger at once."""
    overrides = ctx.params.get("smtp") or {}
    if not isinstance(overrides, dict):
        raise PermanentError("params.smtp must be a JSON object of SMTP settings")
    config = SmtpConfig.from_settings(**overrides)
    headers = {"X-Sheetops-Job": ctx.job, "X-Sheetops-Run": ctx.run_id}
    with EmailSender(config) as sender:
        for contact in records:
            rendered = Rendered(contact["subject"], contact["body"], contact["format"])
            sender.send(build_message(rendered, to=contact["email"], sender=config.sender,
                                      headers=headers))
            yield contact
