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
