"""A local ``.xlsx`` workbook as the config sheet (the embedded default).

Writes are atomic for the file: the workbook is re-read right before writing (so edits
ops made to the config tabs since the last read are kept), saved to a temporary file
beside it and moved into place. If the file changed while we were writing, the write
is redone on the newer file. Writing existing tabs (the status tabs at every flush)
copies every other part of the file through untouched (``xlsx_parts``), so config tabs
keep their formulas and the values Excel or LibreOffice saved for them. Creating tabs
(``init``) goes through openpyxl, which keeps values, notes, validations, formats and
frozen panes, but not formula values, charts or images. Strings are stored as text, so
``=1+1`` never becomes a formula. A read-only file is refused, never replaced.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import tempfile
import threading
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from xml.etree import ElementTree

from openpyxl import Workbook, load_workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.comments import Comment
from openpyxl.formatting.rule import CellIsRule
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import column_index_from_string, get_column_letter, quote_sheetname
from openpyxl.worksheet.datavalidation import DataValidation
from python_calamine import CalamineWorkbook
from sheetops.connectors.sheets import xlsx_parts
from sheetops.connectors.sheets.error_cells import overlay_error_cells

from sheetops.errors import SheetError
from sheetops.metrics import count_sheet_request
from sheetops.sheets import CellValue, InitReport, TabSpec, TabWrite

log = logging.getLogger("sheetops.sheets")
LISTS_TAB = "_lists"
_INLINE_MAX = 250  # Excel refuses inline lists over 255 characters
_LIST_RANGE = re.compile(r"^'?(.+?)'?!\$?([A-Z]+)\$?(\d+):\$?([A-Z]+)\$?(\d+)$")
_HEADER_FILL = PatternFill("solid", fgColor="DDE7F0")
_SYSTEM_FILL = PatternFill("solid", fgColor="EEEEEE")


def display(value: object) -> str:
    """A cell value as the string a spreadsheet would show (booleans as TRUE/FALSE)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value.total_seconds())
    return str(value)


def _trim(rows: list[list[str]]) -> list[list[str]]:
    for row in rows:
        while row and row[-1] == "":
            row.pop()
    while rows and not rows[-1]:
        rows.pop()
    return rows


