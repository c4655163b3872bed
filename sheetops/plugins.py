"""The one loader for everything sheetops picks by name: executors, sheet backends,
alert channels.

Plugins register under an entry-point group (:data:`EXECUTORS`, :data:`SHEETS`,
:data:`ALERT_CHANNELS`); the built-ins are registered there exactly as a user's plugin
is (``pyproject.toml``; reinstall after adding one), so this module names no
implementation. An alias nobody registered is an :class:`UnknownPluginError` (a
:class:`LookupError`) naming the ones that exist; a plugin whose import fails for want
of an optional dependency is a :class:`MissingExtraError` that names the extra to
install (``pip install 'sheetops[google]'``). Other import errors propagate: they are
bugs.

The loader imports by name at run time, so the engine depends on no concrete connector.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from sheetops.errors import SheetError, SheetopsError

EXECUTORS = "sheetops.executors"
SHEETS = "sheetops.sheets"
ALERT_CHANNELS = "sheetops.alert_channels"

# What one plugin of each group is called in messages.
_KIND = {EXECUTORS: "executor", SHEETS: "sheet backend", ALERT_CHANNELS: "alert channel"}

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
        self.missing = missing


class UnknownPluginError(SheetopsError, LookupError):
    """No plugin of a group is registered under an alias; names the ones that are."""

    def __init__(self, group: str, alias: str, known: list[str]) -> None:
        super().__init__(f"unknown {kind_of(group)} {alias!r}; available: "
                         f"{', '.join(known) or 'none'}")
        self.group = group
        self.alias = alias
        self.known = known


def kind_of(group: str) -> str:
    """What one plugin of ``group`` is called in messages (``sheet backend``)."""
    return _KIND.get(group, group)


def require_extra(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` unless ``extra``'s key module is importable."""
    module = MODULE_OF_EXTRA[extra]
    if importlib.util.find_spec(module) is None:
        raise MissingExtraError(what, extra, module)


def available(group: str) -> dict[str, str]:
    """Alias -> ``module:attr`` for ``group``'s installed entry points, sheetops' own
    first: another distribution cannot take a built-in's alias."""
    found: dict[str, str] = {}
    for ep in sorted(entry_points(group=group), key=lambda ep: not _is_builtin(ep)):
        found.setdefault(ep.name, ep.value)
    return found


def _is_builtin(ep: EntryPoint) -> bool:
    return ep.dist is not None and ep.dist.name == "sheetops"


def load(group: str, alias: str) -> Any:
    """Import the object registered as ``alias`` in ``group``.

    Raises :class:`UnknownPluginError` for an alias nobody registered and
    :class:`MissingExtraError` when its import fails for want of an optional extra."""
    targets = available(group)
    target = targets.get(alias)
    if target is None:
        raise UnknownPluginError(group, alias, sorted(targets))
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        extra = EXTRA_OF_MODULE.get(top)
        if extra is None:
            raise
        raise MissingExtraError(f"the {kind_of(group)} {alias!r}", extra, top) from None
    obj: Any = module
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def load_all(group: str) -> tuple[dict[str, Any], list[MissingExtraError]]:
    """Every plugin of ``group`` that imports (sheetops' own first), and the
    ones that could not for want of an extra, so a caller can say what to install."""
    loaded: dict[str, Any] = {}
    missing: list[MissingExtraError] = []
    for alias in available(group):
        try:
            loaded[alias] = load(group, alias)
        except MissingExtraError as exc:
            missing.append(exc)
    return loaded, missing


def load_channel(scheme: str) -> Any:
    """The alert channel registered for ``scheme`` (the part of ``email:ops@x`` before
    the colon), case-insensitively."""
    return load(ALERT_CHANNELS, scheme.strip().lower())


def open_sheet(location: str) -> Any:
    """Open the sheet at ``location`` (an ``.xlsx`` path or a Google Sheet URL/key) with
    the first registered sheet backend that claims it.

    A backend whose import fails for want of an optional extra is never skipped in
    silence: when no other backend claims the location, the error names each extra."""
    if not location:
        raise SheetError("No sheet given: pass --sheet PATH.xlsx or a Google Sheet URL, "
                         "or set SHEETOPS_SHEET.")
    backends, missing = load_all(SHEETS)
    for backend in backends.values():
        if backend.matches(location):
            return backend.open(location)
    if missing:
        raise SheetError(
            f"{location!r} is not an .xlsx workbook path, and these sheet backends are not "
            f"installed: {'; '.join(str(exc) for exc in missing)}.")
    raise SheetError(f"{location!r} is neither an .xlsx workbook path nor a Google Sheet "
                     "URL or key.")
