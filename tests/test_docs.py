"""The tab reference documents every tab, column and Settings key the code knows, and
the README documents every CLI command."""

from __future__ import annotations

import re
from pathlib import Path

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
