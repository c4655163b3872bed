"""The package as a user gets it: build the wheel, install it into bare virtualenvs with
each extra set the README offers (the real dependency sets, from pip's index and cache),
and use the installed ``sheetops`` from a temporary directory — never the checkout."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest

from sheetops.testing.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out),
                    str(ROOT)], check=True)
    return next(out.glob("sheetops-*.whl"))


def _install(wheel: Path, where: Path, extras: str) -> Path:
    venv.create(where, with_pip=True)
    target = f"{wheel}[{extras}]" if extras else str(wheel)
    subprocess.run([str(where / "bin" / "python"), "-m", "pip", "install", "-q", target],
                   check=True, timeout=900)
    return where / "bin"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SHEETOPS_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, "HOME": str(home)}


def _sheetops(bindir: Path, cwd: Path, *args: str,
              timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bindir / "sheetops"), *args], cwd=cwd, env=_env(cwd),
                          capture_output=True, text=True, timeout=timeout)


def test_wheel_installs_no_top_level_connectors_or_automations(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("sheetops-")}
    assert tops == {"sheetops"}
    assert "sheetops/dashboard/app.py" in names
    assert "sheetops/connectors/sheets/factory.py" in names


def test_base_install_runs_demo_init_validate_run(wheel: Path, tmp_path: Path) -> None:
    bindir = _install(wheel, tmp_path / "venv", "")
    work = tmp_path / "work"
    work.mkdir()
    where = subprocess.run([str(bindir / "python"), "-c",
                            "import sheetops; print(sheetops.__file__)"],
                           cwd=work, capture_output=True, text=True, check=True).stdout
    assert "site-packages" in where and str(ROOT) not in where

    demo = _sheetops(bindir, work, "demo", "--for", "8", "--workers", "1")
    assert demo.returncode == 0, demo.stderr
    assert "Traceback" not in demo.stderr
    assert "email(s) delivered" in demo.stdout

    for args in (["init", "--sheet", "ops.xlsx"], ["validate", "--sheet", "ops.xlsx"],
                 ["run", "--sheet", "ops.xlsx", "--for", "3", "--workers", "1"]):
        done = _sheetops(bindir, work, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr

    google = _sheetops(bindir, work, "validate", "--sheet",
                       "https://docs.google.com/spreadsheets/d/1AbCdEfGhIjKlMnOpQrStUvWxYz/edit")
    assert google.returncode == 2
    assert "pip install 'sheetops[google]'" in google.stderr
    assert "Traceback" not in google.stderr

    dash = _sheetops(bindir, work, "dashboard", "--sheet", "ops.xlsx")
    assert dash.returncode == 2
    assert "pip install 'sheetops[dashboard]'" in dash.stderr

    lab = _sheetops(bindir, work, "notebook", "--sheet", "ops.xlsx")
    assert lab.returncode == 2
    assert "pip install 'sheetops[notebooks]'" in lab.stderr


def test_google_dashboard_install_serves_the_dashboard(wheel: Path, tmp_path: Path) -> None:
    bindir = _install(wheel, tmp_path / "venv", "google,dashboard")
    work = tmp_path / "work"
    work.mkdir()
    assert _sheetops(bindir, work, "init", "--sheet", "ops.xlsx").returncode == 0
    port = free_port()
    proc = subprocess.Popen([str(bindir / "sheetops"), "dashboard", "--sheet", "ops.xlsx",
                             "--port", str(port)], cwd=work, env=_env(work),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                    status = resp.status
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                            timeout=5) as resp:
                    assert resp.read().strip() == b"ok"
                break
            except OSError:
                time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


REPORT_JOBS = '''from pathlib import Path
from sheetops.notebook.jobs import register_notebook

register_notebook("t_report", Path(__file__).parent / "report.ipynb")
'''

REPORT = {"cells": [
    {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "execution_count": None,
     "outputs": [], "source": "rows = 1"},
    {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
     "source": "print('total is', rows * 2)"}],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}},
    "nbformat": 4, "nbformat_minor": 5}

ADD_JOB = """import json, openpyxl
book = openpyxl.load_workbook("ops.xlsx")
book["Jobs"].append(["report", "t_report", "manual", "", True, json.dumps({"rows": 21})])
book.save("ops.xlsx")
"""


def test_notebooks_install_gives_the_pytest_plugin_and_runs_a_report_notebook(
        wheel: Path, tmp_path: Path) -> None:
    """``pip install sheetops[notebooks]`` (and pytest): a user's three-line test finds
    the plugin's fixtures through the ``pytest11`` entry point, and a report notebook
    registered in the user's code runs as a job in a real kernel, its HTML kept."""
    import json

    from test_automations import USER_TEST  # the plugin test of the checkout, installed

    bindir = _install(wheel, tmp_path / "venv", "notebooks")
    subprocess.run([str(bindir / "python"), "-m", "pip", "install", "-q", "pytest"],
                   check=True, timeout=600)
    work = tmp_path / "work"
    work.mkdir()
    (work / "test_user.py").write_text(USER_TEST)
    done = subprocess.run([str(bindir / "python"), "-m", "pytest", "-q", "-p",
                           "no:cacheprovider", "test_user.py"], cwd=work, env=_env(work),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "2 passed" in done.stdout, done.stdout + done.stderr

    (work / "report_jobs.py").write_text(REPORT_JOBS)
    (work / "report.ipynb").write_text(json.dumps(REPORT))
    assert _sheetops(bindir, work, "init", "--sheet", "ops.xlsx").returncode == 0
    subprocess.run([str(bindir / "python"), "-c", ADD_JOB], cwd=work, check=True)
    env = {**_env(work), "PYTHONPATH": str(work), "SHEETOPS_AUTOMATIONS": "report_jobs"}
    ran = subprocess.run([str(bindir / "sheetops"), "run-job", "report", "--sheet",
                          "ops.xlsx"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    pages = list((work / "notebooks").glob("*.html"))
    assert len(pages) == 1 and "total is 42" in pages[0].read_text()


def test_nothing_imports_the_checkout_only_names() -> None:
    """``connectors``/``automations`` exist as top-level names only in a checkout; code and
    tests that import them pass here and fail for a user of the installed package."""
    offenders = []
    for folder in ("sheetops", "connectors", "automations", "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom)
                         and not node.level else [])
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for name in names
                              if name.partition(".")[0] in {"connectors", "automations"}]
    assert offenders == []
