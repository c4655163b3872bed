"""Automations are registered by name; the sheet can name nothing else.

``@automation("name")`` puts a function in the registry. Modules are discovered from
the ``automations`` package and from ``SHEETOPS_AUTOMATIONS`` (comma-separated module
names importable from ``sys.path``; the current directory counts), so a team can keep
its automations in its own repository.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
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
        """Import the built-in ``automations`` package and ``extra_modules``.

        Returns the modules that could not be imported, with the reason, so the CLI can
        report them without stopping the automations that did load.
        """
        problems: list[str] = []
        cwd = str(Path.cwd())
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        modules: list[str] = []
        try:
            from sheetops import automations

            modules += [f"sheetops.automations.{m.name}" for m in pkgutil.iter_modules(
                automations.__path__) if not m.name.startswith("_")]
        except ImportError as exc:  # pragma: no cover - package missing from install
            problems.append(f"automations: {exc}")
        modules += [m.strip() for m in extra_modules if m.strip()]
        for module in modules:
            if module in self._discovered:
                continue
            try:
                importlib.import_module(module)
                self._discovered.add(module)
            except Exception as exc:
                problems.append(f"{module}: {type(exc).__name__}: {exc}")
        return problems


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
