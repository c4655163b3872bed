"""Write cell values into chosen tabs of an ``.xlsx`` file without re-serialising the rest.

Openpyxl's load-and-save keeps a formula but drops the value Excel or LibreOffice cached
for it, so a config cell ``=1=2`` (saved FALSE) would read as empty after sheetops'
first status write. Here every part of the file is copied through byte for byte except
the worksheet parts of the tabs being written, and in those only the ``<sheetData>``
rows being written change (their cells become inline strings, numbers and booleans, so
the shared-string table the config tabs use is never touched). Column widths, notes,
validations and conditional formats of those tabs stay as they were.
"""

from __future__ import annotations

import math
import posixpath
import re
import zipfile
from collections.abc import Sequence
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.utils import column_index_from_string, get_column_letter

from sheetops.sheets import CellValue, TabWrite

_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_PKG = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_SHEET_DATA = re.compile(r"<sheetData\s*/>|<sheetData\b[^>]*>(.*?)</sheetData>", re.S)
_ROW = re.compile(r"<row\b([^>]*?)(?:/>|>(.*?)</row>)", re.S)
_CELL = re.compile(r"<c\b([^>]*?)(?:/>|>(.*?)</c>)", re.S)
_ATTR_R = re.compile(r'\br="([A-Z]*)(\d+)"')
_ATTR_S = re.compile(r'\bs="(\d+)"')
_DIMENSION = re.compile(r"<dimension\b[^>]*/>")


class PartsUnsupported(Exception):
    """The file's layout is not one this writer edits in place (the caller falls back)."""


def sheet_parts(src: zipfile.ZipFile) -> dict[str, str]:
    """Tab name -> path of its worksheet part inside the zip."""
    book = ElementTree.fromstring(src.read("xl/workbook.xml"))
    rels = ElementTree.fromstring(src.read("xl/_rels/workbook.xml.rels"))
    targets = {r.get("Id"): r.get("Target", "") for r in rels.iter(f"{_PKG}Relationship")}
    parts = {}
    for sheet in book.iter(f"{_MAIN}sheet"):
        target = targets.get(sheet.get(f"{_REL}id"), "")
        path = target.lstrip("/") if target.startswith("/") else posixpath.normpath(
            posixpath.join("xl", target))
        parts[sheet.get("name", "")] = path
    return parts


def write_tabs(source: str, dest: str, writes: Sequence[TabWrite]) -> None:
    """Copy ``source`` to ``dest`` with ``writes`` applied; raise PartsUnsupported if a
    written tab is missing or its XML is not in the plain form this module edits."""
    with zipfile.ZipFile(source) as src:
        parts = sheet_parts(src)
        edits: dict[str, list[TabWrite]] = {}
        for write in writes:
            if write.tab not in parts or parts[write.tab] not in src.namelist():
                raise PartsUnsupported(write.tab)
            edits.setdefault(parts[write.tab], []).append(write)
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as out:
            for info in src.infolist():
                data = src.read(info)
                if info.filename in edits:
                    data = _edit_sheet(data.decode("utf-8"), edits[info.filename]).encode()
                out.writestr(info, data, compress_type=info.compress_type)


def _edit_sheet(xml: str, writes: Sequence[TabWrite]) -> str:
    match = _SHEET_DATA.search(xml)
    if match is None or "<x:" in xml[:200]:
        raise PartsUnsupported("sheetData")
    rows = {_row_number(m.group(1)): (m.group(1), _cells(m.group(2) or ""))
            for m in _ROW.finditer(match.group(1) or "")}
    for write in writes:
        for r, values in enumerate(write.padded, start=write.start_row):
            attrs, cells = rows.get(r, (f' r="{r}"', {}))
            for c, value in enumerate(values, start=1):
                style = _ATTR_S.search(cells[c]) if c in cells else None
                cells.pop(c, None)
                if value != "" and value is not None:
                    cells[c] = _cell(r, c, value, style.group(1) if style else None)
            rows[r] = (attrs, cells)
    body = "".join(
        f"<row{attrs}>{''.join(cells[c] for c in sorted(cells))}</row>" if cells
        else f"<row{attrs}/>" for _, (attrs, cells) in sorted(rows.items()))
    xml = xml[:match.start()] + f"<sheetData>{body}</sheetData>" + xml[match.end():]
    width = max([max(cells, default=1) for _, cells in rows.values()] or [1])
    dimension = f'<dimension ref="A1:{get_column_letter(width)}{max(rows, default=1)}"/>'
    return _DIMENSION.sub(dimension, xml, count=1)


def _row_number(attrs: str) -> int:
    found = re.search(r'\br="(\d+)"', attrs)
    if found is None:
        raise PartsUnsupported("row without r")
    return int(found.group(1))


def _cells(xml: str) -> dict[int, str]:
    cells = {}
    for m in _CELL.finditer(xml):
        ref = _ATTR_R.search(m.group(1))
        if ref is None or not ref.group(1):
            raise PartsUnsupported("cell without r")
        cells[column_index_from_string(ref.group(1))] = m.group(0)
    return cells


def _cell(row: int, col: int, value: CellValue, style: str | None) -> str:
    ref = f'r="{get_column_letter(col)}{row}"' + (f' s="{style}"' if style else "")
    if isinstance(value, bool):
        return f'<c {ref} t="b"><v>{int(value)}</v></c>'
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"<c {ref}><v>{value!r}</v></c>"
    text = escape(ILLEGAL_CHARACTERS_RE.sub("", str(value)))
    return f'<c {ref} t="inlineStr"><is><t xml:space="preserve">{text}</t></is></c>'
