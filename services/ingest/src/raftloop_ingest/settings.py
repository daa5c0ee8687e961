"""Ingest settings (`INGEST_*`), embedding the shared runtime, Kafka and database settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from raftloop_core.limits import BodyLimit, HttpLimits
from raftloop_core.settings import DatabaseSettings, KafkaSettings, RuntimeSettings
from raftloop_core.topics import Topic
from raftloop_ingest.documents import ParseLimits
from raftloop_ingest.sandbox import SandboxLimits

GROUP_ID = "ingest"
UPLOAD_PATH = "/v1/documents"


class IngestSettings(HttpLimits):
    """Everything the ingest service can be told."""

    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8002
    group_id: str = GROUP_ID
    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Prepended to every topic name; isolates tests or environments on one cluster.",
    )
    batch_size: int = Field(default=200, ge=1, description="Chat events handled per batch.")
    batch_timeout_ms: int = Field(default=50, ge=0)
    max_chars: int = Field(default=20_000, ge=100, description="Longer interactions are flagged.")
    max_upload_bytes: int = Field(
        default=20_000_000,
        ge=1_024,
        description="Largest upload to POST /v1/documents, all its files together; beyond: 413. "
        "Every other route takes INGEST_MAX_REQUEST_BYTES.",
    )
    max_text_bytes: int = Field(
        default=20_000_000,
        ge=1_024,
        description="Longest extracted text of one document (UTF-8 bytes); a longer one is "
        "refused (413). Text over KAFKA_MAX_MESSAGE_BYTES is sent as several events.",
    )
    parse_timeout_s: float = Field(
        default=60.0, gt=0, description="Wall-clock limit for parsing one document."
    )
    parse_max_pages: int = Field(default=2_000, ge=1, description="Most pages of one PDF.")
    parse_max_decompressed_bytes: int = Field(
        default=50_000_000,
        ge=1_000_000,
        description="Most bytes one PDF's streams may inflate to (decompression bombs).",
    )
    parse_max_memory_bytes: int = Field(
        default=2_000_000_000,
        ge=256_000_000,
        description="Address-space limit of the child process that parses one document.",
    )
    parse_concurrency: int = Field(
        default=2, ge=1, description="Documents parsed at once, each in its own process."
    )
    pii_score_threshold: float = Field(default=0.35, ge=0, le=1)
    ner_model: str = Field(
        default="auto",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="spaCy NER model package for person names: `auto` (the first installed of "
        "redaction.NER_MODELS, else patterns only), `off`, or a package name.",
    )
    pii_hash_key: SecretStr | None = Field(
        default=None,
        description="Key for the keyed hashes that keep placeholders consistent without storing "
        "raw values; generated under the data folder in development.",
    )
    api_keys_file: Path | None = Field(default=None, alias="RAFTLOOP_API_KEYS_FILE")
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)

    def upload_limits(self) -> dict[str, BodyLimit]:
        """The upload route's own body limit, larger than the JSON routes' one."""
        return {UPLOAD_PATH: BodyLimit(self.max_upload_bytes, self.env_name("max_upload_bytes"))}

    def topic(self, topic: Topic) -> str:
        """The concrete name of `topic` for this deployment."""
        return f"{self.topic_prefix}{topic}"

    def sandbox_limits(self) -> SandboxLimits:
        """What parsing one document may cost."""
        return SandboxLimits(
            ParseLimits(
                max_text_bytes=self.max_text_bytes,
                max_pages=self.parse_max_pages,
                max_decompressed_bytes=self.parse_max_decompressed_bytes,
            ),
            timeout_s=self.parse_timeout_s,
            max_memory_bytes=self.parse_max_memory_bytes,
        )

    def database_url(self) -> str:
        """`DATABASE_URL`, else `<data dir>/ingest/ingest.sqlite3`."""
        return self.database.resolve(self.runtime, "ingest")
