"""``sheetops notebook``: JupyterLab on loopback in ``notebooks/``, set up like ``run``.

The server listens on 127.0.0.1 only, starts in the notebooks folder, and its kernels get
the same settings as ``sheetops run`` started where ``sheetops notebook`` was: the
environment, the ``SHEETOPS_*`` lines of that folder's ``.env`` (a kernel runs in
``notebooks/``, where the settings would not find it), the sheet (``--sheet`` or the
setting) and the store it implies, both as absolute locations, since a relative path
would point into ``notebooks/``. The project folder goes on ``PYTHONPATH``, so
``import automations.my_job`` and ``open_config()`` work in a cell.

``sheetops notebook`` becomes the JupyterLab process (``exec``), so whatever stops it — a
SIGTERM from a supervisor or a test, Ctrl-C — stops the server itself, which shuts its
kernels down; no server is left behind a stopped ``sheetops``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import NoReturn

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


def _absolute_store_url(url: str) -> str:
    """``url`` with a relative SQLite file made absolute against the working directory."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database or ""
    if not parsed.drivername.startswith("sqlite") or database in ("", ":memory:") \
            or Path(database).is_absolute():
        return url
    return parsed.set(database=str(Path(database).resolve())).render_as_string(
        hide_password=False)


def lab_environment(project: Path, sheet: str | None) -> dict[str, str]:
    """The kernels' environment: this process's, the ``SHEETOPS_*`` lines of ``.env``
    it does not set, the sheet and store ``run`` would use here, the project importable."""
    from dotenv import dotenv_values

    from sheetops.settings import get_settings

    env = dict(os.environ)
    for key, value in dotenv_values(Path.cwd() / ".env").items():
        if key.startswith("SHEETOPS_") and value is not None:
            env.setdefault(key, value)
    settings = get_settings()
    location = sheet or settings.sheet
    if location.lower().endswith(".xlsx"):
        location = str(Path(location).resolve())
    if location:
        env["SHEETOPS_SHEET"] = location
    env["SHEETOPS_STORE_URL"] = _absolute_store_url(settings.resolved_store_url(location))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(project),
                                                      env.get("PYTHONPATH", "")]))
    return env


def start_lab(project: Path, *, sheet: str | None = None, port: int = 8888,
              token: str | None = None, open_browser: bool = False) -> NoReturn:
    """Replace this process with JupyterLab (it never returns)."""
    if importlib.util.find_spec("jupyterlab") is None:
        raise SheetopsError("sheetops notebook needs JupyterLab: "
                            "pip install 'sheetops[notebooks]'")
    directory = project / "notebooks"
    directory.mkdir(exist_ok=True)
    command = lab_command(directory, port=port, token=token, open_browser=open_browser)
    env = lab_environment(project, sheet)  # before the chdir: relative paths are from here
    os.chdir(directory)
    os.execve(command[0], command, env)
