"""The spreadsheets an emulator holds, and Google's semantics for changing them.

Everything here is plain Python over an in-memory model (optionally mirrored to a
SQLite file); the HTTP layer in :mod:`sheetops.testing.emulator` only parses requests
and calls these functions. Cell dicts are never mutated in place (they are replaced),
so a structural ``batchUpdate`` can work on a cheap copy and be thrown away on error,
which gives Google's all-or-nothing behaviour.

A cell is a dict with optional keys ``v`` (value: str, int, float or bool), ``f``
(formula text), ``n`` (note), ``fmt`` (its ``userEnteredFormat``) and ``d``
(``"date"``/``"datetime"``: ``v`` is a serial number shown in ISO form).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import datetime as dt
import json
import operator
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sheetops.testing.a1 import (
    A1Error,
    Bounds,
    col_letters,
    format_range,
    is_a1,
    parse_bounds,
    split_range,
)

Cell = dict[str, Any]
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
          404: "NOT_FOUND", 408: "DEADLINE_EXCEEDED", 409: "ABORTED",
          429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE",
          503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
DEFAULT_ROWS, DEFAULT_COLS = 1000, 26
DEFAULT_ROW_PX, DEFAULT_COL_PX = 21, 100
_EPOCH = dt.datetime(1899, 12, 30)
_NUMBER = re.compile(r"^[+-]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?([eE][+-]?\d+)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?$")


class ApiError(Exception):
    """An error answer in Google's shape: ``{"error": {code, message, status}}``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message,
                          "status": STATUS.get(self.code, "UNKNOWN")}}


# --------------------------------------------------------------------------- values

def _is_empty(cell: Cell | None) -> bool:
    return cell is None or ("f" not in cell and cell.get("v") in (None, ""))


def is_blank(cell: Cell | None) -> bool:
    """No value, note or format: the cell need not be stored."""
    return _is_empty(cell) and not (cell and ("n" in cell or "fmt" in cell))


#: What a cell keeps when only its value is written or cleared.
KEPT_ON_WRITE = ("n", "fmt")


