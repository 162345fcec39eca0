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

    # -- clinician API authentication (docs/auth.md): the built-in ES256 token issuer
    token_issuer: str = Field(default="phd-hospital", min_length=1, max_length=256)
    token_audience: str = Field(default="phd-hospital-api", min_length=1, max_length=256)
    access_token_ttl: timedelta = timedelta(minutes=10)
    refresh_token_ttl: timedelta = timedelta(hours=12)
    # Clock difference tolerated between issuer and verifier instances (exp, nbf, iat).
    token_leeway: timedelta = timedelta(seconds=30)
    login_max_failures: int = Field(default=5, ge=1, le=20)
    login_lockout: timedelta = timedelta(minutes=15)

    # -- retention (docs/disposal.md): envelopes and their readings are disposed of this long
    # after sealing; quarantined (rejected) envelopes this long after receipt.
    retention_readings: timedelta = timedelta(days=3650)
    retention_quarantine: timedelta = timedelta(days=90)

    # -- audit trail (docs/audit.md): how often the API server signs a checkpoint of the
    # chain when entries were added (0: never; then run `phd audit checkpoint` from cron).
    audit_checkpoint_seconds: int = Field(default=60, ge=0, le=86_400)

    # -- optional external OpenID Connect issuer (all of issuer, JWKS URL and audience, or
    # none). Its tokens map to an active staff user of the same name (preferred_username).
    oidc_issuer: str | None = Field(default=None, min_length=1, max_length=256)
    oidc_jwks_url: str | None = Field(default=None, pattern=r"^https?://", max_length=1024)
    oidc_audience: str | None = Field(default=None, min_length=1, max_length=256)
    # A claim (string or list of strings) that must hold the staff user's role, if set.
    oidc_role_claim: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.:/-]{1,128}$", max_length=128
    )
    oidc_algorithms: tuple[Literal["ES256", "RS256", "PS256"], ...] = ("ES256",)

    @model_validator(mode="after")
    def _token_lifetimes(self) -> Settings:
        minute, day = timedelta(minutes=1), timedelta(days=1)
        if not minute <= self.access_token_ttl <= timedelta(hours=1):
            raise ValueError("access_token_ttl must be between 1 minute and 1 hour")
        if not self.access_token_ttl < self.refresh_token_ttl <= 7 * day:
            raise ValueError("refresh_token_ttl must exceed access_token_ttl, at most 7 days")
        if not timedelta(0) <= self.token_leeway <= 5 * minute:
            raise ValueError("token_leeway must be between 0 and 5 minutes")
        if not minute <= self.login_lockout <= day:
            raise ValueError("login_lockout must be between 1 minute and 1 day")
        return self

    @model_validator(mode="after")
    def _retention(self) -> Settings:
        # A disposed envelope's (credential, seq) row is gone: only its age still refuses a
        # replay of it, so readings must outlive the oldest envelope ingest accepts.
        if self.retention_readings <= self.max_envelope_age + self.clock_skew_future:
            raise ValueError("retention_readings must exceed max_envelope_age + clock_skew_future")
        if self.retention_quarantine < timedelta(days=1):
            raise ValueError("retention_quarantine must be at least 1 day")
        return self

    @model_validator(mode="after")
    def _oidc_all_or_nothing(self) -> Settings:
        named = {
            "oidc_issuer": self.oidc_issuer,
            "oidc_jwks_url": self.oidc_jwks_url,
            "oidc_audience": self.oidc_audience,
        }
        if all(v is None for v in named.values()):
            if self.oidc_role_claim is not None:
                raise ValueError("oidc_role_claim needs oidc_issuer, oidc_jwks_url, oidc_audience")
            return self
        missing = [name for name, value in named.items() if value is None]
        if missing:
            raise ValueError(f"an external OIDC issuer also needs: {', '.join(missing)}")
        if self.oidc_issuer == self.token_issuer:
            raise ValueError("oidc_issuer must differ from token_issuer")
        if not self.oidc_algorithms:
            raise ValueError("oidc_algorithms must name at least one algorithm")
        if self.profile != "dev" and not str(self.oidc_jwks_url).startswith("https://"):
            raise ValueError("oidc_jwks_url must be https outside the dev profile")
        return self

    @model_validator(mode="after")
    def _no_secret_defaults_outside_dev(self) -> Settings:
        if self.profile == "dev":
            return self
        missing = [name for name in ("database_url", "key_file") if getattr(self, name) is None]
        # The PKI directory holds the ingest HPKE key and the CA keys: the dev default (the
        # development PKI in the source tree) must never be taken for the production one.
        if "pki_dir" not in self.model_fields_set:
            missing.append("pki_dir")
        if missing:
            env = " / ".join(f"PHD_SERVER_{name.upper()}" for name in missing)
            raise ValueError(
                f"profile 'prod' needs explicit settings for: {', '.join(missing)} "
                f"(set {env}, or use profile 'dev')"
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
