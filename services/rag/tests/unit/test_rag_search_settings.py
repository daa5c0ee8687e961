"""RAG_SEARCH and its parameters: validated, and a missing stage is a startup error."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from raftloop_rag.adapters import CrossEncoderReranker
from raftloop_rag.app import search_for
from raftloop_rag.domain import Hit, IndexConfigError, Query, RagError, Vectors
from raftloop_rag.lexical import Bm25sSparseEncoder
from raftloop_rag.main import build
from raftloop_rag.retrieval import RetrievalRequest, Retriever, Search
from raftloop_rag.settings import RagSettings


def test_hybrid_is_the_default_and_modes_are_a_closed_set(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = RagSettings()
    assert (settings.search, settings.fusion_candidates, settings.rrf_k) == ("hybrid", 20, 2)
    monkeypatch.setenv("RAG_SEARCH", "dense")
    assert RagSettings().search == "dense"
    for name, value in {
        "RAG_SEARCH": "bm25",
        "RAG_RRF_K": "0",
        "RAG_FUSION_CANDIDATES": "-1",
    }.items():
        monkeypatch.setenv(name, value)
        with pytest.raises(ValidationError):
            RagSettings()
        monkeypatch.delenv(name)


def test_rerank_without_a_model_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="RAG_RERANK_MODEL"):
        RagSettings(search="hybrid+rerank")
    monkeypatch.setenv("RAG_SEARCH", "hybrid+rerank")
    with pytest.raises(
        SystemExit, match=r"^rag: invalid settings: .*RAG_RERANK_MODEL.*RAG_SEARCH=hybrid"
    ):
        build()
    monkeypatch.setenv("RAG_SEARCH", "semantic")
    with pytest.raises(SystemExit, match=r"^rag: invalid settings: search: .*'dense', 'hybrid'"):
        build()


def test_a_rerank_model_folder_that_is_none_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IndexConfigError, match="is not a cross-encoder folder"):
        CrossEncoderReranker(str(tmp_path))


def test_a_mode_without_its_stage_is_refused() -> None:
    with pytest.raises(RagError, match="needs a sparse encoder"):
        Search(mode="hybrid")
    with pytest.raises(RagError, match="needs a reranker"):
        Search(mode="hybrid+rerank", encoder=Bm25sSparseEncoder())


class FakeEmbedder:
    name = "fake"
    dimension = 2
    max_tokens = 100

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def embed(self, texts: Sequence[str]) -> Vectors:
        vectors: Vectors = np.ones((len(texts), 2), dtype=np.float32) / np.sqrt(2)
        return vectors


class FakeIndex:
    """Returns chunks in a fixed order and records the queries."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.queries: list[Query] = []

    async def search(self, query: Query) -> list[Hit]:
        self.queries.append(query)
        return [
            Hit(str(i), 1.0 / (i + 1), {"document_id": "d", "chunk_index": i, "text": t})
            for i, t in enumerate(self.texts[: query.limit])
        ]


class FakeReranker:
    """Prefers texts that mention the word it was told."""

    def __init__(self, word: str) -> None:
        self.word = word

    def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        return [float(self.word in t) for t in texts]


async def test_rerank_reorders_the_fused_candidates() -> None:
    index = FakeIndex([f"chunk {i}" for i in range(30)] + ["the answer"])
    settings = RagSettings(search="hybrid+rerank", rerank_model="unused", rerank_candidates=31)
    search = search_for(settings, Bm25sSparseEncoder(), FakeReranker("answer"))
    retriever = Retriever(FakeEmbedder(), index, search=search)  # type: ignore[arg-type]
    [best, _] = await retriever.retrieve(RetrievalRequest(query="which answer", k=2, tenant="t"))
    assert best.text == "the answer"
    assert best.score == 1.0  # the reranker's score
    [query] = index.queries
    assert query.limit == 31  # the reranker reads rerank_candidates fused chunks
    assert query.fusion is not None
    assert query.sparse is not None
    assert query.sparse.indices


async def test_dense_mode_sends_no_lexical_query() -> None:
    index = FakeIndex(["a", "b"])
    search = search_for(RagSettings(search="dense"), Bm25sSparseEncoder(), None)
    retriever = Retriever(FakeEmbedder(), index, search=search)  # type: ignore[arg-type]
    await retriever.retrieve(RetrievalRequest(query="what is VB-720", k=2, tenant="t"))
    [query] = index.queries
    assert (query.sparse, query.fusion) == (None, None)
