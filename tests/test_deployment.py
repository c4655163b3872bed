"""docker-compose.yml mirrors the tested topology and uses only what exists: it parses,
every sheetops command and option it runs is one the CLI has, every ``SHEETOPS_*``
variable is a setting, and the README's deployment section names them. (Docker itself
is not run here.)"""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from sheetops.cli import app
from sheetops.settings import KNOWN

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _sheetops_services(compose: dict) -> dict[str, dict]:
    return {name: s for name, s in compose["services"].items()
            if s.get("command", [""])[0] == "sheetops"}


def test_compose_has_the_tested_topology() -> None:
    compose = _compose()
    commands = {name: s["command"][1] for name, s in _sheetops_services(compose).items()}
    assert sorted(c for c in commands.values() if c == "run") == ["run", "run"]
    assert "worker" in commands.values() and "dashboard" in commands.values()
    assert {"postgres", "redis"} <= compose["services"].keys()
    for service in _sheetops_services(compose).values():
        env = service["environment"]
        assert env["SHEETOPS_STORE_URL"].startswith("postgresql+psycopg://")
        assert env["SHEETOPS_EXECUTOR"] == "celery"
        assert env["SHEETOPS_BROKER_URL"].startswith("redis://redis:")
        assert env["SHEETOPS_RATE_LIMIT_STORAGE"].startswith("redis://redis:")
        assert {"postgres", "redis"} <= service["depends_on"].keys()


def test_compose_commands_options_and_variables_exist() -> None:
    cli = typer.main.get_command(app)
    for name, service in _sheetops_services(_compose()).items():
        _, command, *args = service["command"]
        assert command in cli.commands, f"{name}: no `sheetops {command}`"
        options = {opt for p in cli.commands[command].params for opt in p.opts}
        used = {a for a in args if a.startswith("-")}
        assert used <= options, f"{name}: `sheetops {command}` has no {used - options}"
        unknown = {v for v in service["environment"] if v.startswith("SHEETOPS_")} - KNOWN
        assert not unknown, f"{name}: {unknown} are not settings"


def test_readme_says_when_to_leave_the_embedded_default() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## When to leave the embedded default", 1)[1].split("\n## ")[0]
    variables = {v for s in _sheetops_services(_compose()).values()
                 for v in s["environment"] if v.startswith("SHEETOPS_")}
    missing = {v for v in variables if v not in section}
    assert not missing, f"the README's deployment section does not explain {missing}"
    for process in ("sheetops run", "sheetops worker", "sheetops dashboard"):
        assert process in section
    assert "docs/scaling.md" in section and "docker-compose.yml" in section
