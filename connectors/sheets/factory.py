"""Choose a sheet backend from what the user typed after ``--sheet``.

Backends register under the ``sheetops.sheets`` entry-point group with a ``matches``
class method; the first one that claims the location opens it. A backend whose optional
extra is missing is not skipped silently: when nothing else claims the location, the
error names the extra to install. Loading goes through :mod:`sheetops.plugins`.
"""

from __future__ import annotations

from sheetops.connectors.sheets.base import SheetBackend

from sheetops import plugins
from sheetops.errors import SheetError

_BUILTIN = {
    "workbook": "sheetops.connectors.sheets.workbook:WorkbookSheet",
    "google": "sheetops.connectors.sheets.google:GoogleSheet",
}


def open_sheet(location: str) -> SheetBackend:
    """Open the config sheet at ``location`` (an ``.xlsx`` path or a Google Sheet URL/key)."""
    if not location:
        raise SheetError("No sheet given: pass --sheet PATH.xlsx or a Google Sheet URL, "
                         "or set SHEETOPS_SHEET.")
    missing: list[plugins.MissingExtraError] = []
    for alias in plugins.available("sheetops.sheets", _BUILTIN):
        try:
            cls = plugins.load("sheetops.sheets", alias, _BUILTIN)
        except plugins.MissingExtraError as exc:
            missing.append(exc)
            continue
        if cls.matches(location):
            return cls.open(location)
    if missing:
        extras = " or ".join(f"pip install 'sheetops[{exc.extra}]'" for exc in missing)
        raise SheetError(f"{location!r} is not an .xlsx workbook path, and the backends "
                         f"for other sheets are not installed: for a Google Sheet URL or "
                         f"key, {extras}.")
    raise SheetError(f"{location!r} is neither an .xlsx workbook path nor a Google Sheet "
                     "URL or key.")
