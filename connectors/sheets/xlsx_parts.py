"""Write cell values into chosen tabs of an ``.xlsx`` file without re-serialising the rest.

Openpyxl's load-and-save keeps a formula but drops the value Excel or LibreOffice cached
for it, so a config cell ``=1=2`` (saved FALSE) would read as empty after sheetops'
first status write. Here every part of the file is copied through byte for byte except
the worksheet parts of the tabs being written, and in those only the ``<sheetData>``
rows being written change (their cells become inline strings, numbers and booleans, so
the shared-string table the config tabs use is never touched). Column widths, notes,
validations and conditional formats of those tabs stay as they were.

A boolean gets a cell style showing it as TRUE/FALSE (added once to ``styles.xml``):
Excel shows a bare boolean cell that way, LibreOffice shows it as 1/0.

A dropdown's list (a list ``<dataValidation>``, found by its error title) is changed the
same way: only its ``<formula1>`` in that one worksheet part, so the Jobs tab an editor
formatted keeps every other byte when a newly registered automation joins the list.
"""

from __future__ import annotations

import math
import posixpath
import re
import zipfile
from collections.abc import Mapping, Sequence
from xml.etree import ElementTree
from xml.sax.saxutils import escape, unescape

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
_WORKSHEET_TYPE = ("http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
                   "worksheet")
_WORKSHEET_CONTENT = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"
_STYLES_TYPE = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles"
BOOLEAN_FORMAT = '"TRUE";"TRUE";"FALSE"'  # the number format LibreOffice gives booleans
_NUM_FMT = re.compile(r"<numFmt\b[^>]*/>")
_CELL_XFS = re.compile(r"<cellXfs\b([^>]*)>(.*?)</cellXfs>", re.S)
_XF = re.compile(r"<xf\b[^>]*?(?:/>|>.*?</xf>)", re.S)
_VALIDATION = re.compile(r"<dataValidation\b([^>]*)>(.*?)</dataValidation>", re.S)
_FORMULA1 = re.compile(r"(<formula1>)(.*?)(</formula1>)", re.S)
_ERROR_TITLE = re.compile(r"""\berrorTitle=(["'])(.*?)\1""", re.S)


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


def write_tabs(source: str, dest: str, writes: Sequence[TabWrite],
               formulas: Mapping[str, tuple[str, str]] | None = None,
               hidden: Sequence[str] = ()) -> None:
    """Copy ``source`` to ``dest`` with ``writes`` applied, and for each ``tab: (error
    title, formula)`` of ``formulas`` that list validation's ``<formula1>`` replaced.

    A written tab named in ``hidden`` that does not exist is added as a hidden tab;
    any other missing tab, or XML not in the plain form this module edits, raises
    PartsUnsupported."""
    formulas = formulas or {}
    with zipfile.ZipFile(source) as src:
        infos = src.infolist()
        files = {info.filename: src.read(info) for info in infos}
        parts = sheet_parts(src)
    added: list[str] = []
    for tab in dict.fromkeys([w.tab for w in writes] + list(formulas)):
        if tab not in parts and tab in hidden and tab not in formulas:
            parts[tab] = _add_hidden_sheet(files, tab)
            added.append(parts[tab])
        elif tab not in parts or parts[tab] not in files:
            raise PartsUnsupported(tab)
    edits: dict[str, list[TabWrite]] = {}
    for write in writes:
        edits.setdefault(parts[write.tab], []).append(write)
    new_formulas = {parts[tab]: change for tab, change in formulas.items()}
    bool_style = None
    if any(isinstance(v, bool) for w in writes for row in w.rows for v in row):
        bool_style = _boolean_style(files)
    for part in {*edits, *new_formulas}:
        xml = files[part].decode("utf-8")
        if part in edits:
            xml = _edit_sheet(xml, edits[part], bool_style)
        if part in new_formulas:
            xml = _set_list_formula(xml, *new_formulas[part])
        files[part] = xml.encode()
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as out:
        for info in infos:
            out.writestr(info, files[info.filename], compress_type=info.compress_type)
        for part in added:
            out.writestr(part, files[part])