def _eval_formula(formula: str) -> Any:
    """Arithmetic-only formulas (``=1+2*3``) get a value; anything else stays unevaluated."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow, ast.USub: operator.neg,
           ast.UAdd: operator.pos}

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in ops:
            return ops[type(node.op)](walk(node.operand))
        raise ValueError(formula)

    try:
        return walk(ast.parse(formula[1:].strip().replace("^", "**"), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, TypeError, OverflowError):
        return None


def parse_input(value: Any, user_entered: bool) -> Cell | None:
    """A JSON value from a write, as a cell; ``None`` means "leave this cell alone".

    RAW keeps strings as strings (``=1+1`` is text); USER_ENTERED parses numbers,
    booleans, ISO dates and a leading ``=`` as a formula, and drops a leading ``'``.
    """
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        return {"v": value}
    if isinstance(value, dict | list):
        raise ApiError(400, f"Invalid values: {json.dumps(value)[:60]} is not a cell value")
    text = str(value)
    if not user_entered:
        return {"v": text}
    if text.startswith("=") and len(text) > 1:
        return {"f": text, "v": _eval_formula(text)}
    if text.startswith("'"):
        return {"v": text[1:]}
    stripped = text.strip()
    if stripped.upper() in ("TRUE", "FALSE"):
        return {"v": stripped.upper() == "TRUE"}
    if stripped and any(ch.isdigit() for ch in stripped) and _NUMBER.match(stripped):
        number = float(stripped.replace(",", ""))
        return {"v": int(number) if number.is_integer() and "." not in stripped
                and "e" not in stripped.lower() else number}
    if _DATE.match(stripped) or _DATETIME.match(stripped):
        try:
            when = dt.datetime.fromisoformat(stripped)
        except ValueError:
            return {"v": text}
        serial = (when - _EPOCH) / dt.timedelta(days=1)
        kind = "date" if _DATE.match(stripped) else "datetime"
        return {"v": int(serial) if kind == "date" else serial, "d": kind}
    return {"v": text}


def format_number(x: int | float) -> str:
    """A number as the default "Automatic" format shows it (up to 10 decimals)."""
    if isinstance(x, int) or (float(x).is_integer() and abs(x) < 1e15):
        return str(int(x))
    if abs(x) >= 1e15 or abs(x) < 1e-10:
        return f"{x:.2E}"
    return f"{x:.10f}".rstrip("0").rstrip(".")


def _format_date(cell: Cell) -> str:
    when = _EPOCH + dt.timedelta(days=float(cell["v"]))
    return when.date().isoformat() if cell["d"] == "date" else when.strftime("%Y-%m-%d %H:%M:%S")


def render(cell: Cell | None, option: str, dt_option: str) -> Any:
    """A cell as ``valueRenderOption`` / ``dateTimeRenderOption`` ask."""
    if cell is None:
        return ""
    if option == "FORMULA" and "f" in cell:
        return cell["f"]
    value = cell.get("v")
    if value is None:
        return cell.get("f", "")
    if "d" in cell:
        if option == "FORMATTED_VALUE" or dt_option == "FORMATTED_STRING":
            return _format_date(cell)
        return value
    if option == "FORMATTED_VALUE":
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, int | float):
            return format_number(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)  # Google's JSON has no 1.0: whole numbers come back as 1
    return value


def cell_from_extended(data: dict[str, Any]) -> Cell:
    """A ``userEnteredValue`` (ExtendedValue) as a cell."""
    if "formulaValue" in data:
        return {"f": data["formulaValue"], "v": _eval_formula(data["formulaValue"])}
    for key in ("stringValue", "numberValue", "boolValue"):
        if key in data:
            return {"v": data[key]}
    return {}


def extended_value(cell: Cell) -> dict[str, Any] | None:
    if "f" in cell:
        return {"formulaValue": cell["f"]}
    value = cell.get("v")
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int | float):
        return {"numberValue": value}
    return {"stringValue": value}


# --------------------------------------------------------------------------- model

@dataclass
class Sheet:
    """One tab: grid size, frozen rows, cells and data-validation rules."""

    sheet_id: int
    title: str
    index: int = 0
    rows: int = DEFAULT_ROWS
    cols: int = DEFAULT_COLS
    frozen_rows: int = 0
    frozen_cols: int = 0
    hidden: bool = False
    cells: dict[tuple[int, int], Cell] = field(default_factory=dict)
    # (grid bounds, rule or None); the last entry covering a cell wins.
    validations: list[tuple[Bounds, dict[str, Any] | None]] = field(default_factory=list)
    hide_gridlines: bool = False
    merges: list[Bounds] = field(default_factory=list)
    protected: list[dict[str, Any]] = field(default_factory=list)
    basic_filter: dict[str, Any] | None = None
    # "ROWS"/"COLUMNS" -> DimensionGroup JSON ({range, depth, collapsed})
    groups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    col_px: dict[int, int] = field(default_factory=dict)  # column widths set or resized

    def copy(self) -> Sheet:
        return dataclasses.replace(
            self, cells=dict(self.cells), validations=list(self.validations),
            merges=list(self.merges), protected=copy.deepcopy(self.protected),
            basic_filter=copy.deepcopy(self.basic_filter), groups=copy.deepcopy(self.groups),
            col_px=dict(self.col_px))

    def grid_range(self, b: Bounds) -> dict[str, Any]:
        """``b`` as a GridRange with every index spelled out (open ends closed)."""
        b = b.clip(self.rows, self.cols)
        return {"sheetId": self.sheet_id, "startRowIndex": b.row0, "endRowIndex": b.row1,
                "startColumnIndex": b.col0, "endColumnIndex": b.col1}

    def extras(self) -> dict[str, Any]:
        """The per-sheet parts of ``spreadsheets.get`` besides properties (absent when
        empty, as Google leaves them out)."""
        out: dict[str, Any] = {}
        if self.merges:
            out["merges"] = [self.grid_range(m) for m in self.merges]
        if self.protected:
            out["protectedRanges"] = copy.deepcopy(self.protected)
        if self.basic_filter is not None:
            out["basicFilter"] = copy.deepcopy(self.basic_filter)
        for dim, key in (("ROWS", "rowGroups"), ("COLUMNS", "columnGroups")):
            if self.groups.get(dim):
                out[key] = copy.deepcopy(self.groups[dim])
        return out

    def properties(self) -> dict[str, Any]:
        grid: dict[str, Any] = {"rowCount": self.rows, "columnCount": self.cols}
        if self.frozen_rows:
            grid["frozenRowCount"] = self.frozen_rows
        if self.frozen_cols:
            grid["frozenColumnCount"] = self.frozen_cols
        if self.hide_gridlines:
            grid["hideGridlines"] = True
        props = {"sheetId": self.sheet_id, "title": self.title, "index": self.index,
                 "sheetType": "GRID", "gridProperties": grid}
        if self.hidden:
            props["hidden"] = True
        return props

    def validation_at(self, row: int, col: int) -> dict[str, Any] | None:
        for b, rule in reversed(self.validations):
            if (b.row0 <= row < (b.row1 if b.row1 is not None else self.rows)
                    and b.col0 <= col < (b.col1 if b.col1 is not None else self.cols)):
                return rule
        return None

    def check_within(self, b: Bounds, what: str) -> None:
        row1 = b.row1 if b.row1 is not None else b.row0 + 1
        col1 = b.col1 if b.col1 is not None else b.col0 + 1
        if row1 > self.rows or col1 > self.cols:
            shown = format_range(self.title, Bounds(b.row0, b.col0, row1, col1))
            raise ApiError(400, f"{what}Range ({shown}) exceeds grid limits. Max rows: "
                                f"{self.rows}, max columns: {self.cols}")

    def resize(self, rows: int, cols: int) -> None:
        if rows < 1 or cols < 1:
            raise ApiError(400, "A sheet must have at least one row and one column.")
        if rows < self.rows or cols < self.cols:
            self.cells = {k: v for k, v in self.cells.items() if k[0] < rows and k[1] < cols}
        self.rows, self.cols = rows, cols

    def to_json(self) -> dict[str, Any]:
        return {"props": self.properties(),
                "cells": [[r, c, cell] for (r, c), cell in self.cells.items()],
                "validations": [[[b.row0, b.col0, b.row1, b.col1], rule]
                                for b, rule in self.validations],
                "merges": [[m.row0, m.col0, m.row1, m.col1] for m in self.merges],
                "protected": self.protected, "basic_filter": self.basic_filter,
                "groups": self.groups, "col_px": [[c, px] for c, px in self.col_px.items()]}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Sheet:
        p = doc["props"]
        grid = p["gridProperties"]
        return cls(p["sheetId"], p["title"], p["index"], grid["rowCount"], grid["columnCount"],
                   grid.get("frozenRowCount", 0), grid.get("frozenColumnCount", 0),
                   p.get("hidden", False), {(r, c): cell for r, c, cell in doc["cells"]},
                   [(Bounds(*b), rule) for b, rule in doc["validations"]],
                   grid.get("hideGridlines", False),
                   [Bounds(*m) for m in doc.get("merges", [])], doc.get("protected", []),
                   doc.get("basic_filter"), doc.get("groups", {}),
                   {c: px for c, px in doc.get("col_px", [])})


@dataclass
class Spreadsheet:
    """A spreadsheet: key, title, tabs in order, and who may open it."""

    key: str
    title: str
    sheets: list[Sheet] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    modified: float = field(default_factory=time.time)
    readers: list[str] | None = None  # None: anyone with a token
    time_zone: str = "Etc/GMT"
    locale: str = "en_US"
    named_ranges: list[dict[str, Any]] = field(default_factory=list)  # NamedRange JSON

    def copy(self) -> Spreadsheet:
        return dataclasses.replace(
            self, sheets=[s.copy() for s in self.sheets],
            readers=None if self.readers is None else list(self.readers),
            named_ranges=copy.deepcopy(self.named_ranges))

    def sheet_named(self, name: str) -> Sheet | None:
        folded = name.casefold()
        return next((s for s in self.sheets if s.title.casefold() == folded), None)

    def sheet_by_id(self, sheet_id: Any) -> Sheet:
        for s in self.sheets:
            if s.sheet_id == sheet_id:
                return s
        raise ApiError(400, f"No grid with id: {sheet_id}")

    def reindex(self) -> None:
        for i, s in enumerate(self.sheets):
            s.index = i

    def new_sheet_id(self) -> int:
        taken = {s.sheet_id for s in self.sheets}
        while True:
            candidate = secrets.randbelow(2**31 - 2) + 1
            if candidate not in taken:
                return candidate

    def resolve(self, text: str) -> tuple[Sheet, Bounds]:
        """A range string as (tab, bounds); unknown tabs and bad A1 are 400s like Google's."""
        try:
            name, a1 = split_range(text)
            if name is None:
                named = self.sheet_named(a1 or "")
                if named is not None:
                    return named, Bounds()
                for nr in self.named_ranges:
                    if nr["name"].casefold() == (a1 or "").casefold():
                        g = nr["range"]
                        return self.sheet_by_id(g.get("sheetId", 0)), Bounds(
                            g.get("startRowIndex", 0), g.get("startColumnIndex", 0),
                            g.get("endRowIndex"), g.get("endColumnIndex"))
                if a1 is None or not is_a1(a1):
                    raise A1Error(text)
                if not self.sheets:
                    raise A1Error(text)
                return self.sheets[0], parse_bounds(a1)
            sheet = self.sheet_named(name)
            if sheet is None:
                raise A1Error(text)
            if a1 and not is_a1(a1):
                return self.resolve(a1)  # 'Sheet1'!NamedRange
            return sheet, parse_bounds(a1) if a1 else Bounds()
        except A1Error:
            raise ApiError(400, f"Unable to parse range: {text}") from None

    def metadata(self, base_url: str) -> dict[str, Any]:
        out = {"spreadsheetId": self.key,
               "properties": {"title": self.title, "locale": self.locale,
                              "autoRecalc": "ON_CHANGE", "timeZone": self.time_zone,
                              "defaultFormat": {}},
               "sheets": [{"properties": s.properties()} | s.extras() for s in self.sheets],
               "spreadsheetUrl": f"{base_url}/spreadsheets/d/{self.key}/edit"}
        if self.named_ranges:
            out["namedRanges"] = copy.deepcopy(self.named_ranges)
        return out

    def drive_file(self) -> dict[str, Any]:
        def stamp(t: float) -> str:
            when = dt.datetime.fromtimestamp(t, dt.UTC)
            return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
        return {"kind": "drive#file", "id": self.key, "name": self.title,
                "mimeType": "application/vnd.google-apps.spreadsheet",
                "createdTime": stamp(self.created), "modifiedTime": stamp(self.modified)}

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "created": self.created,
                "modified": self.modified, "readers": self.readers,
                "sheets": [s.to_json() for s in self.sheets], "time_zone": self.time_zone,
                "locale": self.locale, "named_ranges": self.named_ranges}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Spreadsheet:
        return cls(doc["key"], doc["title"], [Sheet.from_json(s) for s in doc["sheets"]],
                   doc["created"], doc["modified"], doc.get("readers"),
                   doc.get("time_zone", "Etc/GMT"), doc.get("locale", "en_US"),
                   doc.get("named_ranges", []))


