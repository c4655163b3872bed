"""The tab reference documents every tab, column and Settings key the code knows, and
the README documents every CLI command; the architecture names modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command

from sheetops import tabs
from sheetops.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_tab_reference_lists_every_column_and_setting() -> None:
    text = (ROOT / "config_sheets" / "README.md").read_text(encoding="utf-8")
    for tab in (*tabs.CONFIG_TABS, *tabs.SYSTEM_TABS):
        section = text.split(f"### {tab}\n", 1)
        assert len(section) == 2, f"no section for the {tab} tab"
        body = section[1].split("\n### ", 1)[0]
        for column in tabs.columns_of(tab):
            assert f"`{column.name}`" in body, f"{tab}.{column.name} is not documented"
    for key in tabs.SETTING_KEYS:
        assert f"`{key}`" in text, f"Settings key {key} is not documented"


def test_readme_opens_with_the_two_commands_and_lists_every_command() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    opening = text.split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", opening, re.S)
    assert [b.strip() for b in blocks[:2]] == ["make demo", "make test"]
    for name in get_command(app).commands:
        assert f"sheetops {name}" in text, f"README does not document 'sheetops {name}'"


def test_readme_lists_every_environment_setting() -> None:
    from sheetops.settings import Settings

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for field in Settings.model_fields:
        assert f"SHEETOPS_{field.upper()}" in text, f"SHEETOPS_{field.upper()} undocumented"


def test_the_status_state_note_names_every_state_the_writer_shows():
    from sheetops import tabs
    from sheetops.store import RunStatus

    note = next(c.note for c in tabs.STATUS_COLUMNS if c.name == "state")
    shown = {"idle", "queued", "running", "disabled", "invalid"} | {
        s.value for s in RunStatus if s not in (RunStatus.RUNNING, RunStatus.QUEUED)}
    assert {s for s in shown if s not in note} == set()
    assert note in (ROOT / "config_sheets" / "README.md").read_text()


def test_a_sheet_is_opened_by_url_or_key_only_as_the_google_guide_says():
    from sheetops.connectors.sheets import open_sheet

    from sheetops.errors import SheetError

    with pytest.raises(SheetError, match=r"neither an \.xlsx workbook path nor a Google Sheet"):
        open_sheet("Ops config")  # a title
    guide = " ".join((ROOT / "docs" / "google_sheets.md").read_text().split())
    assert "found by title" not in guide
    assert "by its URL or key only (never by title)" in guide


def test_the_architecture_names_only_modules_that_exist() -> None:
    """docs/architecture.md names the module that owns each behaviour; a module renamed or
    removed since shows here, not in a reader's failed search."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    files = {p.relative_to(ROOT).as_posix() for folder in ("sheetops", "connectors", "tests")
             for p in (ROOT / folder).rglob("*.py")}
    named = set(re.findall(r"[\w/]+\.py\b", text))
    missing = sorted(name for name in named
                     if not any(f == name or f.endswith(f"/{name}") for f in files))
    assert named and not missing, f"docs/architecture.md names missing modules: {missing}"
    for package in re.findall(r"`sheetops/(\w+)/?`", text):
        assert (ROOT / "sheetops" / package).exists(), package
