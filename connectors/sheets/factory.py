"""Choose a sheet backend from what the user typed after ``--sheet``.

Backends register under the ``sheetops.sheets`` entry-point group with a ``matches``
class method; the first one that claims the location opens it. No ``if`` chains here.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from sheetops.connectors.sheets.base import SheetBackend

from sheetops.errors import SheetError

_BUILTIN = {
    "workbook": "sheetops.connectors.sheets.workbook:WorkbookSheet",
    "google": "sheetops.connectors.sheets.google:GoogleSheet",
}


def _backend_classes() -> list[type]:
    found: dict[str, str] = dict(_BUILTIN)
    for ep in entry_points(group="sheetops.sheets"):
        found.setdefault(ep.name, ep.value)
    classes = []
    for target in found.values():
        module_name, _, attr = target.partition(":")
        try:
            module = __import__(module_name, fromlist=[attr])
        except ImportError:
            continue  # an optional extra that is not installed
        classes.append(getattr(module, attr))
    return classes


def open_sheet(location: str) -> SheetBackend:
    """Open the config sheet at ``location`` (an ``.xlsx`` path or a Google Sheet URL/key)."""
    if not location:
        raise SheetError("No sheet given: pass --sheet PATH.xlsx or a Google Sheet URL, "
                         "or set SHEETOPS_SHEET.")
    for cls in _backend_classes():
        if cls.matches(location):
            return cls.open(location)
    raise SheetError(f"{location!r} is neither an .xlsx workbook path nor a Google Sheet "
                     "URL or key.")
