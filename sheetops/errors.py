"""Every error sheetops raises on purpose, as a type.

A ``ConfigError`` carries the tab and cell it came from; a ``RetryableError`` is worth
another attempt, a ``PermanentError`` is not. The CLI turns any ``SheetopsError`` into
one clear sentence and an exit code, never a traceback.
"""

from __future__ import annotations


class SheetopsError(Exception):
    """Base class: a problem a user can act on, described in one sentence."""


class ConfigError(SheetopsError):
    """A config value that cannot be used, located by tab and A1 cell."""

    def __init__(self, tab: str, cell: str, problem: str, value: str = "") -> None:
        self.tab, self.cell, self.problem, self.value = tab, cell, problem, value
        super().__init__(f"{tab}!{cell}: {problem}")


class SheetError(SheetopsError):
    """The config sheet cannot be opened, read or written."""


class SheetUnavailable(SheetError):
    """A transient failure talking to the sheet (outage, 429, 5xx): try again later."""


class StoreError(SheetopsError):
    """The store cannot be opened or is of an unknown kind."""


class StoreUnavailable(StoreError):
    """The store ended this process's connection mid-write (a server restart, or a
    session ended while this process was paused): nothing was written; try again."""


class UnknownAutomation(SheetopsError):
    """The sheet names an automation nobody registered."""


class RetryableError(SheetopsError):
    """Raise from an automation to ask for another attempt (any other exception does too)."""


class PermanentError(SheetopsError):
    """Raise from an automation to fail the run now, without further attempts."""


class RunTimeout(SheetopsError):
    """An attempt ran past its job's ``timeout_s`` and its worker process was killed."""


class WorkerLost(SheetopsError):
    """The worker process running an attempt died (crash, out of memory, kill)."""
