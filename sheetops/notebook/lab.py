"""``sheetops notebook``: JupyterLab on loopback in ``notebooks/``, set up like ``run``.

The server listens on 127.0.0.1 only, starts in the notebooks folder, and its kernels get
the same environment as ``sheetops run`` (``SHEETOPS_*`` settings, ``.env`` already read
by the settings, ``--sheet`` as ``SHEETOPS_SHEET``) plus the project folder on
``PYTHONPATH``, so ``import automations.my_job`` and ``open_config()`` work in a cell.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from sheetops.errors import SheetopsError


def lab_command(directory: Path, *, port: int = 8888, token: str | None = None,
                open_browser: bool = False) -> list[str]:
    """The JupyterLab command line for ``directory``."""
    command = [sys.executable, "-m", "jupyterlab", "--ip=127.0.0.1", f"--port={port}",
               f"--ServerApp.root_dir={directory}", "--ServerApp.port_retries=0"]
    if not open_browser:
        command.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers: loopback, token only
        command.append("--allow-root")
    if token is not None:
        command.append(f"--IdentityProvider.token={token}")
    return command


def lab_environment(project: Path, sheet: str | None) -> dict[str, str]:
    """This process's environment, with the project importable and the sheet named."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project),
                                                      env.get("PYTHONPATH", "")]))
    if sheet:
        env["SHEETOPS_SHEET"] = sheet
    return env


def start_lab(project: Path, *, sheet: str | None = None, port: int = 8888,
              token: str | None = None, open_browser: bool = False) -> int:
    """Run JupyterLab until it exits; returns its exit code."""
    if importlib.util.find_spec("jupyterlab") is None:
        raise SheetopsError("sheetops notebook needs JupyterLab: "
                            "pip install 'sheetops[notebooks]'")
    directory = project / "notebooks"
    directory.mkdir(exist_ok=True)
    command = lab_command(directory, port=port, token=token, open_browser=open_browser)
    try:
        return subprocess.call(command, cwd=directory, env=lab_environment(project, sheet))
    except KeyboardInterrupt:
        return 0
