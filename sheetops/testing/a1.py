"""A1 notation as the Sheets API v4 reads and writes it.

Parsing turns ``'My Tab'!A1:C3`` into a sheet name and a zero-based, half-open grid
range whose missing bounds mean "unbounded" (``A:C``, ``2:5``, a bare sheet name).
Formatting goes the other way, quoting a sheet name only when Google would
(``Sheet1!A1:B2`` but ``'My Tab'!A1:B2``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from openpyxl.utils import get_column_letter

_CELL = re.compile(r"^([A-Za-z]{0,3})([0-9]*)$")
_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOOKS_LIKE_CELL = re.compile(r"^[A-Za-z]{1,3}[0-9]+$")


class A1Error(ValueError):
    """A range that cannot be parsed."""


@dataclass(frozen=True)
class Bounds:
    """A zero-based, half-open cell rectangle; ``None`` means unbounded on that side."""

    row0: int = 0
    col0: int = 0
    row1: int | None = None
    col1: int | None = None

    def clip(self, rows: int, cols: int) -> Bounds:
        """The same rectangle with unbounded (or too large) ends cut at the grid size."""
        row1 = rows if self.row1 is None else min(self.row1, rows)
        col1 = cols if self.col1 is None else min(self.col1, cols)
        return Bounds(self.row0, self.col0, row1, col1)


def col_letters(index: int) -> str:
    """0 -> ``A``, 25 -> ``Z``, 26 -> ``AA``."""
    return get_column_letter(index + 1)


def col_index(letters: str) -> int:
    """``A`` -> 0, ``AA`` -> 26."""
    value = 0
    for ch in letters.upper():
        value = value * 26 + ord(ch) - 64
    return value - 1


def quote_sheet(name: str) -> str:
    """A sheet name as Google writes it in a range: bare when it is a plain word."""
    if _PLAIN_NAME.match(name) and not _LOOKS_LIKE_CELL.match(name):
        return name
    return "'" + name.replace("'", "''") + "'"


def split_range(text: str) -> tuple[str | None, str | None]:
    """Split ``'My Tab'!A1:B2`` into (``My Tab``, ``A1:B2``).

    ``Sheet1`` gives (``Sheet1``, None) *and* ``A1:B2`` gives (None, ``A1:B2``) only
    after the caller decides which it is; here a string without ``!`` that is not
    quoted is returned as (None, text) and the caller resolves the ambiguity.
    """
    text = text.strip()
    if text.startswith("'"):
        i, name = 1, []
        while i < len(text):
            ch = text[i]
            if ch == "'":
                if text[i + 1:i + 2] == "'":
                    name.append("'")
                    i += 2
                    continue
                break
            name.append(ch)
            i += 1
        else:
            raise A1Error(f"Unable to parse range: {text}")
        rest = text[i + 1:]
        if not rest:
            return "".join(name), None
        if not rest.startswith("!"):
            raise A1Error(f"Unable to parse range: {text}")
        return "".join(name), rest[1:] or None
    if "!" in text:
        name, _, a1 = text.partition("!")
        return name, a1 or None
    return None, text


def parse_bounds(a1: str) -> Bounds:
    """``A1:C3``, ``A:C``, ``2:5``, ``B2``, ``A5:A`` -> :class:`Bounds`."""
    start, sep, end = a1.strip().partition(":")
    m1 = _CELL.match(start)
    m2 = _CELL.match(end) if sep else m1
    if not m1 or not m2 or not (m1.group(1) or m1.group(2)) or not (m2.group(1) or m2.group(2)):
        raise A1Error(f"Unable to parse range: {a1}")
    c0 = col_index(m1.group(1)) if m1.group(1) else None
    r0 = int(m1.group(2)) - 1 if m1.group(2) else None
    c1 = col_index(m2.group(1)) + 1 if m2.group(1) else None
    r1 = int(m2.group(2)) if m2.group(2) else None
    if (r0 is not None and r0 < 0) or (r1 is not None and r1 < 1):
        raise A1Error(f"Unable to parse range: {a1}")
    if not sep:
        if c0 is None:  # a bare row number: the whole row
            return Bounds(r0 or 0, 0, (r0 or 0) + 1, None)
        if r0 is None:  # a bare column: the whole column
            return Bounds(0, c0, None, c0 + 1)
        return Bounds(r0, c0, r0 + 1, c0 + 1)
    if m1.group(1) and not m2.group(1) and m2.group(2) and not m1.group(2):
        raise A1Error(f"Unable to parse range: {a1}")
    row0, col0 = r0 or 0, c0 or 0
    if r1 is not None and r1 - 1 < row0:
        row0, r1 = r1 - 1, row0 + 1
    if c1 is not None and c1 - 1 < col0:
        col0, c1 = c1 - 1, col0 + 1
    return Bounds(row0, col0, r1, c1)


def is_a1(text: str) -> bool:
    """Whether ``text`` parses as a cell range (without a sheet name)."""
    try:
        parse_bounds(text)
    except A1Error:
        return False
    return True


def format_range(sheet: str, b: Bounds) -> str:
    """``Sheet1!A1:C3`` for a bounded rectangle (a single cell prints as ``Sheet1!A1``)."""
    assert b.row1 is not None and b.col1 is not None
    start = f"{col_letters(b.col0)}{b.row0 + 1}"
    end = f"{col_letters(b.col1 - 1)}{b.row1}"
    a1 = start if start == end else f"{start}:{end}"
    return f"{quote_sheet(sheet)}!{a1}"
