"""Execute a notebook top to bottom in a real Jupyter kernel, papermill style.

The parameters are injected after the cell tagged ``parameters`` (papermill's own
injection, so a notebook behaves the same under ``papermill`` on the command line); the
cells run with nbclient under one per-cell timeout. A cell that raises is a
:class:`NotebookFailed` carrying the executed notebook (with the traceback in its
output); a kernel that dies is one too, as soon as nbclient notices, never a hang.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sheetops.errors import SheetopsError


class NotebookFailed(SheetopsError):
    """A notebook's cell raised, or its kernel died; ``notebook`` is what ran."""

    def __init__(self, message: str, notebook: Any, traceback: str = "") -> None:
        super().__init__(message)
        self.notebook = notebook
        self.traceback = traceback


def execute_notebook(path: str | Path, parameters: Mapping[str, Any] | None = None, *,
                     timeout_s: float = 600, cwd: str | Path | None = None,
                     kernel_name: str = "python3") -> Any:
    """Run notebook ``path`` with ``parameters``; return the executed notebook node."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from papermill.parameterize import parameterize_notebook

    source = Path(path)
    book = nbformat.read(source, as_version=4)
    for cell in book.cells:  # papermill reads every cell's tags
        cell.metadata.setdefault("tags", [])
    book.metadata.setdefault("papermill", {})
    book = parameterize_notebook(book, dict(parameters or {}), kernel_name=kernel_name,
                                 language="python")
    client = NotebookClient(book, timeout=int(timeout_s), kernel_name=kernel_name,
                            resources={"metadata": {"path": str(cwd or source.parent)}},
                            shutdown_kernel="immediate")
    try:
        client.execute()
    except CellExecutionError as exc:
        raise NotebookFailed(f"{source.name}: {_failed_cell(book)} failed: {exc.ename}: "
                             f"{exc.evalue}", book, str(exc)) from None
    except CellTimeoutError as exc:
        raise NotebookFailed(f"{source.name}: a cell ran past {timeout_s:g}s", book,
                             str(exc)) from None
    except DeadKernelError as exc:
        raise NotebookFailed(f"{source.name}: the kernel died ({exc})", book) from None
    return book


def _failed_cell(book: Any) -> str:
    """``cell In [n]`` (as Jupyter labels it) of the cell whose output is an error."""
    for cell in book.cells:
        if cell.cell_type == "code" and any(o.get("output_type") == "error"
                                            for o in cell.get("outputs", [])):
            return f"cell In [{cell.get('execution_count')}]"
    return "a cell"


def cell_value(book: Any, name: str) -> Any:
    """The value the cell ending in the bare expression ``name`` displayed, evaluated
    back from its ``text/plain`` form (plain literals only)."""
    import ast

    for cell in book.cells:
        if cell.cell_type == "code" and cell.source.strip().splitlines()[-1:] == [name]:
            for output in cell.get("outputs", []):
                text = output.get("data", {}).get("text/plain")
                if text is not None:
                    return ast.literal_eval(text)
    raise KeyError(f"no cell displays {name!r}")
