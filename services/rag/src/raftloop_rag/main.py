"""Composition root: the only place that reads the environment and builds real clients.

Run with `uvicorn --factory raftloop_rag.main:build --port 8001`.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from pydantic import ValidationError
from qdrant_client import AsyncQdrantClient

from raftloop_core.api import KeyStore
from raftloop_core.logs import configure_logging
from raftloop_core.settings import SettingsError, check_kafka_secrets, check_secret
from raftloop_rag.adapters import (
    CrossEncoderReranker,
    QdrantIndex,
    SentenceTransformerEmbedder,
)
from raftloop_rag.app import create_app
from raftloop_rag.domain import IndexConfigError
from raftloop_rag.lexical import Bm25sSparseEncoder
from raftloop_rag.settings import RagSettings


def qdrant_client(settings: RagSettings) -> AsyncQdrantClient:
    """A Qdrant server client when a URL is set, else local mode on the data folder.

    Raises:
        SettingsError: the local folder is already used by another process, or (production)
            the Qdrant API key is short.
    """
    if settings.qdrant_url:
        secret = check_secret(
            settings.qdrant_api_key,
            name="the Qdrant API key",
            env="QDRANT_API_KEY",
            runtime=settings.runtime,
        )
        key = secret.get_secret_value() if secret else None
        return AsyncQdrantClient(url=settings.qdrant_url, api_key=key)
    path = settings.local_path()
    try:
        return AsyncQdrantClient(path=str(path))
    except RuntimeError as exc:
        raise SettingsError(
            f"the local Qdrant folder {path} is in use by another process ({exc}); local mode "
            "allows one client per folder: stop the other rag, set RAG_QDRANT_PATH to another "
            "folder, or run a Qdrant server and set QDRANT_URL"
        ) from exc


def build() -> FastAPI:
    """Build the rag app from the environment; a configuration problem exits with one line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Before torch loads: OpenMP threads that spin while waiting collapse under shared cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        settings = RagSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise SystemExit(f"rag: invalid settings: {problems}") from None
    configure_logging("rag", level=settings.runtime.log_level, fmt=settings.runtime.log_format)
    try:
        check_kafka_secrets(settings.kafka, settings.runtime)
        keys = KeyStore.for_runtime(settings.runtime, settings.api_keys_file)
        model = settings.model_path()
        reranker = (
            CrossEncoderReranker(settings.rerank_model, device=settings.embedding_device)
            if settings.search == "hybrid+rerank" and settings.rerank_model
            else None
        )
        encoder = Bm25sSparseEncoder()
        # The Qdrant client first: a locked local folder is reported before the model loads.
        index = QdrantIndex(
            qdrant_client(settings),
            settings.collection,
            local=not settings.qdrant_url,
            encoder=encoder,
        )
        embedder = SentenceTransformerEmbedder(
            model, device=settings.embedding_device, batch_size=settings.embedding_batch_size
        )
    except (SettingsError, IndexConfigError) as exc:
        raise SystemExit(f"rag: {exc}") from None
    return create_app(
        settings, embedder=embedder, index=index, keys=keys, encoder=encoder, reranker=reranker
    )
