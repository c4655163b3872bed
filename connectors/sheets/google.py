"""The config sheet as a Google Sheet, through gspread, spending as little quota as it can.

Google allows 60 read and 60 write requests per minute per user (300 per project), so
every operation here is a fixed, small number of requests whatever the number of tabs
or rows:

* open: one metadata read (tab titles and grid sizes), cached;
* :meth:`GoogleSheet.read_tabs`: exactly one ``values:batchGet`` for all tabs that
  exist. Tabs absent from the cached metadata are not requested; the metadata is
  re-read (one extra request) only when a requested tab seems missing and the cache
  is older than ``metadata_ttl_s``, or when Google rejects a range;
* :meth:`GoogleSheet.write_batch`: one ``values:batchUpdate`` (RAW, so ``=SUM(A1)``
  stays text), preceded by one structural ``batchUpdate`` only when a tab must be
  created or its grid grown;
* :meth:`GoogleSheet.keep_choices`: one read of the Jobs tab's first two rows, once per
  process; a changed dropdown list is a ``setDataValidation`` in the next write's
  structural ``batchUpdate`` (an unchanged one costs nothing);
* :meth:`GoogleSheet.ensure_tabs`: one metadata read, one structural ``batchUpdate``
  (new tabs with frozen header, header notes, dropdown and checkbox validation) and
  one ``values:batchUpdate`` (headers and examples); existing tabs are not touched.

Requests wait on a client-side rate limit below Google's quota
(``SHEETOPS_SHEETS_READS_PER_MINUTE`` / ``..._WRITES_PER_MINUTE``), and 429/5xx and
connection errors are retried a bounded number of times
(``SHEETOPS_SHEETS_MAX_RETRIES``) with backoff and jitter, honouring ``Retry-After``;
then :class:`~sheetops.errors.SheetUnavailable` is raised, and the caller (the status
outbox) keeps the writes for later.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from google.auth.exceptions import RefreshError, TransportError
from gspread.exceptions import APIError
from openpyxl.utils import get_column_letter
from sheetops.connectors.sheets.google_http import ClientOptions, is_transient, make_client

from sheetops.errors import SheetError, SheetUnavailable
from sheetops.settings import get_settings
from sheetops.sheets import CellValue, InitReport, TabSpec, TabWrite

T = TypeVar("T")
log = logging.getLogger("sheetops.sheets")

_URL_KEY = re.compile(r"^https?://[^/]+(?:/.*)?/spreadsheets/d/([A-Za-z0-9_-]+)")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]{20,}$")
_GOOGLE_HOSTS = ("docs.google.com", "sheets.google.com", "drive.google.com")
DEFAULT_ROWS, DEFAULT_COLS = 1000, 26
_PIXELS_PER_CHAR = 7  # Arial 10 in Sheets: about 7 pixels per character
ROW_GROWTH = 100  # grow grids in steps, so a growing tab rarely costs a structural request


@dataclass
class _Tab:
    sheet_id: int
    title: str
    rows: int
    cols: int


def _quoted(title: str) -> str:
    return "'" + title.replace("'", "''") + "'"


def _col(index: int) -> str:
    return get_column_letter(index + 1)


def _cell(value: CellValue) -> CellValue:
    return "" if value is None else value


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return str(value)


class GoogleSheet:
    """A Google Sheet (or an emulated one) holding the config and status tabs."""

    def __init__(self, client: Any, key: str, location: str, principal: str, *,
                 metadata_ttl_s: float = 60.0) -> None:
        self.client = client
        self.http = client.http_client
        self.key = key
        self.location = location
        self.principal = principal
        self.metadata_ttl_s = metadata_ttl_s
        self._tabs: dict[str, _Tab] = {}
        self._fetched_at = 0.0
        # dropdowns kept current (keep_choices): what the sheet offers, once looked up,
        # and the setDataValidation requests that ride along with the next write
        self._choices: dict[tuple[str, str], tuple[str, ...] | None] = {}
        self._pending: dict[tuple[str, str], tuple[dict[str, Any], tuple[str, ...]]] = {}
        self._dropdown_at: dict[tuple[str, str], tuple[int, int]] = {}

    # ------------------------------------------------------------------ opening
    @classmethod
    def matches(cls, location: str) -> bool:
        """A Google Sheets URL, an emulator URL (``.../spreadsheets/d/KEY``) or a bare key."""
        location = location.strip()
        return bool(_URL_KEY.match(location) or _BARE_KEY.match(location))

    @classmethod
    def open(cls, location: str, *, attempts: int | None = None,
             retry_initial_s: float = 0.5, retry_max_s: float = 32.0,
             timeout_s: float | None = None, metadata_ttl_s: float = 60.0) -> GoogleSheet:
        """Connect and read the sheet's metadata once (one request).

        Settings give the emulator, credentials, rate limits, timeout and retry count;
        the keyword arguments override them (tests use tiny retry waits). A URL on a
        host other than Google's is taken to be an emulator.
        """
        location = location.strip()
        settings = get_settings()
        m = _URL_KEY.match(location)
        key = m.group(1) if m else location
        emulator = settings.sheets_emulator
        if m and not emulator:
            parts = urlsplit(location)
            if parts.hostname not in _GOOGLE_HOSTS:
                emulator = f"{parts.scheme}://{parts.netloc}"
        options = ClientOptions(
            emulator=emulator.rstrip("/"),
            timeout_s=timeout_s if timeout_s is not None else settings.sheets_timeout_s,
            attempts=attempts if attempts is not None else settings.sheets_max_retries,
            retry_initial_s=retry_initial_s, retry_max_s=retry_max_s,
            reads_per_minute=settings.sheets_reads_per_minute,
            writes_per_minute=settings.sheets_writes_per_minute,
            principal=emulator or "google")
        client, principal = make_client(options, settings.google_credentials)
        sheet = cls(client, key, location, principal, metadata_ttl_s=metadata_ttl_s)
        sheet.refresh_metadata()
        return sheet

    # ------------------------------------------------------------------ errors
    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one gspread call; turn what went wrong into one sentence for the user."""
        try:
            return fn(*args, **kwargs)
        except APIError as e:
            raise self._error(e) from e
        except (requests.ConnectionError, requests.Timeout, TransportError) as e:
            raise SheetUnavailable(f"Google Sheets could not be reached for {self.location} "
                                   f"({type(e).__name__}); sheetops will try again later."
                                   ) from e
        except RefreshError as e:
            if getattr(e, "retryable", False):
                raise SheetUnavailable("Google's token service did not answer; sheetops "
                                       "will try again later.") from e
            raise SheetError(f"Google rejected the credentials of {self.principal} ({e}): "
                             "check SHEETOPS_GOOGLE_CREDENTIALS points at a valid, "
                             "enabled service-account key.") from e

    def _error(self, e: APIError) -> SheetError:
        code = e.code if e.code != -1 else e.response.status_code
        message = e.error.get("message", "")
        if is_transient(e):
            return SheetUnavailable(f"Google Sheets is unavailable for {self.location} "
                                    f"({code} {message}); sheetops will try again later.")
        if code == 404:
            return SheetError(f"Google Sheet {self.key} was not found: check the URL or key "
                              "given in --sheet / SHEETOPS_SHEET.")
        if code == 403:
            who = self.principal if "@" in self.principal else "the account sheetops uses"
            return SheetError(f"{who} may not open Google Sheet {self.key}: share the sheet "
                              f"with {who} as Editor.")
        if code == 401:
            return SheetError("Google did not accept the credentials: check "
                              "SHEETOPS_GOOGLE_CREDENTIALS.")
        return SheetError(f"Google Sheets refused the request for {self.location}: "
                          f"{message} ({code}).")

    # ------------------------------------------------------------------ metadata
    def refresh_metadata(self) -> None:
        """Re-read tab titles and grid sizes (one request)."""
        meta = self._call(self.http.fetch_sheet_metadata, self.key,
                          params={"includeGridData": "false"})
        self._tabs = {}
        for s in meta.get("sheets", []):
            p = s["properties"]
            grid = p.get("gridProperties", {})
            self._remember(_Tab(p["sheetId"], p["title"], grid.get("rowCount", 0),
                                grid.get("columnCount", 0)))
        self._fetched_at = time.monotonic()

    def _remember(self, tab: _Tab) -> None:
        self._tabs[tab.title.casefold()] = tab

    def _tab(self, name: str) -> _Tab | None:
        return self._tabs.get(name.casefold())

    @property
    def tab_titles(self) -> list[str]:
        """Titles of the tabs as last read from Google."""
        return [t.title for t in self._tabs.values()]

    def _new_sheet_id(self) -> int:
        taken = {t.sheet_id for t in self._tabs.values()}
        while True:
            candidate = secrets.randbelow(2**31 - 2) + 1
            if candidate not in taken:
                return candidate

    # ------------------------------------------------------------------ reading
    def read_tabs(self, names: Sequence[str]) -> dict[str, list[list[str]]]:
        """All named tabs that exist, in one ``values:batchGet`` (display strings,
        trimmed by Google). Missing tabs are left out of the result."""
        if any(self._tab(n) is None for n in names) and (
                time.monotonic() - self._fetched_at > self.metadata_ttl_s):
            self.refresh_metadata()
        try:
            return self._read(names)
        except SheetError as e:
            if isinstance(e, SheetUnavailable):
                raise
            self.refresh_metadata()  # a tab was deleted or renamed since the last look
            return self._read(names)

    def _read(self, names: Sequence[str]) -> dict[str, list[list[str]]]:
        present = [(n, t) for n in dict.fromkeys(names) if (t := self._tab(n)) is not None]
        if not present:
            return {}
        reply = self._call(self.http.values_batch_get, self.key,
                           [_quoted(t.title) for _, t in present],
                           params={"majorDimension": "ROWS",
                                   "valueRenderOption": "FORMATTED_VALUE"})
        out: dict[str, list[list[str]]] = {}
        for (name, _), vr in zip(present, reply.get("valueRanges", []), strict=True):
            out[name] = [[_as_text(v) for v in row] for row in vr.get("values", [])]
        return out

    # ------------------------------------------------------------------ dropdowns
    def keep_choices(self, tab: str, column: str, choices: Sequence[str]) -> bool:
        """Make the dropdown ``init`` put on ``tab``.``column`` offer ``choices``; True
        when a change was queued.

        The sheet's list is looked up once (one read of the tab's first two rows);
        after that this costs no request. A changed list becomes one
        ``setDataValidation`` request sent in the next write's structural
        ``batchUpdate`` (a flush with nothing else structural gains one request, only
        then). A column without a list dropdown (an editor removed it) is left alone.
        """
        choices = tuple(choices)
        key = (tab.casefold(), column.casefold())
        if not choices:
            return False
        if key not in self._choices:
            self._choices[key] = self._look_up_choices(tab, column)
        pending = self._pending.get(key)
        if self._choices[key] is None or (pending[1] if pending else self._choices[key]
                                          ) == choices:
            return False
        request = self._dropdown_request(tab, column, choices)
        if request is None:
            return False
        self._pending[key] = (request, choices)
        return True

    def _look_up_choices(self, tab: str, column: str) -> tuple[str, ...] | None:
        """The values of the ONE_OF_LIST dropdown under the ``column`` header (row 2),
        None when there is none; remembers the column for the request."""
        found = self._tab(tab)
        if found is None:
            return None
        meta = self._call(self.http.fetch_sheet_metadata, self.key, params={
            "ranges": f"{_quoted(found.title)}!1:2",
            "fields": "sheets.data.rowData.values.formattedValue,"
                      "sheets.data.rowData.values.dataValidation"})
        rows = [r.get("values", []) for s in meta.get("sheets", [])
                for d in s.get("data", []) for r in d.get("rowData", [])]
        if len(rows) < 2:
            return None
        headers = [str(v.get("formattedValue", "")).strip().casefold() for v in rows[0]]
        if column.casefold() not in headers:
            return None
        index = headers.index(column.casefold())
        rule = rows[1][index].get("dataValidation", {}) if index < len(rows[1]) else {}
        condition = rule.get("condition", {})
        if condition.get("type") != "ONE_OF_LIST":
            return None
        self._dropdown_at[(tab.casefold(), column.casefold())] = (found.sheet_id, index)
        return tuple(str(v.get("userEnteredValue", "")) for v in condition.get("values", []))

    def _dropdown_request(self, tab: str, column: str,
                          choices: tuple[str, ...]) -> dict[str, Any] | None:
        where = self._dropdown_at.get((tab.casefold(), column.casefold()))
        if where is None:
            return None
        sheet_id, index = where
        return {"setDataValidation": {
            "range": {"sheetId": sheet_id, "startRowIndex": 1, "startColumnIndex": index,
                      "endColumnIndex": index + 1},
            "rule": _validation_rule(choices, False)}}

    # ------------------------------------------------------------------ writing
    def write_batch(self, writes: Sequence[TabWrite]) -> None:
        """All writes in one ``values:batchUpdate`` (RAW), after at most one structural
        ``batchUpdate`` that creates missing tabs, grows grids and updates dropdowns
        (:meth:`keep_choices`). If Google rejects the writes because the cached
        metadata was stale, it is re-read and the writes are tried once more (without
        the dropdown updates, which must never hold the status tabs back)."""
        writes = [w for w in writes if w.rows]
        if not writes:
            return
        try:
            self._write(writes)
        except SheetError as e:
            if isinstance(e, SheetUnavailable):
                raise
            if self._pending:
                log.warning("Google refused a dropdown update of %s (%s); the status "
                            "write goes on without it", self.location, e)
                for key in self._pending:
                    self._choices[key] = None  # do not try again in this process
                self._pending.clear()
            self.refresh_metadata()
            self._write(writes)

    def _write(self, writes: Sequence[TabWrite]) -> None:
        need: dict[str, tuple[str, int, int]] = {}
        for w in writes:
            padded = w.padded
            width = max((len(r) for r in padded), default=0)
            folded = w.tab.casefold()
            title, rows, cols = need.get(folded, (w.tab, 0, 0))
            need[folded] = (title, max(rows, w.start_row - 1 + len(padded)),
                            max(cols, w.start_col - 1 + width))
        requests_: list[dict[str, Any]] = [request for request, _ in self._pending.values()]
        sent = dict(self._pending)
        created: list[_Tab] = []
        grown: list[_Tab] = []
        for title, rows, cols in need.values():
            tab = self._tab(title)
            if tab is None:
                tab = _Tab(self._new_sheet_id(), title, max(DEFAULT_ROWS, rows),
                           max(DEFAULT_COLS, cols))
                requests_.append({"addSheet": {"properties": {
                    "sheetId": tab.sheet_id, "title": title,
                    "gridProperties": {"rowCount": tab.rows, "columnCount": tab.cols}}}})
                created.append(tab)
            elif rows > tab.rows or cols > tab.cols:
                new = _Tab(tab.sheet_id, tab.title,
                           max(tab.rows, math.ceil(rows / ROW_GROWTH) * ROW_GROWTH),
                           max(tab.cols, cols))
                requests_.append({"updateSheetProperties": {
                    "properties": {"sheetId": tab.sheet_id, "gridProperties": {
                        "rowCount": new.rows, "columnCount": new.cols}},
                    "fields": "gridProperties.rowCount,gridProperties.columnCount"}})
                grown.append(new)
        if requests_:
            self._call(self.http.batch_update, self.key, {"requests": requests_})
            for tab in created + grown:
                self._remember(tab)
            for key, (_, choices) in sent.items():
                self._choices[key] = choices
                self._pending.pop(key, None)
                log.info("the %s dropdown on %s now offers: %s", key[1], key[0],
                         ", ".join(choices))
        data = []
        for w in writes:
            tab = self._tab(w.tab)
            assert tab is not None
            padded = [[_cell(v) for v in row] for row in w.padded]
            width = max((len(r) for r in padded), default=0)
            if width == 0:
                continue
            end_row = w.start_row + len(padded) - 1
            first = w.start_col - 1
            data.append({"range": f"{_quoted(tab.title)}!{_col(first)}{w.start_row}:"
                                  f"{_col(first + width - 1)}{end_row}",
                         "majorDimension": "ROWS", "values": padded})
        if data:
            self._call(self.http.values_batch_update, self.key,
                       {"valueInputOption": "RAW", "data": data})

    # ------------------------------------------------------------------ init
    def ensure_tabs(self, specs: Sequence[TabSpec]) -> InitReport:
        """Create the missing tabs: header row (frozen), notes on the headers, dropdowns
        for ``choices``, checkboxes for ``checkbox`` columns, example rows. Three
        requests when something is missing, one when nothing is."""
        self.refresh_metadata()
        report = InitReport()
        missing: list[TabSpec] = []
        for spec in specs:
            if self._tab(spec.name) is None and spec not in missing:
                missing.append(spec)
                report.created.append(spec.name)
            else:
                report.existing.append(spec.name)
        if not missing:
            return report
        structural: list[dict[str, Any]] = []
        data: list[dict[str, Any]] = []
        for spec in missing:
            width = len(spec.columns)
            tab = _Tab(self._new_sheet_id(), spec.name,
                       max(DEFAULT_ROWS, len(spec.examples) + 1), max(DEFAULT_COLS, width))
            self._remember(tab)
            structural.append({"addSheet": {"properties": {
                "sheetId": tab.sheet_id, "title": spec.name,
                "gridProperties": {"rowCount": tab.rows, "columnCount": tab.cols,
                                   "frozenRowCount": 1}}}})
            if width:
                structural.append({"updateCells": {
                    "range": {"sheetId": tab.sheet_id, "startRowIndex": 0, "endRowIndex": 1,
                              "startColumnIndex": 0, "endColumnIndex": width},
                    "rows": [{"values": [{"note": c.note} for c in spec.columns]}],
                    "fields": "note"}})
            for index, column in enumerate(spec.columns):
                structural.append({"updateDimensionProperties": {
                    "range": {"sheetId": tab.sheet_id, "dimension": "COLUMNS",
                              "startIndex": index, "endIndex": index + 1},
                    "properties": {"pixelSize": column.display_width * _PIXELS_PER_CHAR},
                    "fields": "pixelSize"}})
                structural.extend(_colour_rules(tab.sheet_id, index, column.colours))
                rule = _validation_rule(column.choices, column.checkbox)
                if rule is not None:
                    structural.append({"setDataValidation": {
                        "range": {"sheetId": tab.sheet_id, "startRowIndex": 1,
                                  "startColumnIndex": index, "endColumnIndex": index + 1},
                        "rule": rule}})
            rows = [list(spec.headers)] + [[_cell(v) for v in ex] for ex in spec.examples]
            padded = TabWrite(spec.name, rows, width=width).padded
            if width:
                data.append({"range": f"{_quoted(spec.name)}!A1:{_col(width - 1)}{len(padded)}",
                             "majorDimension": "ROWS", "values": padded})
        try:
            self._call(self.http.batch_update, self.key, {"requests": structural})
        except SheetError:
            self.refresh_metadata()
            raise
        if data:
            self._call(self.http.values_batch_update, self.key,
                       {"valueInputOption": "RAW", "data": data})
        return report


def _validation_rule(choices: tuple[str, ...], checkbox: bool) -> dict[str, Any] | None:
    if checkbox:
        return {"condition": {"type": "BOOLEAN"}, "strict": True}
    if choices:
        return {"condition": {"type": "ONE_OF_LIST",
                              "values": [{"userEnteredValue": c} for c in choices]},
                "strict": True, "showCustomUi": True}
    return None


def _colour_rules(sheet_id: int, index: int,
                  colours: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """addConditionalFormatRule requests colouring a column's cells equal to each value
    (sent with the tab's creation, so a flush costs no extra request)."""
    return [{"addConditionalFormatRule": {"index": 0, "rule": {
        "ranges": [{"sheetId": sheet_id, "startRowIndex": 1, "startColumnIndex": index,
                    "endColumnIndex": index + 1}],
        "booleanRule": {
            "condition": {"type": "TEXT_EQ", "values": [{"userEnteredValue": value}]},
            "format": {"backgroundColor": {
                "red": int(colour[0:2], 16) / 255, "green": int(colour[2:4], 16) / 255,
                "blue": int(colour[4:6], 16) / 255}}}}}} for value, colour in colours]