class WorkbookSheet:
    """The config sheet as an ``.xlsx`` file on disk."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self._lock = threading.Lock()
        self._cache_key: tuple[int, int] | None = None
        self._cache: dict[str, list[list[str]]] = {}
        # (tab, column) -> (CRCs of the tab and the list tab, choices) last found current,
        # so a refresh where neither changed costs only a look at the zip's directory
        self._choices_seen: dict[tuple[str, str], tuple[object, tuple[str, ...]]] = {}

    @classmethod
    def matches(cls, location: str) -> bool:
        return location.lower().endswith((".xlsx", ".xlsm"))

    @classmethod
    def open(cls, location: str) -> WorkbookSheet:
        return cls(location)

    def _stamp(self) -> tuple[int, int]:
        st = self.path.stat()
        return (st.st_mtime_ns, st.st_size)

    def read_tabs(self, names: Sequence[str]) -> dict[str, list[list[str]]]:
        with self._lock:
            try:
                stamp = self._stamp()
            except FileNotFoundError:
                raise SheetError(f"{self.path} does not exist; create it with "
                                 f"'sheetops init --sheet {self.path}'") from None
            if stamp != self._cache_key:
                count_sheet_request("read")
                self._cache = self._read_all()
                self._cache_key = stamp
            return {n: [list(r) for r in self._cache[n]] for n in names if n in self._cache}

    def _read_all(self) -> dict[str, list[list[str]]]:
        """Every tab's displayed values (calamine reads ~8x faster than openpyxl)."""
        try:
            wb = CalamineWorkbook.from_path(str(self.path))
            tabs = {name: [[display(v) for v in row] for row in
                           wb.get_sheet_by_name(name).to_python(skip_empty_area=False)]
                    for name in wb.sheet_names}
            overlay_error_cells(self.path, tabs)
            return {name: _trim(rows) for name, rows in tabs.items()}
        except Exception as exc:
            raise SheetError(f"cannot read {self.path}: {type(exc).__name__}: {exc}") from None

    def write_batch(self, writes: Sequence[TabWrite]) -> None:
        if not writes:
            return
        with self._lock:
            for _ in range(5):
                stamp = self._stamp()
                self.check_writable()
                try:
                    saved = self._save_if_unchanged(
                        lambda tmp: xlsx_parts.write_tabs(str(self.path), tmp, writes), stamp)
                except xlsx_parts.PartsUnsupported:
                    saved = self._write_with_openpyxl(writes, stamp)
                except (OSError, zipfile.BadZipFile, KeyError, ElementTree.ParseError) as exc:
                    raise SheetError(f"cannot write {self.path}: {type(exc).__name__}: "
                                     f"{exc}") from None
                count_sheet_request("write")
                if saved:
                    return
            raise SheetError(f"{self.path} kept changing while sheetops wrote to it; "
                             "will retry at the next flush")

    def keep_choices(self, tab: str, column: str, choices: Sequence[str]) -> bool:
        """Make the dropdown ``init`` put on ``tab``.``column`` offer ``choices``; True
        when the file was written (only when the list differed).

        Only that validation's formula (and, for a long list, the hidden ``_lists`` tab
        holding it) changes; every other part of the file is copied byte for byte, so
        an editor's formatting of the Jobs tab survives. A tab without that dropdown
        (removed by an editor, or a file from elsewhere) is left alone.
        """
        choices = tuple(choices)
        key = (tab, column)
        title = f"Invalid {column}"
        try:
            stamp = self._stamp()
            seen = xlsx_parts.fingerprint(str(self.path), (tab, LISTS_TAB))
            if not choices or self._choices_seen.get(key) == (seen, choices):
                return False
            formula = xlsx_parts.list_formula(xlsx_parts.read_part(str(self.path), tab), title)
            plan = self._choices_plan(formula, tab, column, choices) if formula else None
        except (xlsx_parts.PartsUnsupported, OSError, zipfile.BadZipFile, KeyError,
                ElementTree.ParseError, SheetError) as exc:
            log.debug("dropdown %s.%s of %s not checked: %s", tab, column, self.path, exc)
            return False
        if plan is None:
            self._choices_seen[key] = (seen, choices)
            return False
        new_formula, writes = plan
        with self._lock:
            self.check_writable()
            saved = self._save_if_unchanged(lambda tmp: xlsx_parts.write_tabs(
                str(self.path), tmp, writes, {tab: (title, new_formula)},
                hidden=(LISTS_TAB,)), stamp)
            count_sheet_request("write")
        if saved:  # else someone saved meanwhile: the next refresh looks again
            self._choices_seen[key] = (
                xlsx_parts.fingerprint(str(self.path), (tab, LISTS_TAB)), choices)
            log.info("the %s dropdown on %s now offers: %s", column, tab, ", ".join(choices))
        return saved

    def _choices_plan(self, formula: str, tab: str, column: str, choices: tuple[str, ...]
                      ) -> tuple[str, list[TabWrite]] | None:
        """(new formula, writes to the list tab) that make the dropdown offer ``choices``;
        None when it already does."""
        inline = ",".join(choices)
        fits = len(inline) <= _INLINE_MAX and not re.search(r'[",]', "".join(choices))
        if formula.startswith('"'):
            current = tuple(c for c in formula.strip('"').split(",") if c)
            if current == choices:
                return None
            if fits:
                return f'"{inline}"', []
            lists, col = self.read_tabs([LISTS_TAB]).get(LISTS_TAB), None
        else:
            where = _LIST_RANGE.match(formula)
            if where is None or where.group(2) != where.group(4):
                raise xlsx_parts.PartsUnsupported(f"list formula {formula!r}")
            lists = self.read_tabs([where.group(1)]).get(where.group(1))
            if lists is None or where.group(1) != LISTS_TAB:
                raise xlsx_parts.PartsUnsupported(f"list tab {where.group(1)!r}")
            col = column_index_from_string(where.group(2)) - 1
            first, last = int(where.group(3)), int(where.group(5))
            current = tuple(r[col] if col < len(r) else "" for r in lists[first - 1:last])
            if current == choices:
                return None
        lists = lists or []  # too long to be inline: the list moves to a hidden tab
        width = max([len(r) for r in lists] or [0])
        if col is None:
            col = width
            width += 1
        rows = [list(r) + [""] * (width - len(r)) for r in lists]
        rows += [[""] * width for _ in range(len(choices) + 1 - len(rows))]
        rows[0][col] = f"{tab}.{column}"
        for r, row in enumerate(rows[1:]):
            row[col] = choices[r] if r < len(choices) else ""
        letter = get_column_letter(col + 1)
        return (f"{quote_sheetname(LISTS_TAB)}!${letter}$2:${letter}${len(choices) + 1}",
                [TabWrite(LISTS_TAB, rows, width=width)])

    def check_writable(self) -> None:
        """Refuse a file the user made read-only rather than replace it by rename."""
        if self.path.exists() and (not self.path.stat().st_mode & 0o222
                                   or not os.access(self.path, os.W_OK)):
            raise SheetError(f"{self.path} is read-only; make it writable (chmod u+w) so "
                             "sheetops can write its tabs")

    def _write_with_openpyxl(self, writes: Sequence[TabWrite],
                             stamp: tuple[int, int]) -> bool:
        """Create missing tabs through openpyxl (formula values on other tabs are lost;
        only used when a written tab does not exist yet)."""
        wb = self._load_for_edit()
        for write in writes:
            ws = wb[write.tab] if write.tab in wb.sheetnames else wb.create_sheet(write.tab)
            for r, row in enumerate(write.padded, start=write.start_row):
                for c, value in enumerate(row, start=write.start_col):
                    _set_raw(ws.cell(row=r, column=c), value)
        return self._save_if_unchanged(wb.save, stamp)

    def _load_for_edit(self) -> Workbook:
        try:
            return load_workbook(self.path)
        except FileNotFoundError:
            raise SheetError(f"{self.path} does not exist") from None
        except Exception as exc:
            raise SheetError(f"cannot open {self.path}: {type(exc).__name__}: {exc}") from None

    def _save_if_unchanged(self, save: Callable[[str], None],
                           stamp: tuple[int, int] | None) -> bool:
        """Save (``save(tmp_path)``) beside the file and move it into place, unless someone
        saved meanwhile."""
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".xlsx.tmp",
                                       dir=self.path.parent)
        except OSError as exc:
            raise SheetError(f"cannot write {self.path}: its folder {self.path.parent} does "
                             f"not accept new files ({exc.strerror})") from None
        os.close(fd)
        try:
            save(tmp)
            if stamp is not None and self.path.exists() and self._stamp() != stamp:
                return False
            os.chmod(tmp, self.path.stat().st_mode & 0o7777 if self.path.exists()
                     else 0o666 & ~_umask())
            os.replace(tmp, self.path)
            self._cache_key = None
            return True
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def ensure_tabs(self, specs: Sequence[TabSpec]) -> InitReport:
        report = InitReport()
        with self._lock:
            existed = self.path.exists()
            stamp = self._stamp() if existed else None
            self.check_writable()
            if existed:
                wb = self._load_for_edit()
            else:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise SheetError(f"cannot create {self.path.parent}: "
                                     f"{exc.strerror}") from None
                wb = Workbook()
                wb.remove(wb.active)
            for spec in specs:
                if spec.name in wb.sheetnames:
                    report.existing.append(spec.name)
                    continue
                _create_tab(wb, spec)
                report.created.append(spec.name)
            if report.created and not self._save_if_unchanged(wb.save, stamp):
                raise SheetError(f"{self.path} changed while 'init' was writing it; run "
                                 "init again")
        return report


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _set_raw(cell, value: CellValue) -> None:
    if value == "":
        cell.value = None
    elif isinstance(value, str):
        cell.value = ILLEGAL_CHARACTERS_RE.sub("", value)
        cell.data_type = "s"  # never a formula, even when it starts with '='
    else:
        cell.value = value
        if isinstance(value, bool):  # LibreOffice shows an unformatted boolean as 1/0
            cell.number_format = xlsx_parts.BOOLEAN_FORMAT


