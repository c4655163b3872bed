"""Infrastructure settings from the environment / ``.env`` (prefix ``SHEETOPS_``).

Behaviour lives in the sheet's Settings tab; this class holds only what must be known
before the sheet can be read: where the sheet and store are, which executor runs work,
where secrets come from. Unknown ``SHEETOPS_*`` variables are reported, never ignored
silently.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sheetops.errors import SheetopsError

#: ``limits`` storages shared between processes (``memory://`` is the in-process default).
_SHARED_STORAGES = frozenset({"redis", "rediss", "redis+unix", "redis+cluster",
                              "redis+sentinel", "valkey", "valkeys", "memcached", "mongodb",
                              "mongodb+srv", "memory"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHEETOPS_", env_file=".env",
                                      extra="ignore")

    sheet: str = ""
    clients: str = Field(default="", description="clients file (TOML): one sheet per client")
    store_url: str = ""
    executor: str = "local"
    workers: int = Field(default=0, description="worker processes; 0 = number of CPUs")
    broker_url: str = Field(default="", description="Celery broker: redis://… or amqp://…")
    lease_ttl_s: float = Field(default=15.0, ge=2.0, description="scheduler lease; a "
                               "standby takes over within twice this")
    rate_limit_storage: str = Field(default="", description="limits storage URI shared "
                                    "by every process (redis://host:6379/0); "
                                    "empty = in this process only")
    # the Celery tier (sheetops.executors.celery_config checks them at start)
    celery_queue: str = Field(default="sheetops", description="Celery queue of attempts")
    celery_max_deliveries: int = Field(default=3, description="deliveries of one attempt "
                                       "before it ends as a poison task")
    celery_acks_late: bool = True
    celery_reject_on_worker_lost: bool = True
    celery_prefetch_multiplier: int = 1
    broker_visibility_timeout_s: float = Field(default=3600.0, description="Redis: seconds "
                                               "before an unacked task is redelivered")
    broker_consumer_timeout_s: float = Field(default=1800.0, description="RabbitMQ's "
                                             "consumer_timeout (the server's setting)")
    celery_poll_interval_s: float = Field(default=0.1, description="how often the "
                                          "scheduler reads its runs' outcomes")
    celery_republish_after_s: float = Field(
        default=10.0, description="seconds a run may stay queued with its task unsent "
        "(a broker outage, a leader that died before publishing) before the active "
        "leader publishes it again")
    celery_pack_max: int = Field(
        default=16, description="first attempts packed into one Celery task when many "
        "are due at once; 1 sends each as its own task")
    automations: str = ""
    google_credentials: str = ""
    sheets_emulator: str = ""
    sheets_reads_per_minute: int = 60
    sheets_writes_per_minute: int = 60
    sheets_timeout_s: float = 30.0
    sheets_max_retries: int = 6
    log_format: str = "text"
    log_level: str = "INFO"
    metrics_port: int = Field(default=0, ge=0, le=65535,
                              description="Prometheus /metrics port; 0 = off")
    metrics_host: str = "127.0.0.1"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_user: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = False
    smtp_sender: str = "sheetops@localhost"
    dashboard_password: SecretStr = SecretStr("")
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8501, ge=1, le=65535)
    require_services: bool = False
    secrets: str = Field(default="", description="names secret:NAME may resolve (NAME,NAME)")
    secrets_file: str = Field(default="", description="KEY=VALUE secrets file, mode 0600")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        """A level name logging knows, so a typo fails at start, not as a traceback."""
        if not isinstance(logging.getLevelName(value.upper()), int):
            raise ValueError("use one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value.upper()

    @field_validator("rate_limit_storage")
    @classmethod
    def _known_storage(cls, value: str) -> str:
        """A storage ``limits`` can use across processes, so a typo fails at start."""
        scheme = value.strip().partition("://")[0].lower()
        if value.strip() and ("://" not in value or scheme not in _SHARED_STORAGES):
            raise ValueError("use redis://host:6379/0 (or rediss://, redis+sentinel://, "
                             "memcached://, mongodb://); empty keeps limits in-process")
        return value.strip()

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value.lower() not in ("text", "json"):
            raise ValueError("use text or json")
        return value.lower()

    def resolved_store_url(self, sheet: str | None = None) -> str:
        """The store URL, defaulting to a SQLite file beside a workbook (or in the cwd)."""
        if self.store_url:
            return self.store_url
        sheet = sheet if sheet is not None else self.sheet
        if sheet.lower().endswith(".xlsx"):
            path = Path(sheet).resolve().with_suffix(".sheetops.db")
        else:
            path = Path.cwd() / "sheetops.db"
        return f"sqlite:///{path}"


KNOWN = {f"SHEETOPS_{name.upper()}" for name in Settings.model_fields}
# Families of variables read by name from the sheet (channels, webhooks) or by tools.
KNOWN_PREFIXES = ("SHEETOPS_WEBHOOK_", "SHEETOPS_SLACK_", "SHEETOPS_WORKER_START",
                  "SHEETOPS_DEMO_DIR")


def unknown_env_vars(environ: dict[str, str] | None = None) -> list[str]:
    """``SHEETOPS_*`` variables that no setting reads (likely typos)."""
    environ = os.environ if environ is None else environ
    return sorted(k for k in environ if k.startswith("SHEETOPS_") and k not in KNOWN
                  and not k.startswith(KNOWN_PREFIXES))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings, read once; unknown ``SHEETOPS_*`` names are reported by the CLI."""
    try:
        return Settings()
    except ValidationError as exc:  # one sentence per bad variable, not a traceback
        problems = []
        for error in exc.errors():
            name = "SHEETOPS_" + str(error["loc"][0]).upper() if error["loc"] else "?"
            msg = error["msg"].removeprefix("Value error, ")
            problems.append(f"{name}={error.get('input')!r} is not valid "
                            f"({msg[:1].lower()}{msg[1:]})")
        raise SheetopsError("; ".join(problems) + " (set it in the environment or .env)"
                            ) from None
