"""Which secrets a sheet may use: only those the deployment names.

A ``"secret:NAME"`` value in a job's params (or ``ctx.secret(NAME)``) resolves only if
``NAME`` is on the allow-list ``SHEETOPS_SECRETS=NAME,NAME`` (values from the
environment) or in the secrets file ``SHEETOPS_SECRETS_FILE`` (``KEY=VALUE`` lines,
mode 0600). Any other name — ``SHEETOPS_DASHBOARD_PASSWORD``, a cloud credential — is a
problem at its cell for ``validate`` and a refused run, so a sheet editor cannot send
the deployment's own credentials to a URL of their choosing.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sheetops.errors import SheetopsError

SECRET_PREFIX = "secret:"


class SecretsConfigError(SheetopsError):
    """``SHEETOPS_SECRETS_FILE`` cannot be used (missing, unreadable, readable by others,
    or a line that is not ``KEY=VALUE``)."""


def _read_file(path: str) -> dict[str, str]:
    file = Path(path)
    try:
        mode = file.stat().st_mode
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretsConfigError(f"SHEETOPS_SECRETS_FILE={path!r} cannot be read "
                                 f"({type(exc).__name__}: {exc})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretsConfigError(f"SHEETOPS_SECRETS_FILE={path!r} is readable by others "
                                 f"(mode {stat.S_IMODE(mode):04o}); run chmod 600 on it")
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise SecretsConfigError(f"SHEETOPS_SECRETS_FILE={path!r} line {number} is not "
                                     "KEY=VALUE")
        values[name.strip()] = value.strip()
    return values


def available_secrets(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every secret the deployment allows, name → value (the file wins over the env)."""
    environ = os.environ if environ is None else environ
    names = [n.strip() for n in environ.get("SHEETOPS_SECRETS", "").split(",") if n.strip()]
    found = {n: environ[n] for n in names if n in environ}
    if environ.get("SHEETOPS_SECRETS_FILE"):
        found.update(_read_file(environ["SHEETOPS_SECRETS_FILE"]))
    return found


def allowed_names(environ: Mapping[str, str] | None = None) -> set[str]:
    """Names a ``secret:`` reference may use (set or not)."""
    environ = os.environ if environ is None else environ
    names = {n.strip() for n in environ.get("SHEETOPS_SECRETS", "").split(",") if n.strip()}
    return names | set(available_secrets(environ))


def secret_names(value: Any) -> list[str]:
    """The ``NAME`` of every ``"secret:NAME"`` string in ``value``, at any depth."""
    if isinstance(value, str):
        return [value[len(SECRET_PREFIX):].strip()] if value.startswith(SECRET_PREFIX) else []
    if isinstance(value, Mapping):
        return [n for v in value.values() for n in secret_names(v)]
    if isinstance(value, list):
        return [n for v in value for n in secret_names(v)]
    return []


def not_allowed(name: str) -> str:
    """The sentence for a secret the deployment does not name."""
    return (f"secret {name!r} is not one the deployment allows; add it to SHEETOPS_SECRETS "
            "or the SHEETOPS_SECRETS_FILE")


def params_problem(params: Any, environ: Mapping[str, str] | None = None) -> str | None:
    """A sentence about the first ``secret:`` name in ``params`` that is not allowed."""
    names = secret_names(params)
    if not names:
        return None
    try:
        allowed = allowed_names(environ)
    except SecretsConfigError as exc:
        return str(exc)
    refused = [n for n in names if n not in allowed]
    return not_allowed(refused[0]) if refused else None