def _create_tab(wb: Workbook, spec: TabSpec) -> None:
    ws = wb.create_sheet(spec.name)
    bold = Font(bold=True)
    for col, column in enumerate(spec.columns, start=1):
        cell = ws.cell(row=1, column=col, value=column.name)
        cell.font = bold
        cell.fill = _SYSTEM_FILL if spec.system else _HEADER_FILL
        comment = Comment(column.note, "sheetops")
        comment.width, comment.height = 320, 110
        cell.comment = comment
        letter = get_column_letter(col)
        ws.column_dimensions[letter].width = column.display_width
        rows = f"{letter}2:{letter}5000"
        for value, colour in column.colours:
            ws.conditional_formatting.add(rows, CellIsRule(
                operator="equal", formula=[f'"{value}"'],
                fill=PatternFill("solid", bgColor=colour, fgColor=colour)))
        if column.checkbox:
            dv = DataValidation(type="list", formula1='"TRUE,FALSE"', allow_blank=True)
        elif column.choices:
            dv = DataValidation(type="list", formula1=_list_formula(wb, spec.name, column),
                                allow_blank=True)
        else:
            continue
        dv.error = f"{column.name}: {column.note}"
        dv.errorTitle = f"Invalid {column.name}"
        dv.showErrorMessage = True
        ws.add_data_validation(dv)
        dv.add(rows)
    ws.freeze_panes = "A2"
    for r, row in enumerate(spec.examples, start=2):
        for c, value in enumerate(row, start=1):
            _set_raw(ws.cell(row=r, column=c), value)


def _list_formula(wb: Workbook, tab: str, column) -> str:
    inline = ",".join(column.choices)
    if len(inline) <= 250 and not re.search(r'[",]', "".join(column.choices)):
        return f'"{inline}"'
    # Long lists live on a hidden tab (Excel limits inline lists to 255 characters).
    lists = wb[LISTS_TAB] if LISTS_TAB in wb.sheetnames else wb.create_sheet(LISTS_TAB)
    lists.sheet_state = "hidden"
    col = lists.max_column + 1 if lists.max_row > 1 or lists["A1"].value else 1
    letter = get_column_letter(col)
    lists.cell(row=1, column=col, value=f"{tab}.{column.name}")
    for r, choice in enumerate(column.choices, start=2):
        _set_raw(lists.cell(row=r, column=col), choice)
    end = len(column.choices) + 1
    return f"{quote_sheetname(LISTS_TAB)}!${letter}$2:${letter}${end}"
