"""pytest fixtures and helpers around the Sheets emulator.

Import them explicitly in a test module (the shared ``conftest.py`` stays untouched)::

    from sheetops.testing.fixtures import emulator, emulator_env, google_sheet_url  # noqa: F401

* ``emulator``: a running :class:`SheetsEmulator` (fresh per test).
* ``emulator_env``: the same, with ``SHEETOPS_SHEETS_EMULATOR`` set, generous rate
  limits and a short timeout, and the settings cache cleared before and after.
* ``google_sheet_url``: the URL of a new empty spreadsheet on ``emulator_env``,
  ready for ``open_sheet(url)`` / ``--sheet url``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sheetops.settings import get_settings
from sheetops.testing.emulator import SheetsEmulator

SERVICE_ACCOUNT_EMAIL = "sheetops-test@sheetops-test.iam.gserviceaccount.com"


@pytest.fixture
def emulator() -> Iterator[SheetsEmulator]:
    """A running emulator on a free loopback port."""
    with SheetsEmulator() as emu:
        yield emu


@pytest.fixture
def emulator_env(emulator: SheetsEmulator, monkeypatch: pytest.MonkeyPatch
                 ) -> Iterator[SheetsEmulator]:
    """The emulator, with the environment pointing sheetops at it."""
    monkeypatch.setenv("SHEETOPS_SHEETS_EMULATOR", emulator.url)
    monkeypatch.setenv("SHEETOPS_SHEETS_READS_PER_MINUTE", "6000")
    monkeypatch.setenv("SHEETOPS_SHEETS_WRITES_PER_MINUTE", "6000")
    monkeypatch.setenv("SHEETOPS_SHEETS_TIMEOUT_S", "10")
    monkeypatch.delenv("SHEETOPS_GOOGLE_CREDENTIALS", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    get_settings.cache_clear()
    yield emulator
    get_settings.cache_clear()


@pytest.fixture
def google_sheet_url(emulator_env: SheetsEmulator) -> str:
    """URL of a new, empty spreadsheet (one tab, ``Sheet1``) on the emulator."""
    return emulator_env.sheet_url(emulator_env.create_spreadsheet("sheetops test"))


def make_service_account(emulator: SheetsEmulator, directory: Path,
                         email: str = SERVICE_ACCOUNT_EMAIL) -> Path:
    """Write a service-account JSON key (fresh RSA key) whose ``token_uri`` is the
    emulator's ``/token``, and make the emulator verify its signatures. Returns the path.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    emulator.trust_key(email, public_pem)
    info = {
        "type": "service_account",
        "project_id": "sheetops-test",
        "private_key_id": "emulator-key-1",
        "private_key": private_pem,
        "client_email": email,
        "client_id": "100000000000000000001",
        "auth_uri": f"{emulator.url}/auth",
        "token_uri": f"{emulator.url}/token",
        "universe_domain": "googleapis.com",
    }
    path = Path(directory) / "service-account.json"
    path.write_text(json.dumps(info, indent=2))
    return path