def new_spreadsheet(title: str, tabs: Iterable[str] = ("Sheet1",)) -> Spreadsheet:
    """A spreadsheet with a Google-like 44-character key and the given empty tabs."""
    ss = Spreadsheet(key=secrets.token_urlsafe(33), title=title)
    for i, name in enumerate(tabs):
        ss.sheets.append(Sheet(sheet_id=0 if i == 0 else ss.new_sheet_id(), title=name, index=i))
    return ss


# --------------------------------------------------------------------------- reading

def read_values(sheet: Sheet, b: Bounds, major: str = "ROWS", option: str = "FORMATTED_VALUE",
                dt_option: str = "SERIAL_NUMBER") -> list[list[Any]]:
    """Values of a rectangle, trailing empty cells and rows trimmed, ``[]`` for gaps."""
    b = b.clip(sheet.rows, sheet.cols)
    by_line: dict[int, dict[int, Any]] = {}
    for (r, c), cell in sheet.cells.items():
        if b.row0 <= r < b.row1 and b.col0 <= c < b.col1 and not _is_empty(cell):
            value = render(cell, option, dt_option)
            if value == "":
                continue
            i, j = (r - b.row0, c - b.col0) if major != "COLUMNS" else (c - b.col0, r - b.row0)
            by_line.setdefault(i, {})[j] = value
    if not by_line:
        return []
    out: list[list[Any]] = []
    for i in range(max(by_line) + 1):
        line = by_line.get(i, {})
        out.append([line.get(j, "") for j in range(max(line) + 1)] if line else [])
    return out


