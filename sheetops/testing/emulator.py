"""A local emulator of the Google Sheets API v4 (and the few Drive v3 calls gspread makes).

It is a real HTTP server on loopback, so tests and demos drive it with the real
gspread client: point gspread at it with :func:`sheetops.connectors.sheets.google_http.
SheetsHTTPClient` (which rewrites ``https://sheets.googleapis.com`` and
``https://www.googleapis.com`` to :attr:`SheetsEmulator.url`) or set
``SHEETOPS_SHEETS_EMULATOR`` for the sheetops backend.

What it is for: counting requests (``emulator.counts["values.batchGet"]``), injecting
faults (``emulator.faults.set(error_rate=0.3)``, ``outage=True``), and Google's value
semantics (trimming, RAW vs USER_ENTERED, grid limits, atomic ``batchUpdate``, error
JSON). It does not evaluate formulas beyond arithmetic, keep formats, or enforce
data-validation rules on writes.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import io
import json
import random
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sheetops.testing import emulator_store as es
from sheetops.testing.a1 import Bounds
from sheetops.testing.emulator_batch import batch_update
from sheetops.testing.emulator_store import ApiError, Spreadsheet, Store
from sheetops.testing.server import BackgroundServer

_SPREADSHEET = re.compile(r"^/v4/spreadsheets/([^/:]+)(?::(batchUpdate))?$")
_VALUES_BATCH = re.compile(r"^/v4/spreadsheets/([^/:]+)/values:(batchGet|batchUpdate|batchClear)$")
_VALUES = re.compile(r"^/v4/spreadsheets/([^/:]+)/values/(.+?)(?::(append|clear))?$")
_DRIVE_FILE = re.compile(r"^/drive/v3/files/([^/]+)$")
_DRIVE_OP = re.compile(r"^/drive/v3/files/([^/]+)/(export|copy|comments)$")
_DRIVE_UPLOAD = re.compile(r"^/upload/drive/v2/files/([^/]+)$")
_HTML_SHEET = re.compile(r"^/spreadsheets/d/([^/]+)(?:/.*)?$")
_DRIVE_NAME = re.compile(r"""name\s*=\s*["']((?:[^"'\\]|\\.)*)["']""")


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] | None = None


class Faults:
    """Injected failures, deterministic for a given seed.

    ``set(error_rate=0.3, codes=(429, 500, 503))`` fails about 30% of API requests
    with one of ``codes``; ``set(outage=True)`` answers every API request 503 until
    ``set(outage=False)``; ``latency_s`` delays every answer; ``retry_after`` adds a
    ``Retry-After`` header (seconds) to injected 429s.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        """No faults."""
        with self._lock:
            self.error_rate = 0.0
            self.codes: tuple[int, ...] = (429, 500, 503)
            self.latency_s = 0.0
            self.outage = False
            self.retry_after: float | None = None
            self._rng = random.Random(0)

    def set(self, *, error_rate: float | None = None, codes: Iterable[int] | None = None,
            latency_s: float | None = None, outage: bool | None = None,
            seed: int | None = None, retry_after: float | None = None) -> None:
        """Change some fault settings; the others keep their value."""
        with self._lock:
            if error_rate is not None:
                self.error_rate = error_rate
            if codes is not None:
                self.codes = tuple(codes)
            if latency_s is not None:
                self.latency_s = latency_s
            if outage is not None:
                self.outage = outage
            if seed is not None:
                self._rng = random.Random(seed)
            if retry_after is not None:
                self.retry_after = retry_after

    def draw(self) -> int | None:
        """The error code to answer this request with, or ``None`` to serve it."""
        with self._lock:
            if self.outage:
                return 503
            if self.error_rate and self._rng.random() < self.error_rate:
                return self._rng.choice(self.codes)
            return None


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class SheetsEmulator(BackgroundServer):
    """The emulator: start it as a context manager, then use :attr:`url`.

    >>> with SheetsEmulator() as emu:
    ...     key = emu.create_spreadsheet("Ops", tabs=["Jobs"])
    ...     url = emu.sheet_url(key)   # what --sheet / SHEETOPS_SHEET takes
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1",
                 data: str | Path | None = None) -> None:
        super().__init__(host, port)
        self.store = Store(data)
        self.faults = Faults()
        self.counts: Counter[str] = Counter()
        self._tokens: dict[str, str] = {}
        self._trusted_keys: dict[str, bytes] = {}

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the base every rewritten Google URL goes to."""
        if self._server is None:
            raise RuntimeError("the emulator is not running; use it as a context manager")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def _handler_class(self) -> type[_Handler]:
        class Handler(_Handler):
            pass

        Handler.emulator = self
        return Handler

    # ------------------------------------------------------------------ helpers for tests
    def reset_counts(self) -> None:
        """Forget the request counts."""
        self.counts.clear()

    @property
    def total_requests(self) -> int:
        """Sheets and Drive API requests received (token requests excluded)."""
        return sum(n for kind, n in self.counts.items() if kind != "token")

    def create_spreadsheet(self, title: str = "Untitled spreadsheet",
                           tabs: Iterable[str] = ("Sheet1",)) -> str:
        """Create a spreadsheet directly (no request is counted); return its key."""
        ss = es.new_spreadsheet(title, tabs)
        with self.store.lock:
            self.store.put(ss)
        return ss.key

    def sheet_url(self, key: str) -> str:
        """The browser-style URL of a spreadsheet, accepted by ``open_by_url`` and
        by ``GoogleSheet`` (``{url}/spreadsheets/d/KEY``)."""
        return f"{self.url}/spreadsheets/d/{key}"

    def values(self, key: str, tab: str) -> list[list[str]]:
        """A tab's formatted values, read directly (no request is counted)."""
        with self.store.lock:
            ss = self.store.get(key)
            sheet = ss.sheet_named(tab)
            if sheet is None:
                raise KeyError(tab)
            return es.read_values(sheet, Bounds())

    def tab_titles(self, key: str) -> list[str]:
        """Tab titles in order, read directly."""
        with self.store.lock:
            return [s.title for s in self.store.get(key).sheets]

    def spreadsheet(self, key: str) -> Spreadsheet:
        """The stored model of a spreadsheet (for assertions on notes, validations, grid)."""
        return self.store.get(key)

    def share(self, key: str, *emails: str) -> None:
        """Restrict a spreadsheet to ``emails`` (principals of tokens; the anonymous
        bearer of ``SHEETOPS_SHEETS_EMULATOR`` mode is ``anonymous``). Others get 403."""
        with self.store.lock:
            ss = self.store.get(key)
            ss.readers = list(emails)
            self.store.put(ss)

    def trust_key(self, email: str, public_key_pem: bytes) -> None:
        """Verify the JWT signature of token requests from ``email`` with this key."""
        self._trusted_keys[email] = public_key_pem

    def seed_xlsx(self, path: str | Path, title: str | None = None) -> str:
        """Load a workbook (values, frozen rows, comments as notes, list validations) as
        a new spreadsheet; return its key."""
        import openpyxl

        wb = openpyxl.load_workbook(path, data_only=True)
        ss = Spreadsheet(key=secrets.token_urlsafe(33), title=title or Path(path).stem)
        for index, ws in enumerate(wb.worksheets):
            sheet = es.Sheet(0 if index == 0 else ss.new_sheet_id(), ws.title, index,
                             rows=max(es.DEFAULT_ROWS, ws.max_row),
                             cols=max(es.DEFAULT_COLS, ws.max_column))
            if ws.freeze_panes:
                frozen = ws[ws.freeze_panes]
                sheet.frozen_rows, sheet.frozen_cols = frozen.row - 1, frozen.column - 1
            for row in ws.iter_rows():
                for c in row:
                    cell = _xlsx_cell(c.value)
                    if c.comment is not None:
                        cell["n"] = c.comment.text
                    if cell:
                        sheet.cells[(c.row - 1, c.column - 1)] = cell
            for dv in ws.data_validations.dataValidation:
                rule = _xlsx_rule(dv)
                if rule is None:
                    continue
                for cr in dv.sqref.ranges:
                    sheet.validations.append((Bounds(cr.min_row - 1, cr.min_col - 1,
                                                     cr.max_row, cr.max_col), rule))
            ss.sheets.append(sheet)
        if not ss.sheets:
            ss.sheets.append(es.Sheet(0, "Sheet1"))
        with self.store.lock:
            self.store.put(ss)
        return ss.key

    def gspread_client(self) -> Any:
        """A real ``gspread.Client`` routed here, anonymous, without retries."""
        from sheetops.connectors.sheets.google_http import anonymous_client

        return anonymous_client(self.url)

    # ------------------------------------------------------------------ request handling
    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        """Answer one HTTP request (called by the server thread)."""
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query, keep_blank_values=True)
        if method == "POST" and path == "/token":
            self.counts["token"] += 1
            if self.faults.outage:
                return Reply(503, {"error": "temporarily_unavailable"})
            return self._token(body)
        html_match = _HTML_SHEET.match(path)
        if method == "GET" and html_match:
            return self._html(unquote(html_match.group(1)))
        kind, route = self._route(method, path)
        if route is None:
            return Reply(404, ApiError(404, f"Method not found: {method} {path}").body())
        self.counts[kind] += 1
        code = self.faults.draw()
        if code is not None:
            extra = {"Retry-After": f"{self.faults.retry_after:g}"} \
                if code == 429 and self.faults.retry_after is not None else None
            message = {429: "Quota exceeded for quota metric 'Read requests' (injected).",
                       503: "The service is currently unavailable."}.get(
                code, "Internal error encountered.")
            return Reply(code, ApiError(code, message).body(), extra)
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") and "key" not in query:
            return Reply(401, ApiError(401, "Request is missing required authentication "
                                            "credential. Expected OAuth 2 access token.").body())
        principal = self._tokens.get(auth[7:].strip(), "anonymous")
        try:
            if kind == "drive.upload":
                payload: Any = body.decode("utf-8")
            else:
                payload = json.loads(body) if body.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return Reply(400, ApiError(400, f"Invalid JSON payload received. {e}").body())
        try:
            with self.store.lock:
                result = route(principal, query, payload)
                return result if isinstance(result, Reply) else Reply(200, result)
        except ApiError as e:
            return Reply(e.code, e.body())

    def _route(self, method: str, path: str) -> tuple[str, Any]:
        m = _VALUES_BATCH.match(path)
        if m:
            key, op = unquote(m.group(1)), m.group(2)
            want = "GET" if op == "batchGet" else "POST"
            if method != want:
                return "", None
            fn = {"batchGet": self._batch_get, "batchUpdate": self._values_batch_update,
                  "batchClear": self._batch_clear}[op]
            return f"values.{op}", lambda who, q, p: fn(self._open(key, who), q, p)
        m = _VALUES.match(path)
        if m:
            key, rng, op = unquote(m.group(1)), unquote(m.group(2)), m.group(3)
            table = {(None, "GET"): ("values.get", self._values_get),
                     (None, "PUT"): ("values.update", self._values_update),
                     ("append", "POST"): ("values.append", self._values_append),
                     ("clear", "POST"): ("values.clear", self._values_clear)}
            found = table.get((op, method))
            if found is None:
                return "", None
            kind, fn = found
            return kind, lambda who, q, p: fn(self._open(key, who), rng, q, p)
        m = _SPREADSHEET.match(path)
        if m:
            key, op = unquote(m.group(1)), m.group(2)
            if op and method == "POST":
                return "batchUpdate", lambda who, q, p: self._batch_update(
                    self._open(key, who), p)
            if not op and method == "GET":
                return "get", lambda who, q, p: self._get(self._open(key, who), q)
            return "", None
        if path == "/v4/spreadsheets" and method == "POST":
            return "create", lambda who, q, p: self._create(who, p)
        if path == "/drive/v3/files":
            if method == "POST":
                return "drive.create", lambda who, q, p: self._drive_create(who, p)
            if method == "GET":
                return "drive.list", lambda who, q, p: self._drive_list(who, q)
        m = _DRIVE_OP.match(path)
        if m:
            key, op = unquote(m.group(1)), m.group(2)
            if op == "export" and method == "GET":
                return "drive.export", lambda who, q, p: self._drive_export(
                    self._open(key, who), q)
            if op == "copy" and method == "POST":
                return "drive.copy", lambda who, q, p: self._drive_copy(self._open(key, who), p)
            if op == "comments" and method == "GET":
                return "drive.comments", lambda who, q, p: self._drive_comments(
                    self._open(key, who))
            return "", None
        m = _DRIVE_UPLOAD.match(path)
        if m and method == "PUT":
            key = unquote(m.group(1))
            return "drive.upload", lambda who, q, p: self._drive_import(self._open(key, who), p)
        m = _DRIVE_FILE.match(path)
        if m:
            key = unquote(m.group(1))
            if method == "GET":
                return "drive.get", lambda who, q, p: self._open(key, who).drive_file()
            if method == "DELETE":
                return "drive.delete", lambda who, q, p: self._drive_delete(key, who)
        return "", None

    # ------------------------------------------------------------------ endpoints
    def _open(self, key: str, who: str) -> Spreadsheet:
        ss = self.store.get(key)
        if ss.readers is not None and who not in ss.readers:
            raise ApiError(403, "The caller does not have permission")
        return ss

    def _get(self, ss: Spreadsheet, q: dict[str, list[str]]) -> dict[str, Any]:
        meta = ss.metadata(self.url)
        fields = q.get("fields", [""])[0]
        grid = q.get("includeGridData", ["false"])[0].lower() == "true" or (
            "data" in fields.replace("/", ".").split("."))
        if grid:
            mask = fields.replace("/", ".")
            keep = set(re.findall(r"rowData\.values\.(\w+)", mask)) or None
            meta["sheets"] = es.grid_data(ss, q.get("ranges", []), keep)
            for entry in meta["sheets"]:
                entry |= ss.sheet_by_id(entry["properties"]["sheetId"]).extras()
        return es.pick_fields(meta, fields) if fields else meta

    def _create(self, who: str, p: dict[str, Any]) -> dict[str, Any]:
        props = p.get("properties", {})
        tabs = [s.get("properties", {}).get("title", f"Sheet{i + 1}")
                for i, s in enumerate(p.get("sheets", []))] or ["Sheet1"]
        ss = es.new_spreadsheet(props.get("title", "Untitled spreadsheet"), tabs)
        self.store.put(ss)
        return ss.metadata(self.url)

    def _drive_create(self, who: str, p: dict[str, Any]) -> dict[str, Any]:
        if p.get("mimeType") != "application/vnd.google-apps.spreadsheet":
            raise ApiError(400, "The emulator only creates Google Sheets files.")
        ss = es.new_spreadsheet(p.get("name", "Untitled spreadsheet"))
        self.store.put(ss)
        file = ss.drive_file()
        return {k: file[k] for k in ("kind", "id", "name", "mimeType")}

    def _drive_list(self, who: str, q: dict[str, list[str]]) -> dict[str, Any]:
        m = _DRIVE_NAME.search(q.get("q", [""])[0])
        name = m.group(1).replace('\\"', '"').replace("\\'", "'") if m else None
        files = [ss.drive_file() for ss in self.store.docs.values()
                 if (name is None or ss.title == name)
                 and (ss.readers is None or who in ss.readers)]
        return {"kind": "drive#fileList", "files": files}

    def _drive_export(self, ss: Spreadsheet, q: dict[str, list[str]]) -> Reply:
        """Drive ``export`` as CSV (the only text format): the first tab, or ``gid``."""
        if q.get("mimeType", [""])[0] != "text/csv":
            raise ApiError(400, "The emulator exports text/csv only.")
        gid = q.get("gid", [None])[0]
        sheet = ss.sheet_by_id(int(gid)) if gid else ss.sheets[0]
        out = io.StringIO()
        rows = es.read_values(sheet, Bounds())
        width = max((len(r) for r in rows), default=0)
        csv.writer(out, lineterminator="\r\n").writerows(
            r + [""] * (width - len(r)) for r in rows)
        return Reply(200, out.getvalue().removesuffix("\r\n"),
                     {"Content-Type": "text/csv"})

    def _drive_copy(self, ss: Spreadsheet, p: dict[str, Any]) -> dict[str, Any]:
        """Drive ``copy``: the same tabs, cells and side tables under a new key."""
        new = es.new_spreadsheet(p.get("name") or f"Copy of {ss.title}", ())
        new.sheets = [s.copy() for s in ss.sheets]
        new.named_ranges = [dict(nr) for nr in ss.named_ranges]
        new.time_zone, new.locale, new.readers = ss.time_zone, ss.locale, ss.readers
        self.store.put(new)
        file = new.drive_file()
        return {k: file[k] for k in ("kind", "id", "name", "mimeType")}

    def _drive_comments(self, ss: Spreadsheet) -> dict[str, Any]:
        """Drive comments: the emulator keeps none (gspread's ``copy`` lists them)."""
        return {"comments": []}

    def _drive_import(self, ss: Spreadsheet, text: str) -> dict[str, Any]:
        """Drive upload with ``convert``: a CSV replaces the first tab's cells, as
        gspread's ``import_csv`` uses it."""
        sheet = ss.sheets[0]
        rows = list(csv.reader(io.StringIO(text)))
        sheet.cells = {}
        sheet.resize(max(sheet.rows, len(rows)), max([sheet.cols, *map(len, rows)]))
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                cell = es.parse_input(value, user_entered=True)
                if cell is not None and not es.is_blank(cell):
                    sheet.cells[(r, c)] = cell
        self.store.put(ss)
        return ss.drive_file()

    def _drive_delete(self, key: str, who: str) -> dict[str, Any]:
        self._open(key, who)
        self.store.delete(key)
        return {}

    def _batch_update(self, ss: Spreadsheet, p: dict[str, Any]) -> dict[str, Any]:
        new, replies = batch_update(ss, p.get("requests"))
        self.store.put(new)
        out: dict[str, Any] = {"spreadsheetId": ss.key, "replies": replies}
        if p.get("includeSpreadsheetInResponse"):
            out["updatedSpreadsheet"] = new.metadata(self.url)
        return out

    @staticmethod
    def _render_args(q: dict[str, list[str]]) -> tuple[str, str, str]:
        major = q.get("majorDimension", ["ROWS"])[0] or "ROWS"
        option = q.get("valueRenderOption", ["FORMATTED_VALUE"])[0] or "FORMATTED_VALUE"
        dt_option = q.get("dateTimeRenderOption", ["SERIAL_NUMBER"])[0] or "SERIAL_NUMBER"
        if major not in ("ROWS", "COLUMNS") or option not in (
                "FORMATTED_VALUE", "UNFORMATTED_VALUE", "FORMULA") or dt_option not in (
                "SERIAL_NUMBER", "FORMATTED_STRING"):
            raise ApiError(400, "Invalid majorDimension, valueRenderOption or "
                                "dateTimeRenderOption.")
        return major, option, dt_option

    def _values_get(self, ss: Spreadsheet, rng: str, q: dict[str, list[str]],
                    p: dict[str, Any]) -> dict[str, Any]:
        return es.value_range(ss, rng, *self._render_args(q))

    def _batch_get(self, ss: Spreadsheet, q: dict[str, list[str]],
                   p: dict[str, Any]) -> dict[str, Any]:
        args = self._render_args(q)
        return {"spreadsheetId": ss.key,
                "valueRanges": [es.value_range(ss, r, *args) for r in q.get("ranges", [])]}

    @staticmethod
    def _input_option(value: Any) -> bool:
        if value not in ("RAW", "USER_ENTERED"):
            raise ApiError(400, "'valueInputOption' is required and must be RAW or "
                                "USER_ENTERED.")
        return value == "USER_ENTERED"

    def _write_reply(self, ss: Spreadsheet, planned: es.PlannedWrite, include: bool,
                     q: dict[str, Any]) -> dict[str, Any]:
        out = {"spreadsheetId": ss.key} | planned.apply()
        if include and "updatedRange" in out:
            out["updatedData"] = es.value_range(
                ss, out["updatedRange"], "ROWS",
                q.get("responseValueRenderOption") or "FORMATTED_VALUE",
                q.get("responseDateTimeRenderOption") or "SERIAL_NUMBER")
        return out

    def _values_update(self, ss: Spreadsheet, rng: str, q: dict[str, list[str]],
                       p: dict[str, Any]) -> dict[str, Any]:
        user = self._input_option(q.get("valueInputOption", [None])[0])
        planned = es.plan_write(ss, rng, p.get("values"), p.get("majorDimension") or "ROWS",
                                user)
        include = q.get("includeValuesInResponse", ["false"])[0].lower() == "true"
        out = self._write_reply(ss, planned, include, {k: v[0] for k, v in q.items()})
        self.store.put(ss)
        return out

    def _values_batch_update(self, ss: Spreadsheet, q: dict[str, list[str]],
                             p: dict[str, Any]) -> dict[str, Any]:
        user = self._input_option(p.get("valueInputOption"))
        plans = [es.plan_write(ss, d.get("range", ""), d.get("values"),
                               d.get("majorDimension") or "ROWS", user)
                 for d in p.get("data", [])]
        include = bool(p.get("includeValuesInResponse"))
        responses = [self._write_reply(ss, plan, include, p) for plan in plans]
        self.store.put(ss)
        return {"spreadsheetId": ss.key,
                "totalUpdatedRows": sum(r.get("updatedRows", 0) for r in responses),
                "totalUpdatedColumns": sum(r.get("updatedColumns", 0) for r in responses),
                "totalUpdatedCells": sum(r.get("updatedCells", 0) for r in responses),
                "totalUpdatedSheets": len({plan.sheet.sheet_id for plan in plans}),
                "responses": responses}

    def _values_append(self, ss: Spreadsheet, rng: str, q: dict[str, list[str]],
                       p: dict[str, Any]) -> dict[str, Any]:
        user = self._input_option(q.get("valueInputOption", [None])[0])
        insert = q.get("insertDataOption", ["OVERWRITE"])[0] == "INSERT_ROWS"
        work = ss.copy()  # a bad value must not leave a grown grid behind
        out = es.append(work, rng, p.get("values"), p.get("majorDimension") or "ROWS", user,
                        insert)
        self.store.put(work)
        return out

    def _values_clear(self, ss: Spreadsheet, rng: str, q: dict[str, list[str]],
                      p: dict[str, Any]) -> dict[str, Any]:
        cleared = es.clear(ss, rng)
        self.store.put(ss)
        return {"spreadsheetId": ss.key, "clearedRange": cleared}

    def _batch_clear(self, ss: Spreadsheet, q: dict[str, list[str]],
                     p: dict[str, Any]) -> dict[str, Any]:
        ranges = p.get("ranges", [])
        for r in ranges:
            ss.resolve(r)
        cleared = [es.clear(ss, r) for r in ranges]
        self.store.put(ss)
        return {"spreadsheetId": ss.key, "clearedRanges": cleared}

    def _token(self, body: bytes) -> Reply:
        """OAuth2 token endpoint: JWT-bearer (service accounts) and refresh-token grants."""
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        grant = form.get("grant_type", "")
        if grant == "refresh_token":
            who = form.get("client_id", "user")
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            try:
                header_b64, claims_b64, sig_b64 = form["assertion"].split(".")
                claims = json.loads(_b64decode(claims_b64))
                who = claims["iss"]
            except (KeyError, ValueError):
                return Reply(400, {"error": "invalid_grant",
                                   "error_description": "Invalid JWT."})
            if claims.get("exp", 0) < time.time():
                return Reply(400, {"error": "invalid_grant",
                                   "error_description": "Invalid JWT: Token must be a "
                                                        "short-lived token."})
            pem = self._trusted_keys.get(who)
            if pem is not None and not _verify_rs256(
                    pem, f"{header_b64}.{claims_b64}".encode(), _b64decode(sig_b64)):
                return Reply(400, {"error": "invalid_grant",
                                   "error_description": "Invalid JWT Signature."})
        else:
            return Reply(400, {"error": "unsupported_grant_type"})
        token = "emu-" + secrets.token_urlsafe(24)
        self._tokens[token] = who
        return Reply(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

    def _html(self, key: str) -> Reply:
        """A read-only page of a spreadsheet's values, for people running the emulator."""
        with self.store.lock:
            try:
                ss = self.store.get(key)
            except ApiError as e:
                return Reply(e.code, e.body())
            parts = [f"<h1>{html.escape(ss.title)}</h1>"]
            for sheet in ss.sheets:
                rows = es.read_values(sheet, Bounds())
                parts.append(f"<h2>{html.escape(sheet.title)}</h2><table border=1>")
                parts += ["<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
                          + "</tr>" for row in rows]
                parts.append("</table>")
        return Reply(200, "\n".join(parts), {"Content-Type": "text/html; charset=utf-8"})


def _verify_rs256(pem: bytes, signed: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    key = serialization.load_pem_public_key(pem)
    try:
        key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr,call-arg]
    except InvalidSignature:
        return False
    return True


def _xlsx_cell(value: Any) -> es.Cell:
    if value is None or value == "":
        return {}
    if isinstance(value, dt.datetime | dt.date):
        when = value if isinstance(value, dt.datetime) else dt.datetime.combine(value, dt.time())
        serial = (when - dt.datetime(1899, 12, 30)) / dt.timedelta(days=1)
        if isinstance(value, dt.datetime) and when.time() != dt.time():
            return {"v": serial, "d": "datetime"}
        return {"v": int(serial), "d": "date"}
    if isinstance(value, bool | int | float):
        return {"v": value}
    if isinstance(value, dt.time):
        return {"v": value.isoformat()}
    return {"v": str(value)}


def _xlsx_rule(dv: Any) -> dict[str, Any] | None:
    if dv.type == "list" and dv.formula1 and dv.formula1.startswith('"'):
        values = dv.formula1.strip('"').split(",")
        return {"condition": {"type": "ONE_OF_LIST",
                              "values": [{"userEnteredValue": v} for v in values]},
                "strict": True, "showCustomUi": True}
    return None


class _Handler(BaseHTTPRequestHandler):
    """HTTP plumbing only: every request goes to :meth:`SheetsEmulator.handle`."""

    emulator: SheetsEmulator
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            reply = self.emulator.handle(self.command, self.path, headers, body)
        except Exception as e:  # a bug in the emulator: answer 500 like Google would
            reply = Reply(500, ApiError(500, f"Internal error encountered: {e!r}").body())
        if self.emulator.faults.latency_s:
            time.sleep(self.emulator.faults.latency_s)
        data = reply.body.encode() if isinstance(reply.body, str) \
            else json.dumps(reply.body).encode()
        headers = {"Content-Type": "application/json; charset=UTF-8"} | (reply.headers or {})
        self.send_response(reply.status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and the CLI report what matters themselves."""


def serve(port: int, data: str | None, seed: str | None) -> None:
    """Run the emulator in the foreground until Ctrl-C (``sheetops emulator``)."""
    emu = SheetsEmulator(port=port, data=data).start()
    try:
        print(f"Sheets API emulator listening on {emu.url}")
        print(f"  export SHEETOPS_SHEETS_EMULATOR={emu.url}")
        if data:
            print(f"  spreadsheets are kept in {data}")
        for key, ss in emu.store.docs.items():
            print(f"  {ss.title}: {emu.sheet_url(key)}")
        if seed:
            try:
                key = emu.seed_xlsx(seed)
            except Exception as e:  # openpyxl raises many kinds for a bad file
                from sheetops.errors import SheetError

                raise SheetError(f"cannot load {seed} as a workbook ({e})") from None
            print(f"Seeded {seed} as {emu.sheet_url(key)}")
            print(f"  sheetops run --sheet {emu.sheet_url(key)}")
        print("Press Ctrl-C to stop.", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