def _add_hidden_sheet(files: dict[str, bytes], name: str) -> str:
    """Register a new, empty, hidden worksheet part in ``files`` (workbook, its
    relationships, the content types); return the part's path."""
    book = files["xl/workbook.xml"].decode("utf-8")
    rels = files["xl/_rels/workbook.xml.rels"].decode("utf-8")
    types = files["[Content_Types].xml"].decode("utf-8")
    prefix = re.search(rf'xmlns:(\w+)="{_REL[1:-1]}"', book)
    if prefix is None or "</sheets>" not in book or "</Relationships>" not in rels \
            or "</Types>" not in types:
        raise PartsUnsupported("workbook layout")
    number = 1
    while f"xl/worksheets/sheet{number}.xml" in files:
        number += 1
    part = f"xl/worksheets/sheet{number}.xml"
    taken = set(re.findall(r'\bId="([^"]+)"', rels))
    rid = next(f"rId{i}" for i in range(1, len(taken) + 2) if f"rId{i}" not in taken)
    sheet_id = max(map(int, re.findall(r'<sheet\b[^>]*\bsheetId="(\d+)"', book)),
                   default=0) + 1
    files["xl/workbook.xml"] = book.replace("</sheets>", (
        f'<sheet name="{escape(name, {chr(34): "&quot;"})}" sheetId="{sheet_id}" '
        f'state="hidden" {prefix.group(1)}:id="{rid}"/></sheets>'), 1).encode()
    files["xl/_rels/workbook.xml.rels"] = rels.replace("</Relationships>", (
        f'<Relationship Id="{rid}" Type="{_WORKSHEET_TYPE}" Target="/{part}"/>'
        "</Relationships>"), 1).encode()
    files["[Content_Types].xml"] = types.replace("</Types>", (
        f'<Override PartName="/{part}" ContentType="{_WORKSHEET_CONTENT}"/></Types>'),
        1).encode()
    files[part] = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                   f'<worksheet xmlns="{_MAIN[1:-1]}"><sheetData/></worksheet>').encode()
    return part


def fingerprint(source: str, names: Sequence[str]) -> tuple[int | None, ...]:
    """The CRCs of the named tabs' worksheet parts (None for a missing tab): they stay
    the same while the status tabs are rewritten, since every other part is copied."""
    with zipfile.ZipFile(source) as src:
        parts = sheet_parts(src)
        known = {info.filename: info.CRC for info in src.infolist()}
        return tuple(known.get(parts.get(name, "")) for name in names)


def read_part(source: str, tab: str) -> str:
    """The worksheet XML of ``tab`` (PartsUnsupported if the file has no such tab)."""
    with zipfile.ZipFile(source) as src:
        parts = sheet_parts(src)
        if tab not in parts or parts[tab] not in src.namelist():
            raise PartsUnsupported(tab)
        return src.read(parts[tab]).decode("utf-8")


def list_formula(xml: str, title: str) -> str | None:
    """The ``<formula1>`` (unescaped: ``"a,b"`` or ``'_lists'!$A$2:$A$9``) of the list
    validation whose error title is ``title``; None when the tab has none."""
    found = _find_validation(xml, title)
    if found is None:
        return None
    formula = _FORMULA1.search(found.group(2))
    return unescape(formula.group(2), {"&quot;": '"', "&apos;": "'"}) if formula else None


def _find_validation(xml: str, title: str) -> re.Match[str] | None:
    for match in _VALIDATION.finditer(xml):
        attr = _ERROR_TITLE.search(match.group(1))
        if attr and unescape(attr.group(2), {"&quot;": '"', "&apos;": "'"}) == title:
            return match
    return None


def _set_list_formula(xml: str, title: str, formula: str) -> str:
    found = _find_validation(xml, title)
    if found is None or not _FORMULA1.search(found.group(2)):
        raise PartsUnsupported(f"no list validation titled {title!r}")
    body = _FORMULA1.sub(lambda m: m.group(1) + escape(formula) + m.group(3), found.group(2),
                         count=1)
    start, end = found.span(2)
    return xml[:start] + body + xml[end:]


