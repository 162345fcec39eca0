"""Validated server settings (pydantic-settings), read from ``PHD_SERVER_*`` variables.

Nothing here is built at import time: callers construct :class:`Settings` (tests pass values
in, the CLI reads the environment). Outside the ``dev`` profile there is no usable default for
anything secret or site-specific: the database URL and the key file must be named, and the
key file must already exist. This module must never open a database, a socket or a key.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

_DEV_DIR = Path("var/dev")


class Settings(BaseSettings):
    """Every knob of the hospital server. Environment prefix ``PHD_SERVER_``."""

    model_config = SettingsConfigDict(env_prefix="PHD_SERVER_", extra="forbid", frozen=True)

    profile: Literal["dev", "prod"] = "prod"

    # -- storage. None means "use the dev default", which only the dev profile allows.
    database_url: SecretStr | None = None
    key_file: Path | None = None
    db_pool_size: int = Field(default=5, ge=1, le=100)

    # -- PKI (certificate files are located through hospital_server.pki.layout.PkiLayout)
    pki_dir: Path = Path("certs/dev")

    # -- MQTT broker the ingest workers consume from (mTLS; identities from PkiLayout)
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=8883, ge=1, le=65535)
    mqtt_worker_name: str = Field(default="ingest-1", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    mqtt_share_group: str = Field(default="ingest", pattern=r"^[A-Za-z0-9_-]{1,32}$")

    # -- ingest policy
    max_envelope_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 1024)
    max_batch_envelopes: int = Field(default=256, ge=1, le=4096)
    clock_skew_future: timedelta = timedelta(minutes=5)
    # Gateways hold envelopes for days when a patient is offline; older than this is refused.
    max_envelope_age: timedelta = timedelta(days=30)

    # -- enrollment
    enrollment_code_ttl: timedelta = timedelta(minutes=15)
    enrollment_code_max_attempts: int = Field(default=5, ge=1, le=20)

    @model_validator(mode="after")
    def _no_secret_defaults_outside_dev(self) -> Settings:
        if self.profile == "dev":
            return self
        missing = [name for name in ("database_url", "key_file") if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"profile 'prod' needs explicit settings for: {', '.join(missing)} "
                "(set PHD_SERVER_DATABASE_URL / PHD_SERVER_KEY_FILE, or use profile 'dev')"
            )
        return self

    @property
    def effective_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{_DEV_DIR / 'server.db'}"

    @property
    def effective_key_file(self) -> Path:
        return self.key_file if self.key_file is not None else _DEV_DIR / "server-keys.json"
