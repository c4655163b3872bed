"""One loader for everything sheetops picks by name: executors and sheet backends.

Plugins register under an entry-point group (``sheetops.executors``, ``sheetops.sheets``);
built-ins are listed too so a checkout without installed metadata still finds them. An
alias nobody registered is a :class:`LookupError` naming the ones that exist; a plugin
whose import fails for want of an optional dependency is a :class:`MissingExtraError`
that names the extra to install (``pip install 'sheetops[google]'``).
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import entry_points
from typing import Any

from sheetops.errors import SheetopsError

# Top-level module of an optional dependency -> the extra in pyproject.toml that brings it.
EXTRA_OF_MODULE = {
    "gspread": "google", "google": "google",
    "streamlit": "dashboard", "altair": "dashboard",
    "nbclient": "notebooks", "nbformat": "notebooks", "ipykernel": "notebooks",
    "jupyterlab": "notebooks",
    "celery": "distributed", "redis": "distributed", "psycopg": "distributed",
}
# The module that proves an extra is installed (checked without importing it).
MODULE_OF_EXTRA = {"google": "gspread", "dashboard": "streamlit", "notebooks": "nbclient",
                   "distributed": "celery"}


class MissingExtraError(SheetopsError):
    """A feature needs an optional extra that is not installed."""

    def __init__(self, what: str, extra: str, missing: str) -> None:
        super().__init__(f"{what} needs the '{extra}' extra, which is not installed "
                         f"(no module {missing!r}): pip install 'sheetops[{extra}]'")
        self.extra = extra


def require_extra(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` unless ``extra``'s key module is importable."""
    module = MODULE_OF_EXTRA[extra]
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(what, extra, module)


def available(group: str, builtin: dict[str, str]) -> dict[str, str]:
    """Alias -> ``module:attr`` for ``group``: the built-ins, then installed entry points."""
    found = dict(builtin)
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep.value)
    return found


def load(group: str, alias: str, builtin: dict[str, str]) -> Any:
    """Import the object registered as ``alias`` in ``group``.

    Raises LookupError for an unknown alias and MissingExtraError when its import fails
    for want of an optional dependency (other import errors propagate: they are bugs)."""
    targets = available(group, builtin)
    target = targets.get(alias)
    if target is None:
        raise LookupError(f"unknown {group.removeprefix('sheetops.').removesuffix('s')} {alias!r}; "
                          f"available: {', '.join(sorted(targets))}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        extra = EXTRA_OF_MODULE.get(top)
        if extra is None:
            raise
        raise MissingExtraError(f"{alias!r} ({group})", extra, top) from None
    return getattr(module, attr)