def _boolean_style(files: dict[str, bytes]) -> str | None:
    """Index of a cell style that shows booleans as TRUE/FALSE, added to the styles part
    when it has none (None when the file has no styles part this module can edit)."""
    rels = files.get("xl/_rels/workbook.xml.rels", b"").decode("utf-8")
    target = re.search(rf'<Relationship\b[^>]*Type="{_STYLES_TYPE}"[^>]*/>', rels)
    path = re.search(r'Target="([^"]+)"', target.group(0)) if target else None
    if path is None:
        return None
    name = path.group(1).lstrip("/") if path.group(1).startswith("/") else \
        posixpath.normpath(posixpath.join("xl", path.group(1)))
    if name not in files:
        return None
    styles = files[name].decode("utf-8")
    xfs = _CELL_XFS.search(styles)
    if xfs is None or "<x:" in styles[:300]:
        return None
    fmt_id = None
    for element in _NUM_FMT.findall(styles):
        code = re.search(r'formatCode="([^"]*)"', element)
        number = re.search(r'numFmtId="(\d+)"', element)
        if code and number and unescape(code.group(1), {"&quot;": '"'}) == BOOLEAN_FORMAT:
            fmt_id = number.group(1)
    entries = _XF.findall(xfs.group(2))
    if fmt_id is not None:
        for index, xf in enumerate(entries):
            if re.search(rf'\bnumFmtId="{fmt_id}"', xf):
                return str(index)
    else:
        taken = [int(n) for n in re.findall(r'<numFmt\b[^>]*numFmtId="(\d+)"', styles)]
        fmt_id = str(max([163, *taken]) + 1)  # custom formats start at 164
        element = (f'<numFmt numFmtId="{fmt_id}" formatCode="'
                   f'{escape(BOOLEAN_FORMAT, {chr(34): "&quot;"})}"/>')
        if re.search(r"<numFmts\b[^>]*/>", styles):
            styles = re.sub(r"<numFmts\b[^>]*/>", f'<numFmts count="1">{element}</numFmts>',
                            styles, count=1)
        elif "</numFmts>" in styles:
            styles = styles.replace("</numFmts>", element + "</numFmts>", 1)
            styles = re.sub(r'(<numFmts\b[^>]*\bcount=")(\d+)',
                            lambda m: m.group(1) + str(int(m.group(2)) + 1), styles, count=1)
        else:
            styles = re.sub(r"(<styleSheet\b[^>]*>)", rf'\1<numFmts count="1">{element}'
                            "</numFmts>", styles, count=1)
        xfs = _CELL_XFS.search(styles)
        assert xfs is not None
    attrs = re.sub(r'\bcount="\d+"', f'count="{len(entries) + 1}"', xfs.group(1))
    new_xf = (f'<xf numFmtId="{fmt_id}" fontId="0" fillId="0" borderId="0" xfId="0" '
              'applyNumberFormat="1"/>')
    styles = (styles[:xfs.start()] + f"<cellXfs{attrs}>{xfs.group(2)}{new_xf}</cellXfs>"
              + styles[xfs.end():])
    files[name] = styles.encode()
    return str(len(entries))


def _edit_sheet(xml: str, writes: Sequence[TabWrite], bool_style: str | None = None) -> str:
    match = _SHEET_DATA.search(xml)
    if match is None or "<x:" in xml[:200]:
        raise PartsUnsupported("sheetData")
    rows = {_row_number(m.group(1)): (m.group(1), _cells(m.group(2) or ""))
            for m in _ROW.finditer(match.group(1) or "")}
    for write in writes:
        for r, values in enumerate(write.padded, start=write.start_row):
            attrs, cells = rows.get(r, (f' r="{r}"', {}))
            for c, value in enumerate(values, start=write.start_col):
                style = _ATTR_S.search(cells[c]) if c in cells else None
                cells.pop(c, None)
                if value != "" and value is not None:
                    own = style.group(1) if style else None
                    cells[c] = _cell(r, c, value, own if own or not isinstance(value, bool)
                                     else bool_style)
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
