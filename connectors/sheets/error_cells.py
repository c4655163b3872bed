"""Error values (``#DIV/0!``, ``#REF!``, ...) of an ``.xlsx`` file, which calamine drops.

Calamine hands an error cell to Python as ``""``, so ``=1/0`` in ``max_attempts`` read as
empty and became the default. Google's values API shows the error text itself; this
puts the same text back for a workbook, so the parser sees what the user sees and
reports it at its cell. The slower openpyxl read runs only when the file holds an
error cell at all (a quick scan of the sheets' XML for ``t="e"``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from openpyxl import load_workbook


def _has_error_cells(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(b't="e"' in archive.read(name) for name in archive.namelist()
                   if name.startswith("xl/worksheets/") and name.endswith(".xml"))


def overlay_error_cells(path: Path, tabs: dict[str, list[list[str]]]) -> None:
    """Write each error cell's text (e.g. ``#DIV/0!``) into ``tabs`` in place."""
    if not _has_error_cells(path):
        return
    wb = load_workbook(path, read_only=True, data_only=True)
    try:
        for name, rows in tabs.items():
            for r, row in enumerate(wb[name].iter_rows()):
                for c, cell in enumerate(row):
                    if getattr(cell, "data_type", None) != "e" or cell.value is None:
                        continue
                    while len(rows) <= r:
                        rows.append([])
                    rows[r].extend([""] * (c + 1 - len(rows[r])))
                    rows[r][c] = str(cell.value)
    finally:
        wb.close()