def value_range(ss: Spreadsheet, text: str, major: str, option: str,
                dt_option: str) -> dict[str, Any]:
    sheet, b = ss.resolve(text)
    clipped = b.clip(sheet.rows, sheet.cols)
    if clipped.row0 >= clipped.row1 or clipped.col0 >= clipped.col1:
        raise ApiError(400, f"Range ({text}) exceeds grid limits. Max rows: {sheet.rows}, "
                            f"max columns: {sheet.cols}")
    out: dict[str, Any] = {"range": format_range(sheet.title, clipped),
                           "majorDimension": major}
    values = read_values(sheet, clipped, major, option, dt_option)
    if values:
        out["values"] = values
    return out


def grid_data(ss: Spreadsheet, ranges: list[str],
              keep: set[str] | None = None) -> list[dict[str, Any]]:
    """``sheets[].data[]`` for ``spreadsheets.get`` with grid data: values, notes, rules.

    ``keep`` limits cell data to those keys (from a ``fields`` mask such as
    ``sheets.data.rowData.values.note``)."""
    wanted: list[tuple[Sheet, Bounds]] = (
        [ss.resolve(r) for r in ranges] if ranges else [(s, Bounds()) for s in ss.sheets])
    out: dict[int, dict[str, Any]] = {}
    for sheet, b in wanted:
        b = b.clip(sheet.rows, sheet.cols)
        found: dict[tuple[int, int], dict[str, Any]] = {}
        for (r, c), cell in sheet.cells.items():
            if b.row0 <= r < b.row1 and b.col0 <= c < b.col1:
                data: dict[str, Any] = {}
                ev = extended_value(cell)
                if ev is not None:
                    data["userEnteredValue"] = ev
                    data["formattedValue"] = str(render(cell, "FORMATTED_VALUE", ""))
                if cell.get("n"):
                    data["note"] = cell["n"]
                if cell.get("fmt"):
                    data["userEnteredFormat"] = copy.deepcopy(cell["fmt"])
                if keep is not None:
                    data = {k: v for k, v in data.items() if k in keep}
                if data:
                    found[(r, c)] = data
        for vb, rule in sheet.validations:
            if rule is None or (keep is not None and "dataValidation" not in keep):
                continue
            vb = vb.clip(sheet.rows, sheet.cols)
            for r in range(max(vb.row0, b.row0), min(vb.row1, b.row1)):
                for c in range(max(vb.col0, b.col0), min(vb.col1, b.col1)):
                    if sheet.validation_at(r, c) is rule:
                        found.setdefault((r, c), {})["dataValidation"] = rule
        rows: list[dict[str, Any]] = []
        if found:
            last_row = max(r for r, _ in found)
            for r in range(b.row0, last_row + 1):
                cols = [c for (rr, c) in found if rr == r]
                rows.append({"values": [found.get((r, c), {})
                                        for c in range(b.col0, max(cols) + 1)]} if cols else {})
        block: dict[str, Any] = {"startRow": b.row0, "startColumn": b.col0}
        if rows:
            block["rowData"] = rows
        block["rowMetadata"] = [{"pixelSize": DEFAULT_ROW_PX} for _ in range(b.row0, b.row1)]
        block["columnMetadata"] = [{"pixelSize": sheet.col_px.get(c, DEFAULT_COL_PX)}
                                   for c in range(b.col0, b.col1)]
        entry = out.setdefault(sheet.sheet_id, {"properties": sheet.properties(), "data": []})
        entry["data"].append(block)
    return list(out.values())


# --------------------------------------------------------------------------- writing

def _as_rows(values: Any, major: str) -> list[list[Any]]:
    if values is None:
        return []
    if not isinstance(values, list) or not all(isinstance(r, list) for r in values):
        raise ApiError(400, "Invalid value at 'data.values': each row must be a list of values")
    if major == "COLUMNS":
        height = max((len(c) for c in values), default=0)
        return [[col[i] if i < len(col) else None for col in values] for i in range(height)]
    return values


@dataclass
class PlannedWrite:
    """A checked write, applied only after every write in the request was checked."""

    sheet: Sheet
    row0: int
    col0: int
    cells: list[list[Cell | None]]

    @property
    def bounds(self) -> Bounds:
        width = max((len(r) for r in self.cells), default=0)
        return Bounds(self.row0, self.col0, self.row0 + len(self.cells), self.col0 + width)

    def apply(self) -> dict[str, Any]:
        written_rows, written_cols, count = set(), set(), 0
        for i, row in enumerate(self.cells):
            for j, new in enumerate(row):
                if new is None:
                    continue
                key = (self.row0 + i, self.col0 + j)
                old = self.sheet.cells.get(key, {})
                cell = {k: v for k, v in old.items() if k in KEPT_ON_WRITE} | new
                if is_blank(cell):
                    self.sheet.cells.pop(key, None)
                else:
                    self.sheet.cells[key] = cell
                written_rows.add(i)
                written_cols.add(j)
                count += 1
        b = self.bounds
        out: dict[str, Any] = {"updatedRows": len(written_rows),
                               "updatedColumns": len(written_cols), "updatedCells": count}
        if b.row1 > b.row0 and b.col1 > b.col0:
            out = {"updatedRange": format_range(self.sheet.title, b)} | out
        return out


