"""Capture every outgoing effect of a run instead of sending it.

Inside :func:`capture_effects` the connectors' way out is switched to a recorder:

* email: :meth:`EmailSender.send` (the email connector) records the message; no SMTP
  connection is made;
* HTTP writes: any ``requests`` call that is not ``GET``/``HEAD``/``OPTIONS`` (the HTTP
  connector and webhooks go through ``requests``) is recorded and answered ``202`` with
  an empty JSON body; reads go out, so a dry run sees the real data (and so do OAuth
  token requests, which change nothing);
* sheet writes: ``write_batch`` of the workbook and Google backends records the writes,
  and :func:`cell_diff` turns them into the cells they would change.

The switch is process-wide while the block runs (a notebook runs one thing at a time).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from openpyxl.utils import get_column_letter

from sheetops.connectors.sheets.base import TabWrite
from sheetops.connectors.sheets.workbook import display

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Effect:
    """One thing the run would have sent: kind ``email``, ``http`` or ``sheet``."""

    kind: str
    target: str
    summary: str
    detail: Any = None
    at: float = field(default_factory=time.time)


@dataclass
class Captured:
    """What :func:`capture_effects` recorded."""

    effects: list[Effect] = field(default_factory=list)
    sheet_writes: list[tuple[Any, TabWrite]] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"kind": e.kind, "target": e.target, "summary": e.summary,
                              "detail": e.detail} for e in self.effects],
                            columns=["kind", "target", "summary", "detail"])


def _email_effect(message: Any) -> Effect:
    body = message.get_body(("plain", "html"))
    return Effect("email", str(message.get("To", "")), str(message.get("Subject", "")),
                  {"from": str(message.get("From", "")),
                   "body": body.get_content() if body is not None else ""})


def _http_effect(request: Any) -> Effect:
    body = request.body.decode(errors="replace") if isinstance(request.body, bytes) \
        else request.body
    with contextlib.suppress(TypeError, ValueError):
        body = json.loads(body) if body else body
    return Effect("http", request.url, f"{request.method} {request.url}", body)


def _is_token_exchange(request: Any) -> bool:
    """An OAuth token request (Google credentials refreshing): a read, not an effect."""
    body = request.body.decode(errors="replace") if isinstance(request.body, bytes) \
        else str(request.body or "")
    return request.url.split("?")[0].endswith("/token") and "grant_type=" in body


def _accepted(request: Any) -> Any:
    import requests

    response = requests.Response()
    response.status_code, response.url, response.request = 202, request.url, request
    response._content = b"{}"
    response.headers["Content-Type"] = "application/json"
    return response


def _sheet_backends() -> list[type]:
    from sheetops.connectors.sheets.workbook import WorkbookSheet

    backends: list[type] = [WorkbookSheet]
    with contextlib.suppress(ImportError):
        from sheetops.connectors.sheets.google import GoogleSheet

        backends.append(GoogleSheet)
    return backends


@contextlib.contextmanager
def capture_effects() -> Iterator[Captured]:
    """Record email, HTTP writes and sheet writes made inside the block; send none."""
    import requests

    from sheetops.connectors.email import EmailSender

    captured = Captured()
    real_send = requests.Session.send

    def send_email(self: Any, message: Any) -> None:
        captured.effects.append(_email_effect(message))

    def send_http(self: Any, request: Any, **kwargs: Any) -> Any:
        if request.method.upper() in SAFE_METHODS or _is_token_exchange(request):
            return real_send(self, request, **kwargs)
        captured.effects.append(_http_effect(request))
        return _accepted(request)

    def writer(backend: Any, writes: Sequence[TabWrite]) -> None:
        for write in writes:
            captured.sheet_writes.append((backend, write))
            captured.effects.append(Effect("sheet", write.tab, f"{len(write.rows)} row(s) "
                                           f"from row {write.start_row}", write.rows))

    patches: list[tuple[Any, str, Any]] = [(EmailSender, "send", send_email),
                                           (requests.Session, "send", send_http)]
    patches += [(cls, "write_batch", writer) for cls in _sheet_backends()]
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches]
    try:
        for owner, name, replacement in patches:
            setattr(owner, name, replacement)
        yield captured
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def cell_diff(sheet_writes: Sequence[tuple[Any, TabWrite]]) -> pd.DataFrame:
    """The cells the captured writes would change: tab, cell, before, after."""
    rows: list[dict[str, Any]] = []
    current: dict[tuple[int, str], list[list[str]]] = {}
    for backend, write in sheet_writes:
        key = (id(backend), write.tab)
        if key not in current:
            current[key] = backend.read_tabs([write.tab]).get(write.tab, [])
        before_rows = current[key]
        for r, values in enumerate(write.padded):
            number = write.start_row + r
            while len(before_rows) < number:
                before_rows.append([])
            old_row = before_rows[number - 1]
            for c, value in enumerate(values):
                old = old_row[c] if c < len(old_row) else ""
                new = display(value)
                if str(old) != new:
                    rows.append({"tab": write.tab, "cell": f"{get_column_letter(c + 1)}{number}",
                                 "before": old, "after": new})
                    old_row.extend([""] * (c + 1 - len(old_row)))
                    old_row[c] = new
    return pd.DataFrame(rows, columns=["tab", "cell", "before", "after"])
