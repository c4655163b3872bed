"""The one interface every config-sheet backend implements, and the tab specs it moves.

This is the engine's side of the sheet: :class:`SheetBackend` and the values that cross
it (:class:`TabWrite`, :class:`TabSpec`, :data:`CellValue`...). Implementations live in
``sheetops.connectors.sheets`` (or a user's package) and register under the
``sheetops.sheets`` entry-point group; the engine never imports one by name.

Backends move plain rows of cells; turning rows into a configuration happens once, in
``sheetops.config``. A backend knows nothing about jobs, runs or the outbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, Self, runtime_checkable

CellValue = str | int | float | bool | None


@dataclass(frozen=True)
class ColumnSpec:
    """A column of a tab: its header, the note shown on the header cell, and its input rule."""

    name: str
    note: str
    choices: tuple[str, ...] = ()  # a dropdown of allowed values
    checkbox: bool = False  # TRUE/FALSE validation
    width: int = 0  # characters its values need (a timestamp, an id); 0: the header's
    colours: tuple[tuple[str, str], ...] = ()  # (value, RRGGBB): cells equal to it coloured

    @property
    def display_width(self) -> int:
        """Column width in characters: enough for the header and the values, bounded so
        one long message column does not push the rest off screen."""
        return max(12, min(60, max(len(self.name) + 6, self.width + 2)))


@dataclass(frozen=True)
class TabSpec:
    """What ``sheetops init`` creates for a tab: header row, notes, validations, examples."""

    name: str
    columns: tuple[ColumnSpec, ...]
    examples: tuple[tuple[CellValue, ...], ...] = ()
    system: bool = False  # written by sheetops, never edited by hand

    @property
    def headers(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class TabWrite:
    """Cell values to put into a tab, starting at ``start_row`` and ``start_col``
    (1-based; column A unless told).

    Values are written RAW: a string starting with ``=`` stays text. Rows shorter than
    ``width`` are padded with blanks, so a write also clears what was there before.
    """

    tab: str
    rows: list[list[CellValue]]
    start_row: int = 1
    width: int = 0
    start_col: int = 1

    @property
    def padded(self) -> list[list[CellValue]]:
        width = max([self.width, *(len(r) for r in self.rows)]) if self.rows else self.width
        return [list(r) + [""] * (width - len(r)) for r in self.rows]


@dataclass
class InitReport:
    """What ``ensure_tabs`` did: tabs created, tabs left alone because they existed."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


@runtime_checkable
class SheetBackend(Protocol):
    r"""A spreadsheet that holds the config tabs and receives the status tabs.

    The sheet factory calls the two class methods: the first backend whose
    :meth:`matches` claims what the user typed after ``--sheet`` is :meth:`open`\ ed.
    The contract every backend must keep is ``tests/test_sheet_contract.py``.
    """

    #: Where the sheet lives, for people: a file path or a spreadsheet URL.
    location: str

    @classmethod
    def matches(cls, location: str) -> bool:
        """Whether ``location`` names a sheet of this kind (no I/O: a pattern check)."""
        ...

    @classmethod
    def open(cls, location: str) -> Self:
        """Open the sheet at ``location``; raise :class:`~sheetops.errors.SheetError` with
        one sentence when it cannot be."""
        ...

    def read_tabs(self, names: Sequence[str]) -> dict[str, list[list[str]]]:
        """Return the rows of each named tab that exists (one request for all of them).

        Cells come back as display strings (booleans as ``TRUE``/``FALSE``); trailing
        empty cells and rows are trimmed. A missing tab is absent from the result.
        """
        ...

    def write_batch(self, writes: Sequence[TabWrite]) -> None:
        """Apply all writes in one request; create or grow a tab first when needed."""
        ...

    def ensure_tabs(self, specs: Sequence[TabSpec]) -> InitReport:
        """Create the tabs that are missing (header, notes, validations, frozen header,
        example rows). Existing tabs and their rows are not touched."""
        ...
