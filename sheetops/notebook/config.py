"""The config sheet in a notebook: typed tabs, problems with their cells, next runs.

``cfg = open_config("ops.xlsx")`` (or a Google Sheet URL, or the emulator's URL) reads
the sheet once; :meth:`Config.reload` reads it again. Nothing here writes to the sheet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from sheetops import tabs
from sheetops.config.model import JobSpec, Snapshot
from sheetops.errors import SheetopsError
from sheetops.notebook import history
from sheetops.notebook.display import section
from sheetops.notebook.frames import tab_frame
from sheetops.notebook.quota import QuotaMeter
from sheetops.sheets import SheetBackend
from sheetops.templates import Rendered, TemplateSpec, render

if TYPE_CHECKING:
    from sheetops.store import Store


class Config:
    """One config sheet: its tabs as typed DataFrames and the parsed snapshot."""

    def __init__(self, sheet: SheetBackend) -> None:
        self.sheet = sheet
        self.location = getattr(sheet, "location", str(getattr(sheet, "path", "")))
        self.quota: QuotaMeter | None = None
        self._store: Store | None = None  # opened by sheetops.notebook.runs.store_of
        if hasattr(sheet, "http") and hasattr(sheet.http, "session"):
            self.quota = QuotaMeter().attach(sheet)
        self.reload()

    def reload(self) -> Config:
        """Read every config tab again (one read) and parse it as the engine does."""
        from sheetops.engine import read_config

        self._rows = self.sheet.read_tabs((*tabs.CONFIG_TABS, tabs.VALIDATION))
        self.snapshot: Snapshot = read_config(_Rows(self._rows))
        return self

    # -- tabs ----------------------------------------------------------------------------
    def tab(self, name: str) -> pd.DataFrame:
        """Tab ``name`` as a DataFrame typed from its column specs (index: sheet row)."""
        if name not in tabs.CONFIG_TABS:
            raise SheetopsError(f"{name!r} is not a config tab; one of "
                                f"{', '.join(tabs.CONFIG_TABS)}")
        return tab_frame(name, self._rows.get(name, []))

    @property
    def tabs(self) -> dict[str, pd.DataFrame]:
        return {name: self.tab(name) for name in tabs.CONFIG_TABS}

    @property
    def jobs(self) -> pd.DataFrame:
        return self.tab(tabs.JOBS)

    @property
    def templates(self) -> pd.DataFrame:
        return self.tab(tabs.TEMPLATES)

    @property
    def problems(self) -> pd.DataFrame:
        """Every validation problem with its tab and cell, errors first."""
        frame = pd.DataFrame([{"tab": p.tab, "cell": p.cell, "value": p.value,
                               "problem": p.problem, "severity": p.severity}
                              for p in self.snapshot.problems],
                             columns=["tab", "cell", "value", "problem", "severity"])
        return frame.sort_values("severity", kind="stable").reset_index(drop=True)

    def next_runs(self, count: int = 3) -> pd.DataFrame:
        """The next ``count`` runs of each valid, enabled job, in the job's timezone."""
        rows = []
        for spec in self.snapshot.jobs.values():
            times = history.next_runs(spec.schedule, spec.timezone, count) \
                if spec.enabled else []
            rows.append({"job": spec.job, "schedule": spec.schedule,
                         "enabled": spec.enabled,
                         **{f"next_run_{i + 1}": (times[i] if i < len(times) else pd.NaT)
                            for i in range(count)}})
        return pd.DataFrame(rows, columns=["job", "schedule", "enabled",
                                           *(f"next_run_{i + 1}" for i in range(count))])

    # -- rows ----------------------------------------------------------------------------
    def job(self, name: str) -> JobSpec:
        """The valid row of job ``name`` (its problems, if it has any, in the error)."""
        if name in self.snapshot.jobs:
            return self.snapshot.jobs[name]
        problems = self.snapshot.invalid.get(name)
        if problems:
            raise SheetopsError(f"job {name!r} is invalid: "
                                + "; ".join(str(p) for p in problems))
        raise SheetopsError(f"no job {name!r} on the Jobs tab; jobs: "
                            f"{', '.join(sorted(self.snapshot.jobs)) or 'none'}")

    def template(self, name: str) -> TemplateSpec:
        try:
            return self.snapshot.templates[name]
        except KeyError:
            raise SheetopsError(f"no template {name!r} on the Templates tab; templates: "
                                f"{', '.join(sorted(self.snapshot.templates)) or 'none'}"
                                ) from None

    def render_template(self, template: str, /, **variables: Any) -> Rendered:
        """Render Templates row ``template`` with sample ``variables`` (the same sandbox
        and limits as a run)."""
        return RenderedTemplate.of(render(self.template(template), variables))

    # -- display -------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (f"Config({self.location!r}: {len(self.snapshot.jobs)} jobs, "
                f"{len(self.snapshot.problems)} problems)")

    def _repr_html_(self) -> str:
        note = repr(self.quota) if self.quota else ""
        return section(f"Config sheet {self.location}",
                       {"Jobs": self.jobs.reset_index(), "Problems": self.problems,
                        "Next runs": self.next_runs()}, note=note,
                       ok=not self.snapshot.errors)


class RenderedTemplate(Rendered):
    """A rendered template that shows itself as an email in Jupyter."""

    @classmethod
    def of(cls, rendered: Rendered) -> RenderedTemplate:
        return cls(rendered.subject, rendered.body, rendered.format)

    def _repr_html_(self) -> str:
        import html

        body = self.body if self.is_html else f"<pre>{html.escape(self.body)}</pre>"
        return (f"<div class='sheetops-email'><b>Subject:</b> {html.escape(self.subject)}"
                f"<hr>{body}</div>")


class _Rows:
    """Rows already read, offered as a sheet so the engine's parser reads them as is."""

    def __init__(self, rows: dict[str, list[list[str]]]) -> None:
        self._rows = rows

    def read_tabs(self, names: Any) -> dict[str, list[list[str]]]:
        return {n: self._rows[n] for n in names if n in self._rows}


def open_config(location: str | SheetBackend | None = None) -> Config:
    """Open the config sheet: an ``.xlsx`` path, a Google Sheet URL (an emulator's URL
    works too), a sheet backend, or — with nothing given — ``SHEETOPS_SHEET``."""
    from sheetops.connectors.sheets.factory import open_sheet
    from sheetops.registry import discover_from_settings
    from sheetops.settings import get_settings

    discover_from_settings()
    if location is None or isinstance(location, str):
        return Config(open_sheet(str(location or get_settings().sheet)))
    return Config(location)
