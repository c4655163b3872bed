"""Dry runs: the real code runs, every outgoing effect is captured instead of sent.

``sheetops run-job JOB --dry-run`` and the notebook's ``dry_run`` both go through
:func:`dry_run_job` (and so through :func:`capture_effects`): one mechanism, whether the
caller prints what would have been sent or shows it as a DataFrame.

Inside :func:`capture_effects` the connectors' way out is switched to a recorder:

* email: :meth:`EmailSender.send` (the email connector) records the message; no SMTP
  connection is made;
* HTTP writes: any ``requests`` call that is not ``GET``/``HEAD``/``OPTIONS`` (the HTTP
  connector and webhooks go through ``requests``) is recorded and answered ``202`` with
  an empty JSON body; reads go out, so a dry run sees the real data (and so do OAuth
  token requests, which change nothing);
* sheet writes: ``write_batch`` of the workbook and Google backends records the writes,
  and :func:`cell_changes` turns them into the cells they would change.

What goes out another way (a file written, ``smtplib`` or a database used directly) is
not captured, so the automation also sees ``ctx.dry_run`` true, as on the dashboard's
Dry run: keep such effects behind ``if not ctx.dry_run``. The capture is the net under
that: what the code sends through sheetops' connectors anyway is recorded, not sent;
code that wants to show what it would send sends it while :func:`capturing` is true
(the built-in ``send_email`` does). A pipeline job runs on a scratch store, its sink
skipped (the engine's dry-run rule); the notebook's stage dry run runs a sink too. The
switch is process-wide while the block runs (one dry run at a time).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from openpyxl.utils import get_column_letter

from sheetops.config.model import JobSpec
from sheetops.connectors.sheets.workbook import display
from sheetops.ratelimit import RateLimitSpec
from sheetops.sheets import TabWrite
from sheetops.templates import TemplateSpec

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
EFFECT_COLUMNS = ("kind", "target", "summary", "detail")
CHANGE_COLUMNS = ("tab", "cell", "before", "after")


@dataclass(frozen=True)
class Effect:
    """One thing the run would have sent: kind ``email``, ``http`` or ``sheet``."""

    kind: str
    target: str
    summary: str
    detail: Any = None
    at: float = field(default_factory=time.time)

    def row(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "summary": self.summary,
                "detail": self.detail}


@dataclass
class Captured:
    """What :func:`capture_effects` recorded."""

    effects: list[Effect] = field(default_factory=list)
    sheet_writes: list[tuple[Any, TabWrite]] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [effect.row() for effect in self.effects]


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


_active = 0


def capturing() -> bool:
    """Whether a :func:`capture_effects` block is running (what is sent is recorded)."""
    return _active > 0


@contextlib.contextmanager
def capture_effects() -> Iterator[Captured]:
    """Record email, HTTP writes and sheet writes made inside the block; send none."""
    global _active
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
        _active += 1
        yield captured
    finally:
        _active -= 1
        for owner, name, original in saved:
            setattr(owner, name, original)


def cell_changes(sheet_writes: Sequence[tuple[Any, TabWrite]]) -> list[dict[str, Any]]:
    """The cells the captured writes would change: ``tab``, ``cell``, ``before``,
    ``after`` (each backend's tab is read once, before the first write to it)."""
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
    return rows


@dataclass
class DryRunOutcome:
    """What a dry run returned, what it would have sent and which cells it would change."""

    job: str
    automation: str
    result: dict[str, Any]
    effects: list[dict[str, Any]]
    changes: list[dict[str, Any]]
    record_failures: list[dict[str, Any]]
    error: str = ""
    traceback: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def lines(self) -> list[str]:
        """One line per effect and per changed cell, as ``run-job --dry-run`` prints."""
        out = []
        for effect in self.effects:
            if effect["kind"] == "email":
                out.append(f"would send email to {effect['target']}: {effect['summary']}")
            elif effect["kind"] == "http":
                detail = "" if effect["detail"] in (None, "") else \
                    f" {json.dumps(effect['detail'], default=str)[:200]}"
                out.append(f"would send {effect['summary']}{detail}")
        for change in self.changes:
            out.append(f"would change {change['tab']}!{change['cell']}: "
                       f"{change['before']!r} -> {change['after']!r}")
        if not out:
            out.append("would send nothing and change no cell")
        return out


@contextlib.contextmanager
def _scratch_store(automation: str) -> Iterator[str]:
    """A throwaway SQLite store for a pipeline's dry run; empty for other automations."""
    from sheetops.pipelines.model import PIPELINES

    if automation not in PIPELINES:
        yield ""
        return
    with tempfile.TemporaryDirectory(prefix="sheetops-dry-") as folder:
        yield f"sqlite:///{folder}/dry-run.db"


def dry_run_job(spec: JobSpec, *, template: TemplateSpec | None = None,
                rate_limit: RateLimitSpec | None = None, stages: Mapping[str, Any] | None = None,
                trigger: str = "dry run") -> DryRunOutcome:
    """Run job ``spec``'s automation here with its row's params, effects captured."""
    from sheetops.testing.automation import call_automation

    result: dict[str, Any] = {}
    error = tb = ""
    failures: list[Any] = []
    with capture_effects() as captured, _scratch_store(spec.automation) as store_url:
        try:
            call = call_automation(spec.automation, spec.params, job=spec.job,
                                   template=template, rate_limit=rate_limit, dry_run=True,
                                   timeout_s=spec.timeout_s, trigger=trigger,
                                   store_url=store_url, stages=dict(stages or {}))
            result, failures = call.result, call.record_failures
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            tb = traceback.format_exc()
        changes = cell_changes(captured.sheet_writes)
    return DryRunOutcome(spec.job, spec.automation, result, captured.rows(), changes,
                         [vars(f) for f in failures], error, tb)
