"""Automations are registered by name; the sheet can name nothing else.

``@automation("name")`` puts a function in the registry. Modules come only from what the
deployment names: entry points in the ``sheetops.automations`` group (the built-ins are
registered there too) and ``SHEETOPS_AUTOMATIONS`` (comma-separated module names of the
installed environment or ``PYTHONPATH``). The working directory is never searched: running
``sheetops`` in a shared folder that holds an ``automations/`` package or a
``requests.py`` must not run that code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from sheetops.errors import SheetopsError, UnknownAutomation

AutomationFn = Callable[[Any], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Automation:
    name: str
    fn: AutomationFn
    description: str
    module: str


class AutomationRegistry:
    """Name → automation. Names are what the Jobs tab's ``automation`` column holds."""

    def __init__(self) -> None:
        self._by_name: dict[str, Automation] = {}
        self._discovered: set[str] = set()
        self.failed: dict[str, str] = {}  # module → why it could not be imported

    def register(self, name: str, fn: AutomationFn, description: str = "") -> None:
        existing = self._by_name.get(name)
        if existing and (existing.module, existing.fn.__qualname__) != (
                fn.__module__, fn.__qualname__):
            raise SheetopsError(
                f"automation {name!r} is registered twice: in {existing.module} and "
                f"{fn.__module__}")
        doc = description or (fn.__doc__ or "").strip().splitlines()[0:1]
        self._by_name[name] = Automation(
            name, fn, doc if isinstance(doc, str) else (doc[0] if doc else ""),
            fn.__module__)

    def get(self, name: str) -> Automation:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownAutomation(
                f"no automation named {name!r}; registered: "
                f"{', '.join(sorted(self._by_name)) or 'none'}") from None

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def discover(self, extra_modules: Iterable[str] = ()) -> list[str]:
        """Import the entry-point modules and ``extra_modules`` (never from the cwd).

        Returns the modules that could not be imported, with the reason, so the CLI can
        report them without stopping the automations that did load; they are also kept in
        :attr:`failed` to explain an ``unknown automation`` problem.
        """
        problems: list[str] = []
        for module in [*_entry_point_modules(),
                       *(m.strip() for m in extra_modules if m.strip())]:
            if module in self._discovered:
                continue
            try:
                importlib.import_module(module)
                self._discovered.add(module)
                self.failed.pop(module, None)
            except Exception as exc:
                self.failed[module] = f"{type(exc).__name__}: {exc}"
                problems.append(f"{module}: {self.failed[module]}")
        return problems


ENTRY_POINT_GROUP = "sheetops.automations"


def _entry_point_modules() -> list[str]:
    """Modules named in the ``sheetops.automations`` entry-point group, the built-ins'
    as well as a user's: the registry knows no package by name."""
    return [ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)]


registry = AutomationRegistry()


def automation(name: str, description: str = "") -> Callable[[AutomationFn], AutomationFn]:
    """Register ``fn(ctx)`` under ``name`` so the Jobs tab can schedule it."""

    def decorate(fn: AutomationFn) -> AutomationFn:
        registry.register(name, fn, description)
        return fn

    return decorate


def discover_from_settings() -> list[str]:
    from sheetops.settings import get_settings

    return registry.discover(get_settings().automations.split(","))
