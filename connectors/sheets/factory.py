"""Choose a sheet backend from what the user typed after ``--sheet``.

Backends register under the ``sheetops.sheets`` entry-point group; each says with
:meth:`~sheetops.sheets.SheetBackend.matches` whether a location is its kind, and the
first that claims it opens it. The choosing is :func:`sheetops.plugins.open_sheet`
(the engine opens a pipeline's other sheets with it too); this name stays for the
callers written against it.
"""

from __future__ import annotations

from sheetops import plugins
from sheetops.sheets import SheetBackend


def open_sheet(location: str) -> SheetBackend:
    """Open the config sheet at ``location`` (an ``.xlsx`` path or a Google Sheet URL/key)."""
    return plugins.open_sheet(location)
