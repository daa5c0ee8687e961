"""Settings of the hitl service (`HITL_*`), embedding the shared Kafka, runtime and DB settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from raftloop_core.limits import HttpLimits
from raftloop_core.settings import DatabaseSettings, KafkaSettings, RuntimeSettings


class HitlSettings(HttpLimits):
    """Everything the review service can be told."""

    model_config = SettingsConfigDict(env_prefix="HITL_", extra="ignore")

    port: int = 8080
    group_id: str = "hitl"
    topic_prefix: str = Field(
        default="", description="Prepended to every topic name; only tests use it for isolation."
    )
    session_secret: SecretStr | None = None
    cookie_secure: bool | None = Field(
        default=None, description="Send cookies only over HTTPS; defaults to on in production."
    )
    session_max_age_s: int = Field(default=12 * 3600, ge=60)
    lease_seconds: float = Field(default=600.0, gt=0)
    signin_free_failures: int = Field(
        default=5, ge=1, description="Failed sign-ins per address or account before delays."
    )
    signin_address_max_delay_s: float = Field(
        default=900.0, gt=0, description="Cap of the doubling delay per client address."
    )
    signin_account_max_delay_s: float = Field(
        default=30.0,
        gt=0,
        description="Cap per account: kept short, so a flood never locks the real user out.",
    )
    signin_forget_s: float = Field(
        default=3600.0, gt=0, description="Failures are forgotten after this long without any."
    )
    admin_username: str | None = Field(default=None, description="Production bootstrap admin.")
    admin_password: SecretStr | None = None
    admin_tenant: str = "default"
    api_keys_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("HITL_API_KEYS_FILE", "RAFTLOOP_API_KEYS_FILE"),
    )
    outbox_poll_s: float = Field(default=0.25, gt=0)
    ops_cache_s: float = Field(default=5.0, ge=0)
    ops_refresh_s: float = Field(default=15.0, gt=0)
    consume: bool = Field(default=True, description="Run the Kafka consumers and outbox relay.")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)

    def topic(self, name: str) -> str:
        """The real topic name of `name` (a Topic or its dead-letter name)."""
        return f"{self.topic_prefix}{name}"

    def database_url(self) -> str:
        """`DATABASE_URL`, else `<data dir>/hitl/hitl.sqlite3`."""
        return self.database.resolve(self.runtime, "hitl")