def plan_write(ss: Spreadsheet, text: str, values: Any, major: str,
               user_entered: bool) -> PlannedWrite:
    """Check a values write against its range and the grid, as Google does."""
    sheet, b = ss.resolve(text)
    rows = _as_rows(values, major)
    cells = [[parse_input(v, user_entered) for v in row] for row in rows]
    planned = PlannedWrite(sheet, b.row0, b.col0, cells)
    pb = planned.bounds
    if b.row1 is not None and pb.row1 > b.row1 and b != Bounds(b.row0, b.col0, b.row0 + 1,
                                                                 b.col0 + 1):
        raise ApiError(400, f"Requested writing within range [{text}], but tried writing to "
                            f"row [{pb.row1}]")
    if b.col1 is not None and pb.col1 > b.col1 and b != Bounds(b.row0, b.col0, b.row0 + 1,
                                                                 b.col0 + 1):
        raise ApiError(400, f"Requested writing within range [{text}], but tried writing to "
                            f"column [{col_letters(pb.col1 - 1)}]")
    if pb.row1 > sheet.rows or pb.col1 > sheet.cols:
        raise ApiError(400, f"Range ({format_range(sheet.title, pb)}) exceeds grid limits. "
                            f"Max rows: {sheet.rows}, max columns: {sheet.cols}")
    return planned


def _last_table(occupied: dict[int, list[int]]) -> Bounds | None:
    """The first block of consecutive non-empty rows; an empty column splits it into
    side-by-side tables and Google takes the last (gspread issue #537: ``["a", "", "c"]``
    appended twice to the whole tab lands the second at C2)."""
    if not occupied:
        return None
    first = last = min(occupied)
    while last + 1 in occupied:
        last += 1
    used = sorted({c for r in range(first, last + 1) for c in occupied[r]})
    lo = used[-1]
    while lo - 1 in used:
        lo -= 1
    return Bounds(first, lo, last + 1, used[-1] + 1)


def _table_at(occupied: dict[int, list[int]], row: int, col: int) -> Bounds | None:
    """The table that starts at a cell: its run of filled cells to the right, and the
    rows below while they have a value in the table's columns (``None``: empty cell)."""
    if col not in occupied.get(row, []):
        return None
    hi = col
    last = row
    while True:
        filled = set(occupied.get(last, []))
        while hi + 1 in filled:
            hi += 1
        if not any(col <= c <= hi for c in occupied.get(last + 1, [])):
            return Bounds(row, col, last + 1, hi + 1)
        last += 1


def append(ss: Spreadsheet, text: str, values: Any, major: str, user_entered: bool,
           insert_rows: bool) -> dict[str, Any]:
    """``values:append``: find the table in the range, write after its last row.

    The table is the first block of consecutive non-empty rows at or below the
    range's first row (within the range's columns); an empty column splits it and the
    last part is the table. A single cell means "the table that starts at this cell"
    (an empty cell: write right here, which gspread's ``insert_rows`` relies on).
    Values go below the table starting at its first column. The grid
    grows when the rows do not fit; INSERT_ROWS shifts the cells below down.
    """
    sheet, b = ss.resolve(text)
    rows = _as_rows(values, major)
    single = b.row1 == b.row0 + 1 and b.col1 == b.col0 + 1
    col_hi = sheet.cols if (b.col1 is None or single) else b.col1
    row_hi = sheet.rows if (b.row1 is None or single) else b.row1
    occupied: dict[int, list[int]] = {}
    for (r, c), cell in sheet.cells.items():
        if b.row0 <= r < row_hi and b.col0 <= c < col_hi and not _is_empty(cell):
            occupied.setdefault(r, []).append(c)
    table: Bounds | None = None
    table = (_table_at(occupied, b.row0, b.col0) if single
             else _last_table(occupied))
    if table is not None:
        start_row, start_col = table.row1, table.col0
    else:
        start_row, start_col = b.row0, b.col0
    height = len(rows)
    width = max((len(r) for r in rows), default=0)
    if insert_rows and height:
        sheet.cells = {((r + height, c) if r >= start_row else (r, c)): cell
                       for (r, c), cell in sheet.cells.items()}
        sheet.rows += height
    sheet.resize(max(sheet.rows, start_row + height), max(sheet.cols, start_col + width))
    planned = PlannedWrite(sheet, start_row, start_col,
                           [[parse_input(v, user_entered) for v in row] for row in rows])
    updates = {"spreadsheetId": ss.key} | planned.apply()
    out: dict[str, Any] = {"spreadsheetId": ss.key}
    if table is not None:
        out["tableRange"] = format_range(sheet.title, table)
    out["updates"] = updates
    return out


def clear(ss: Spreadsheet, text: str) -> str:
    """Clear values (notes, formats and validation stay); return the cleared range."""
    sheet, b = ss.resolve(text)
    b = b.clip(sheet.rows, sheet.cols)
    for key in [k for k in sheet.cells if b.row0 <= k[0] < b.row1 and b.col0 <= k[1] < b.col1]:
        kept = {k: v for k, v in sheet.cells[key].items() if k in KEPT_ON_WRITE}
        if kept:
            sheet.cells[key] = kept
        else:
            del sheet.cells[key]
    return format_range(sheet.title, b)


