"""Choose a sheet backend from what the user typed after ``--sheet``.

Backends register under the ``sheetops.sheets`` entry-point group (through
:mod:`sheetops.plugins`); each says with :meth:`~sheetops.sheets.SheetBackend.matches`
whether a location is its kind, and the first that claims it opens it. A backend whose
import fails for want of an optional extra is never skipped in silence: when no other
backend claims the location, the error names each extra to install.
"""

from __future__ import annotations

from sheetops import plugins
from sheetops.errors import SheetError
from sheetops.sheets import SheetBackend


def open_sheet(location: str) -> SheetBackend:
    """Open the config sheet at ``location`` (an ``.xlsx`` path or a Google Sheet URL/key)."""
    if not location:
        raise SheetError("No sheet given: pass --sheet PATH.xlsx or a Google Sheet URL, "
                         "or set SHEETOPS_SHEET.")
    backends, missing = plugins.load_all(plugins.SHEETS)
    for backend in backends.values():
        if backend.matches(location):
            return backend.open(location)
    if missing:
        raise SheetError(
            f"{location!r} is not an .xlsx workbook path, and these sheet backends are not "
            f"installed: {'; '.join(str(exc) for exc in missing)}.")
    raise SheetError(f"{location!r} is neither an .xlsx workbook path nor a Google Sheet "
                     "URL or key.")
