"""The import rules of the layers (``[tool.importlinter]`` in pyproject.toml) hold.

``lint-imports`` reads the package from disk, and the repository keeps ``connectors/``
and ``automations/`` beside ``sheetops/`` (installed, they are ``sheetops.connectors``
and ``sheetops.automations``). So the check runs on a copy laid out as installed;
otherwise every rule about connectors would pass for want of any connector to see.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
#: Modules of sheetops outside the engine: implementations, the UI, test helpers, and
#: the entry points that wire concrete choices together.
NOT_ENGINE = {"__init__", "automations", "cli", "connectors", "dashboard", "demo", "dryrun",
              "notebook", "pipelines", "testing", "worker"}


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def _installed_layout(dest: Path) -> Path:
    """``dest/sheetops`` as a wheel installs it, every folder a regular package."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    package = dest / "sheetops"
    shutil.copytree(ROOT / "sheetops", package, ignore=ignore)
    for folder in ("connectors", "automations"):
        shutil.copytree(ROOT / folder, package / folder, ignore=ignore)
    for folder in package.rglob("*"):
        if folder.is_dir() and not (folder / "__init__.py").exists():
            (folder / "__init__.py").touch()  # streamlit's pages/ folder is not a package
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint(where: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: pip install -e '.[dev]' (import-linter)")
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=where,
                          capture_output=True, text=True, timeout=120)


def test_the_import_contracts_are_kept(tmp_path: Path) -> None:
    done = _lint(_installed_layout(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_concrete_connector_imported_by_the_engine_breaks_the_rules(tmp_path: Path) -> None:
    layout = _installed_layout(tmp_path)
    engine = layout / "sheetops" / "engine.py"
    engine.write_text(engine.read_text()
                      + "\nfrom sheetops.connectors.sheets.workbook import WorkbookSheet\n")
    done = _lint(layout)
    assert done.returncode != 0
    assert "sheetops.engine -> sheetops.connectors.sheets.workbook" in done.stdout


def test_every_module_of_sheetops_is_under_the_engine_rule_or_named_outside_it() -> None:
    engine = next(c for c in _config()["contracts"] if c["id"] == "engine")
    listed = {m.removeprefix("sheetops.") for m in engine["source_modules"]}
    found = {p.stem if p.is_file() else p.name for p in (ROOT / "sheetops").iterdir()
             if (p.suffix == ".py" or (p.is_dir() and any(p.glob("*.py"))))}
    found |= {"connectors", "automations"}
    unclassified = found - listed - NOT_ENGINE
    assert not unclassified, (f"add {sorted(unclassified)} to the 'engine' contract's "
                              "source_modules in pyproject.toml (or to NOT_ENGINE here)")
    assert not listed & NOT_ENGINE
