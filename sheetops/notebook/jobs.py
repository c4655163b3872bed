"""Report notebooks as scheduled jobs.

A notebook becomes an automation by name, in code, never by a path in the sheet::

    # in a module named in SHEETOPS_AUTOMATIONS
    from sheetops.notebook.jobs import register_notebook

    register_notebook("weekly_report", Path(__file__).parent / "weekly_report.ipynb")

A Jobs row naming ``weekly_report`` then runs it like any automation: the row's params
are injected after the notebook's ``parameters`` cell (plus ``run_id`` and ``job``), each
cell may take the job's ``timeout_s`` (and the worker is stopped at the same deadline),
and a failing cell is a failed attempt, retried per ``max_attempts``, with the cell's
traceback. The executed notebook and its HTML rendering are kept beside the store as
``notebooks/<run id>.ipynb`` / ``.html``; the result names them (``output``: the HTML,
on the Runs tab's output column and the dashboard's Runs and Job detail pages, where it
can be read and downloaded; ``notebook``: the executed ``.ipynb``). A failed run's error
names the failing cell and the kept HTML; its attempt keeps the cell's traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sheetops.errors import RetryableError
from sheetops.registry import registry
from sheetops.store import OUTPUT_KEY

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class NotebookCellFailed(RetryableError):
    """A cell of a scheduled notebook raised (retried like any failed attempt)."""


def output_dir(store_url: str) -> Path:
    """``notebooks/`` beside a SQLite store file; under the working directory's
    ``.sheetops/`` for a server database."""
    prefix = "sqlite:///"
    if store_url.startswith(prefix) and ":memory:" not in store_url:
        return Path(store_url[len(prefix):]).resolve().parent / "notebooks"
    return Path.cwd() / ".sheetops" / "notebooks"


def _keep(book: Any, folder: Path, run_id: str, attempt: int) -> tuple[Path, Path]:
    import nbformat
    from nbconvert import HTMLExporter

    folder.mkdir(parents=True, exist_ok=True)
    stem = run_id if attempt == 1 else f"{run_id}.attempt{attempt}"
    notebook, page = folder / f"{stem}.ipynb", folder / f"{stem}.html"
    nbformat.write(book, notebook)
    html, _ = HTMLExporter().from_notebook_node(book)
    page.write_text(html, encoding="utf-8")
    return notebook, page


def register_notebook(name: str, path: str | Path, description: str = "") -> None:
    """Make notebook ``path`` the automation ``name``."""
    from sheetops.notebook.execute import NotebookFailed, execute_notebook

    source = Path(path).resolve()

    def run_notebook(ctx: Any) -> dict[str, Any]:
        from sheetops.settings import get_settings

        folder = output_dir(ctx.request.store_url or get_settings().resolved_store_url())
        parameters = {**ctx.params, "run_id": ctx.run_id, "job": ctx.job}
        try:
            book = execute_notebook(source, parameters, timeout_s=ctx.request.timeout_s,
                                    cwd=source.parent)
        except NotebookFailed as exc:
            _, page = _keep(exc.notebook, folder, ctx.run_id, ctx.attempt)
            cause = RuntimeError(_ANSI.sub("", exc.traceback) or str(exc))
            raise NotebookCellFailed(f"{exc} (executed notebook: {page})") from cause
        notebook, page = _keep(book, folder, ctx.run_id, ctx.attempt)
        ctx.log.info("notebook %s ran; output %s", source.name, page)
        return {"records_out": 1, OUTPUT_KEY: str(page), "notebook": str(notebook)}

    run_notebook.__name__ = run_notebook.__qualname__ = f"notebook_{name}"
    run_notebook.__module__ = f"sheetops.notebook.jobs:{source}"
    registry.register(name, run_notebook,
                      description or f"Runs the notebook {source.name} with the row's params")
