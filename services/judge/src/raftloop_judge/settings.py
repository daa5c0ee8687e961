"""The judge's settings (`JUDGE_*`), with the shared Kafka, runtime and database settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from raftloop_core.limits import HttpLimits
from raftloop_core.settings import DatabaseSettings, KafkaSettings, RuntimeSettings
from raftloop_core.topics import Topic


class JudgeSettings(HttpLimits):
    """Everything the judge can be configured with."""

    model_config = SettingsConfigDict(env_prefix="JUDGE_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = 8003
    endpoint_url: str = Field(
        default="http://127.0.0.1:8000/v1",
        description="OpenAI-compatible base URL of the judge model; default the gateway.",
    )
    endpoint_api_key: SecretStr | None = Field(
        default=None,
        description="Key for the endpoint; in development the internal dev key is used.",
    )
    model: str | None = Field(
        default=None, description="Judge model name; unset means the endpoint's first model."
    )
    version_tag: str = Field(default="v1", pattern=r"^[A-Za-z0-9._-]{1,32}$")
    rubrics_dir: Path | None = Field(
        default=None, description="A folder of rubric files; default the bundled rubrics."
    )
    criteria: list[str] | None = Field(
        default=None, description="Only these rubric criteria (default: every rubric file)."
    )
    stall_timeout_s: float = Field(
        default=600.0,
        gt=0,
        validation_alias=AliasChoices("JUDGE_STALL_TIMEOUT_S", "JUDGE_REQUEST_TIMEOUT_S"),
        description="How long one request to the endpoint may go without an answer before it "
        "counts as stalled (the only time bound on judging; a slow endpoint is waited for). A "
        "stall is retried like an error; only an endpoint that keeps failing gets an item "
        "dead-lettered. JUDGE_REQUEST_TIMEOUT_S is its old name.",
    )
    max_retries: int = Field(default=3, ge=0, description="Client retries on 429/5xx/timeouts.")
    invalid_output_attempts: int = Field(default=3, ge=1)
    max_tokens: int = Field(default=48, ge=1)
    top_logprobs: int = Field(default=20, ge=1, le=20)
    min_score_mass: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Least probability the score tokens need at the first position when the "
        "reply states no score early (G-Eval fallback).",
    )
    concurrency: int = Field(default=8, ge=1, description="Concurrent requests to the endpoint.")
    batch_size: int = Field(default=16, ge=1, description="Messages judged together per poll.")
    embedding_model: str | None = Field(
        default=None, description="sentence-transformers folder; default bundled all-MiniLM-L6-v2."
    )
    near_duplicate_similarity: float = Field(default=0.9, ge=0, le=1)
    references_limit: int = Field(
        default=5000,
        ge=1,
        description="Approved answers per tenant that agreement checks compare with: the "
        "newest ones, kept in memory as one matrix per tenant.",
    )
    pass_threshold: float = Field(default=3.0, ge=1, le=5, description="Score that passes.")
    agreement_window: int = Field(default=500, ge=10)
    calibration_min_labels: int = Field(default=20, ge=4)
    calibration_refit_every: int = Field(default=10, ge=1)
    input_topic: str = str(Topic.INTERACTION_INGESTED)
    output_topic: str = str(Topic.INTERACTION_JUDGED)
    review_topic: str = str(Topic.REVIEW_COMPLETED)
    curated_topic: str = str(Topic.EXAMPLE_CURATED)
    consumer_group: str = "judge"
    api_keys_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("JUDGE_API_KEYS_FILE", "RAFTLOOP_API_KEYS_FILE"),
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)

    def database_url(self) -> str:
        """`DATABASE_URL`, else `<data dir>/judge/judge.sqlite3`."""
        return self.database.resolve(self.runtime, "judge")