# --------------------------------------------------------------------------- batchUpdate

def grid_bounds(ss: Spreadsheet, grid: dict[str, Any]) -> tuple[Sheet, Bounds]:
    """A GridRange as (tab, bounds); a range past the grid is Google's 400."""
    sheet = ss.sheet_by_id(grid.get("sheetId", 0))
    b = Bounds(grid.get("startRowIndex", 0), grid.get("startColumnIndex", 0),
               grid.get("endRowIndex"), grid.get("endColumnIndex"))
    if b.row0 >= sheet.rows or b.col0 >= sheet.cols:
        sheet.check_within(b, "")
    if (b.row1 is not None and b.row1 > sheet.rows) or (b.col1 is not None
                                                        and b.col1 > sheet.cols):
        sheet.check_within(Bounds(b.row0, b.col0, b.row1 or b.row0 + 1, b.col1 or b.col0 + 1),
                           "")
    return sheet, b


def _fields(mask: str) -> list[str]:
    """A field mask as dotted paths: ``a(b,c),d/e`` is ``a.b``, ``a.c``, ``d.e``."""
    out: list[str] = []
    stack: list[str] = []
    word = ""
    for ch in mask.replace("/", ".") + ",":
        if ch == "(":
            stack.append(word.strip())
            word = ""
        elif ch in ",)":
            if word.strip():
                out.append(".".join([*stack, word.strip()]))
            word = ""
            if ch == ")" and stack:
                stack.pop()
        else:
            word += ch
    return out


def pick_fields(doc: Any, mask: str) -> Any:
    """``doc`` cut down to a ``fields`` mask (``sheets.properties,namedRanges``), as
    Google's partial responses are; parts the mask names but ``doc`` lacks stay absent."""
    tree: dict[str, Any] = {}
    for path in _fields(mask):
        node = tree
        for part in path.split("."):
            node = node.setdefault(part, {})

    def cut(value: Any, node: dict[str, Any]) -> Any:
        if not node or "*" in node:
            return value
        if isinstance(value, list):
            return [cut(v, node) for v in value]
        if isinstance(value, dict):
            return {k: cut(v, node[k]) for k, v in value.items() if k in node}
        return value

    return cut(doc, tree)


