"""Settings shared by every service: mode, paths, Kafka, database.

Each service's own `settings.py` defines one `BaseSettings` with its env prefix and embeds these.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET_PREFIX = "dev-"
"""Secrets that `raftloop up` generates in development start with this; production refuses them."""


class Mode(StrEnum):
    """Development creates local credentials; production refuses to start without real ones."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class SettingsError(ValueError):
    """A setting is missing or wrong; the message says which and what to do."""


class RuntimeSettings(BaseSettings):
    """Where state lives and which mode the platform runs in (`RAFTLOOP_*`)."""

    model_config = SettingsConfigDict(env_prefix="RAFTLOOP_", extra="ignore")

    mode: Mode = Mode.DEVELOPMENT
    data_dir: Path = Field(default=Path("var"), description="All local state lives here.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    failpoints_dir: Path | None = Field(
        default=None, description="Fault-injection tests only; refused in production."
    )
    protect_ops: bool | None = Field(
        default=None,
        description=(
            "Whether `/metrics`, `/docs` and `/openapi.json` need a key "
            "(RAFTLOOP_PROTECT_OPS); unset: yes in production, no in development."
        ),
    )

    @model_validator(mode="after")
    def _no_failpoints_in_production(self) -> RuntimeSettings:
        if self.failpoints_dir is not None and self.mode is Mode.PRODUCTION:
            raise ValueError(
                "RAFTLOOP_FAILPOINTS_DIR is set in production mode; it lets a file kill the "
                "service and is for fault-injection tests only: unset it"
            )
        return self

    @property
    def production(self) -> bool:
        """Whether production rules apply."""
        return self.mode is Mode.PRODUCTION

    @property
    def ops_protected(self) -> bool:
        """Whether the metrics and API-doc routes need a key (see `protect_ops`)."""
        return self.production if self.protect_ops is None else self.protect_ops

    def path(self, *parts: str) -> Path:
        """A path under the data folder, created on demand."""
        target = self.data_dir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


class KafkaSettings(BaseSettings):
    """How every service reaches the broker (`KAFKA_*`)."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "raftloop"
    # Apache Kafka supports idempotent producers; the embedded Tansu broker does not.
    enable_idempotence: bool = False
    request_timeout_ms: int = Field(default=15_000, ge=1_000)
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    max_poll_interval_ms: int = Field(default=300_000, ge=1_000)
    max_message_bytes: int = Field(default=1_000_000, ge=1_024)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    replication_factor: int = Field(default=1, ge=1)
    retry_max_attempts: int = Field(default=8, ge=1, description="Before a message is parked.")
    retry_backoff_s: float = Field(default=0.5, gt=0)
    retry_backoff_max_s: float = Field(default=30.0, gt=0)

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_servers(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(
                    f"{server!r} is not host:port; set KAFKA_BOOTSTRAP_SERVERS like "
                    "'127.0.0.1:9092' or 'b1:9092,b2:9092'"
                )
        return value

    @property
    def servers(self) -> list[str]:
        """The bootstrap servers as a list."""
        return [s.strip() for s in self.bootstrap_servers.split(",")]


class DatabaseSettings(BaseSettings):
    """The relational store (`DATABASE_URL`): SQLite in the data folder unless set."""

    model_config = SettingsConfigDict(env_prefix="DATABASE_", extra="ignore")

    url: str | None = None

    def resolve(self, runtime: RuntimeSettings, service: str) -> str:
        """The URL `raftloop_core.db.make_engine` opens for `service`.

        `DATABASE_URL`, else the service's SQLite file, `<data dir>/<service>/<service>.sqlite3`.
        """
        if self.url:
            return self.url
        return f"sqlite:///{runtime.path(service, f'{service}.sqlite3').resolve()}"


MIN_SECRET_CHARS = 16
"""The shortest secret production accepts (session secrets, API keys, passwords in settings)."""


def require_secret(
    value: SecretStr | None, *, name: str, env: str, runtime: RuntimeSettings
) -> SecretStr | None:
    """Check a secret that production needs against the mode's rules.

    Raises:
        SettingsError: in production when the secret is missing, short, or a development value.
    """
    if runtime.production and (value is None or not value.get_secret_value()):
        raise SettingsError(f"{name} is not set; production mode needs it: set {env}")
    return check_secret(value, name=name, env=env, runtime=runtime)


def check_secret(
    value: SecretStr | None, *, name: str, env: str, runtime: RuntimeSettings
) -> SecretStr | None:
    """Check a secret that may be unset: once configured, production holds it to the same rules.

    Raises:
        SettingsError: in production when the secret is short or a development value.
    """
    if not runtime.production or value is None or not value.get_secret_value():
        return value  # unset (an empty variable from a compose file counts as unset)
    secret = value.get_secret_value()
    if secret.startswith(DEV_SECRET_PREFIX) or len(secret) < MIN_SECRET_CHARS:
        raise SettingsError(
            f"{name} is a development or too-short value; set {env} to a random secret of at "
            f"least {MIN_SECRET_CHARS} characters, e.g. from `python -c 'import secrets; "
            "print(secrets.token_urlsafe())'`"
        )
    return value


def check_kafka_secrets(kafka: KafkaSettings, runtime: RuntimeSettings) -> None:
    """Hold the Kafka SASL password, when one is set, to production's secret rules.

    Raises:
        SettingsError: in production when the password is short or a development value.
    """
    check_secret(
        kafka.sasl_password,
        name="the Kafka SASL password",
        env="KAFKA_SASL_PASSWORD",
        runtime=runtime,
    )


def external_kafka_configured() -> bool:
    """Whether the user pointed the platform at their own Kafka cluster."""
    return bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
