"""``contacts_outreach``: emails each row of a ``Contacts`` tab and writes every row's
fate back to that row.

    Contacts tab rows → validate → enrich → render → deliver (SMTP)

The tab needs ``email`` (each row's key) and ``name``; ``subscribed`` (TRUE/FALSE,
optional) leaves out a contact who said no. sheetops adds ``sheetops_status``,
``sheetops_error``, ``sheetops_at`` and ``sheetops_retry`` after the last column and
fills them in: ``done`` (emailed), ``skipped`` (not subscribed), ``dead_letter`` (with
the error: a bad address, an empty name), ``failed`` (a row without an email, or one
repeating another row's). Fix a bad row, set its ``sheetops_retry`` cell to TRUE, and
the next run emails it; a done row is never emailed twice.

Params (the Jobs tab's ``params`` JSON), all optional:

- ``sheet``: the workbook path or Google Sheet URL holding the tab; default: the
  config sheet (``SHEETOPS_SHEET``).
- ``tab``: the tab's name (default ``Contacts``).
- ``smtp``: overrides of the ``SHEETOPS_SMTP_*`` settings, as for ``send_email``.

``enrich``, ``render_email`` and ``deliver`` are the ``welcome_contacts`` pipeline's
stages (the job's template, SMTP under a rate limit of 10 a second, idempotent).
"""

from __future__ import annotations

from typing import Any

from sheetops.automations import welcome_pipeline as welcome

from sheetops import tabs
from sheetops.pipelines import from_params, pipeline, sheet_tab

_NO = {w.casefold() for w in tabs.FALSE_WORDS}

contacts = pipeline(
    "contacts_outreach",
    source=from_params(lambda p: sheet_tab(p.get("tab") or "Contacts", key="email",
                                           sheet=p.get("sheet") or None)),
    key="email",
    description="Email each row of a Contacts tab and write its outcome back to the row")


@contacts.stage(batch_size=100, retries=0)
def validate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A plausible email and a name, or the record raises (isolated as a dead letter,
    its row says why); contacts whose ``subscribed`` cell says no are left out."""
    for contact in records:
        email = str(contact.get("email") or "")
        if not welcome.EMAIL.match(email):
            raise ValueError(f"row {contact.get('_row')}: email {email!r} is not a valid "
                             "address")
        if not str(contact.get("name") or "").strip():
            raise ValueError(f"row {contact.get('_row')}: the name is empty")
    return [c for c in records
            if str(c.get("subscribed") or "").strip().casefold() not in _NO]


contacts.stage(batch_size=100)(welcome.enrich)
contacts.stage(batch_size=100)(welcome.render_email)
contacts.sink(batch_size=20, idempotent=True, rate_limit="10/second", retries=3,
              backoff_initial_s=0.5)(welcome.deliver)