def _add_sheet(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    props = body.get("properties", {})
    title = props.get("title")
    if title is None:
        n = len(ss.sheets) + 1
        while ss.sheet_named(f"Sheet{n}"):
            n += 1
        title = f"Sheet{n}"
    if ss.sheet_named(title):
        raise ApiError(400, f'A sheet with the name "{title}" already exists. '
                            "Please enter another name.")
    sheet_id = props.get("sheetId")
    if sheet_id is None:
        sheet_id = ss.new_sheet_id()
    elif any(s.sheet_id == sheet_id for s in ss.sheets):
        raise ApiError(400, f"Sheet with id {sheet_id} already exists.")
    grid = props.get("gridProperties", {})
    sheet = Sheet(sheet_id, title, rows=grid.get("rowCount", DEFAULT_ROWS),
                  cols=grid.get("columnCount", DEFAULT_COLS),
                  frozen_rows=grid.get("frozenRowCount", 0),
                  frozen_cols=grid.get("frozenColumnCount", 0),
                  hidden=bool(props.get("hidden", False)))
    if sheet.rows < 1 or sheet.cols < 1 or sheet.frozen_rows >= sheet.rows:
        raise ApiError(400, "gridProperties must leave at least one unfrozen row and column.")
    ss.sheets.insert(min(props.get("index", len(ss.sheets)), len(ss.sheets)), sheet)
    ss.reindex()
    return {"addSheet": {"properties": sheet.properties()}}


def _delete_sheet(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    sheet = ss.sheet_by_id(body.get("sheetId"))
    if len(ss.sheets) == 1:
        raise ApiError(400, "You can't remove all the sheets in a document.")
    ss.sheets.remove(sheet)
    ss.reindex()
    return {}


def _update_sheet_properties(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    props = body.get("properties", {})
    sheet = ss.sheet_by_id(props.get("sheetId", 0))
    fields = _fields(body.get("fields", ""))
    if not fields:
        raise ApiError(400, "At least one field must be updated; 'fields' is empty.")
    if "*" in fields:
        fields = ["title", "index", "hidden"] + [
            f"gridProperties.{k}" for k in props.get("gridProperties", {})]
        fields = [f for f in fields if f.split(".")[0] in props]
    grid = props.get("gridProperties", {})
    rows, cols = sheet.rows, sheet.cols
    for f in fields:
        if f == "title":
            title = props.get("title", "")
            other = ss.sheet_named(title)
            if not title or (other is not None and other is not sheet):
                raise ApiError(400, f'A sheet with the name "{title}" already exists. '
                                    "Please enter another name.")
            sheet.title = title
        elif f == "index":
            ss.sheets.remove(sheet)
            ss.sheets.insert(min(props.get("index", 0), len(ss.sheets)), sheet)
            ss.reindex()
        elif f == "hidden":
            sheet.hidden = bool(props.get("hidden", False))
            if all(s.hidden for s in ss.sheets):
                raise ApiError(400, "You can't hide all the sheets in a document.")
        elif f == "gridProperties.hideGridlines":
            sheet.hide_gridlines = bool(grid.get("hideGridlines", False))
        elif f == "gridProperties":
            rows, cols = grid.get("rowCount", rows), grid.get("columnCount", cols)
            sheet.frozen_rows = grid.get("frozenRowCount", 0)
            sheet.frozen_cols = grid.get("frozenColumnCount", 0)
            sheet.hide_gridlines = bool(grid.get("hideGridlines", False))
        elif f == "gridProperties.rowCount":
            rows = grid.get("rowCount", DEFAULT_ROWS)
        elif f == "gridProperties.columnCount":
            cols = grid.get("columnCount", DEFAULT_COLS)
        elif f == "gridProperties.frozenRowCount":
            sheet.frozen_rows = grid.get("frozenRowCount", 0)
        elif f == "gridProperties.frozenColumnCount":
            sheet.frozen_cols = grid.get("frozenColumnCount", 0)
        elif f in ("tabColor", "tabColorStyle", "rightToLeft"):
            continue
        else:
            raise ApiError(400, f"Invalid field mask: '{f}' is not a field of SheetProperties")
    sheet.resize(rows, cols)
    if sheet.frozen_rows >= sheet.rows or sheet.frozen_cols >= sheet.cols:
        raise ApiError(400, "You can't freeze all visible rows (or columns) on the sheet.")
    return {}


def _append_dimension(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    sheet = ss.sheet_by_id(body.get("sheetId"))
    length = int(body.get("length", 0))
    if length < 1:
        raise ApiError(400, "length must be at least 1")
    if body.get("dimension") == "COLUMNS":
        sheet.resize(sheet.rows, sheet.cols + length)
    elif body.get("dimension") == "ROWS":
        sheet.resize(sheet.rows + length, sheet.cols)
    else:
        raise ApiError(400, "dimension must be ROWS or COLUMNS")
    return {}


def _set_data_validation(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    sheet, b = grid_bounds(ss, body.get("range", {}))
    rule = body.get("rule")
    if rule is not None:
        kind = rule.get("condition", {}).get("type")
        if kind is None:
            raise ApiError(400, "A data validation rule needs a condition type.")
        if kind == "ONE_OF_LIST" and not rule["condition"].get("values"):
            raise ApiError(400, "ONE_OF_LIST validation needs at least one value.")
    sheet.validations.append((b, rule))
    return {}


def _apply_cell_data(sheet: Sheet, key: tuple[int, int], data: dict[str, Any],
                     fields: list[str], bounds: Bounds) -> None:
    old = sheet.cells.get(key, {})
    cell = dict(old)
    every = "*" in fields
    if every or "note" in fields:
        cell.pop("n", None)
        if data.get("note"):
            cell["n"] = data["note"]
    if every or "userEnteredValue" in fields:
        for k in ("v", "f", "d"):
            cell.pop(k, None)
        cell |= cell_from_extended(data.get("userEnteredValue") or {})
    fmt_fields = [f for f in fields if f.split(".")[0] == "userEnteredFormat"]
    if every or fmt_fields:
        _apply_format(cell, data.get("userEnteredFormat") or {},
                      ["userEnteredFormat"] if every else fmt_fields)
    if every or "dataValidation" in fields:
        sheet.validations.append((Bounds(key[0], key[1], key[0] + 1, key[1] + 1),
                                  data.get("dataValidation")))
    if cell != old:
        if is_blank(cell):
            sheet.cells.pop(key, None)
        else:
            sheet.cells[key] = cell


def _apply_format(cell: Cell, given: dict[str, Any], paths: list[str]) -> None:
    """Set the ``userEnteredFormat`` parts ``paths`` name; colours get their ``...Style``
    twin, as Google echoes them."""
    fmt = copy.deepcopy(cell.get("fmt", {}))
    for path in paths:
        parts = path.split(".")[1:]
        if not parts:
            fmt = copy.deepcopy(given)
            continue
        src: Any = given
        dst = fmt
        for part in parts[:-1]:
            src = src.get(part, {}) if isinstance(src, dict) else {}
            dst = dst.setdefault(part, {})
        if isinstance(src, dict) and parts[-1] in src:
            dst[parts[-1]] = copy.deepcopy(src[parts[-1]])
        else:
            dst.pop(parts[-1], None)
    _add_color_styles(fmt)
    if fmt:
        cell["fmt"] = fmt
    else:
        cell.pop("fmt", None)


def _add_color_styles(node: dict[str, Any]) -> None:
    for key, value in list(node.items()):
        if key.endswith("Color") and isinstance(value, dict):
            node.setdefault(key + "Style", {"rgbColor": value})
        elif isinstance(value, dict):
            _add_color_styles(value)


def _update_cells(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    fields = _fields(body.get("fields", ""))
    if not fields:
        raise ApiError(400, "'fields' is required for updateCells.")
    rows = body.get("rows", [])
    if "range" in body:
        sheet, b = grid_bounds(ss, body["range"])
    elif "start" in body:
        start = body["start"]
        sheet = ss.sheet_by_id(start.get("sheetId", 0))
        b = Bounds(start.get("rowIndex", 0), start.get("columnIndex", 0))
        width = max((len(r.get("values", [])) for r in rows), default=0)
        sheet.check_within(Bounds(b.row0, b.col0, b.row0 + max(len(rows), 1),
                                  b.col0 + max(width, 1)), "")
    else:
        raise ApiError(400, "updateCells needs a 'range' or a 'start'.")
    if "range" in body:
        clipped = b.clip(sheet.rows, sheet.cols)
        if len(rows) > clipped.row1 - clipped.row0:
            raise ApiError(400, "updateCells has more rows than its range.")
        for r in range(clipped.row0, clipped.row1):
            values = rows[r - b.row0].get("values", []) if r - b.row0 < len(rows) else []
            if len(values) > clipped.col1 - clipped.col0:
                raise ApiError(400, "updateCells has more cells than its range.")
            for c in range(clipped.col0, clipped.col1):
                j = c - b.col0
                _apply_cell_data(sheet, (r, c), values[j] if j < len(values) else {},
                                 fields, b)
    else:
        for i, row in enumerate(rows):
            for j, data in enumerate(row.get("values", [])):
                _apply_cell_data(sheet, (b.row0 + i, b.col0 + j), data, fields, b)
    return {}


def _repeat_cell(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    sheet, b = grid_bounds(ss, body.get("range", {}))
    fields = _fields(body.get("fields", ""))
    clipped = b.clip(sheet.rows, sheet.cols)
    if fields:
        for r in range(clipped.row0, clipped.row1):
            for c in range(clipped.col0, clipped.col1):
                _apply_cell_data(sheet, (r, c), body.get("cell", {}), fields, clipped)
    return {}


def _update_spreadsheet_properties(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    props = body.get("properties", {})
    fields = _fields(body.get("fields", ""))
    if "*" in fields:
        fields = [f for f in ("title", "timeZone", "locale") if f in props]
    for f in fields:
        if f == "title":
            ss.title = props.get("title", ss.title)
        elif f == "timeZone":
            ss.time_zone = props.get("timeZone") or "Etc/GMT"
        elif f == "locale":
            ss.locale = props.get("locale") or "en_US"
        elif f.split(".")[0] not in ("autoRecalc", "defaultFormat", "spreadsheetTheme",
                                     "iterativeCalculationSettings"):
            raise ApiError(400, f"Invalid field mask: '{f}' is not a field of "
                                "SpreadsheetProperties")
    return {}


def _update_dimension_properties(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    """Column widths are kept (``columnMetadata`` shows them); row heights are ignored."""
    rng = body.get("range", {})
    sheet = ss.sheet_by_id(rng.get("sheetId", 0))
    size = body.get("properties", {}).get("pixelSize")
    if rng.get("dimension") == "COLUMNS" and size is not None and "pixelSize" in _fields(
            body.get("fields", "")):
        for c in range(rng.get("startIndex", 0), rng.get("endIndex", sheet.cols)):
            sheet.col_px[c] = int(size)
    return {}


def _auto_resize_dimensions(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    """Columns get as wide as their longest shown value (about 7 pixels a character)."""
    dims = body.get("dimensions", {})
    sheet = ss.sheet_by_id(dims.get("sheetId", 0))
    if dims.get("dimension") == "COLUMNS":
        for c in range(dims.get("startIndex", 0), dims.get("endIndex", sheet.cols)):
            longest = max((len(str(render(cell, "FORMATTED_VALUE", "")))
                           for (_, cc), cell in sheet.cells.items() if cc == c), default=0)
            sheet.col_px[c] = max(DEFAULT_COL_PX // 4, 7 * longest + 10)
    return {}


def _cosmetic(ss: Spreadsheet, body: dict[str, Any]) -> dict[str, Any]:
    """Requests the emulator accepts and ignores (borders are not kept)."""
    return {}


#: batchUpdate request kinds on cells and properties (see emulator_batch for the rest).
REQUESTS = {
    "addSheet": _add_sheet,
    "deleteSheet": _delete_sheet,
    "updateSheetProperties": _update_sheet_properties,
    "appendDimension": _append_dimension,
    "setDataValidation": _set_data_validation,
    "updateCells": _update_cells,
    "repeatCell": _repeat_cell,
    "updateSpreadsheetProperties": _update_spreadsheet_properties,
    "autoResizeDimensions": _auto_resize_dimensions,
    "updateDimensionProperties": _update_dimension_properties,
    "updateBorders": _cosmetic,
    "addConditionalFormatRule": _cosmetic,
}


# --------------------------------------------------------------------------- storage

class Store:
    """All spreadsheets, in memory, mirrored to a SQLite file when ``path`` is given."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        self.lock = threading.RLock()
        self.docs: dict[str, Spreadsheet] = {}
        if self.path is not None:
            self._execute("CREATE TABLE IF NOT EXISTS spreadsheets "
                          "(key TEXT PRIMARY KEY, doc TEXT NOT NULL)")
            for key, doc in self._execute("SELECT key, doc FROM spreadsheets"):
                self.docs[key] = Spreadsheet.from_json(json.loads(doc))

    def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        assert self.path is not None
        db = sqlite3.connect(self.path)
        try:
            with db:
                return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def get(self, key: str) -> Spreadsheet:
        ss = self.docs.get(key)
        if ss is None:
            raise ApiError(404, "Requested entity was not found.")
        return ss

    def put(self, ss: Spreadsheet) -> None:
        # Drive's modifiedTime has milliseconds and moves on every write, even a fast one.
        ss.modified = max(time.time(), ss.modified + 0.001)
        self.docs[ss.key] = ss
        if self.path is not None:
            self._execute("INSERT OR REPLACE INTO spreadsheets (key, doc) VALUES (?, ?)",
                          (ss.key, json.dumps(ss.to_json())))

    def delete(self, key: str) -> None:
        self.get(key)
        del self.docs[key]
        if self.path is not None:
            self._execute("DELETE FROM spreadsheets WHERE key = ?", (key,))
