"""Retrieval use case: a question in, the tenant's nearest chunks out, optionally diversified."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from raftloop_core.events import RetrievedChunk
from raftloop_rag.domain import (
    Embedder,
    Fusion,
    Hit,
    Query,
    RagError,
    Reranker,
    SearchMode,
    SparseEncoder,
    SparseVector,
    VectorIndex,
    check_filters,
    chunk_id,
    mmr,
    parse_chunk_id,
    point_id,
    public_source,
)

FilterValue = str | int | list[str] | list[int]


@dataclass(frozen=True)
class RetrievalRequest:
    """A validated retrieval: the tenant has already been decided from the caller's key."""

    query: str
    k: int
    tenant: str
    filters: Mapping[str, FilterValue] = field(default_factory=dict)
    exclude_ids: Sequence[str] = ()
    exclude_document_ids: Sequence[str] = ()
    mmr: bool = False


@dataclass(frozen=True)
class Search:
    """How the retriever ranks: the mode and what its hybrid and rerank stages need."""

    mode: SearchMode = "dense"
    encoder: SparseEncoder | None = None
    fusion: Fusion = field(default_factory=lambda: Fusion(candidates=20, rrf_k=2))
    reranker: Reranker | None = None
    rerank_candidates: int = 20

    def __post_init__(self) -> None:
        """A mode without what it needs is a configuration error, never silently dense."""
        if self.mode != "dense" and self.encoder is None:
            raise RagError(f"RAG_SEARCH={self.mode} needs a sparse encoder")
        if self.mode == "hybrid+rerank" and self.reranker is None:
            raise RagError("RAG_SEARCH=hybrid+rerank needs a reranker (RAG_RERANK_MODEL)")


class Retriever:
    """Embeds the question and searches the tenant's chunks."""

    def __init__(
        self,
        embedder: Embedder,
        index: VectorIndex,
        *,
        mmr_lambda: float = 0.5,
        mmr_candidates: int = 4,
        search: Search | None = None,
    ) -> None:
        self.embedder = embedder
        self.index = index
        self.mmr_lambda = mmr_lambda
        self.mmr_candidates = mmr_candidates
        self.search = search or Search()

    async def retrieve(self, request: RetrievalRequest) -> list[RetrievedChunk]:
        """The `k` best chunks of the request's tenant.

        Raises:
            BadFilter: a filter or excluded id is malformed.
        """
        match = check_filters(request.filters)
        excluded = [point_id(request.tenant, *parse_chunk_id(c)) for c in request.exclude_ids]
        vector, sparse = await asyncio.to_thread(self._encode, request.query)
        limit = request.k * self.mmr_candidates if request.mmr else request.k
        reranking = self.search.mode == "hybrid+rerank"
        hits = await self.index.search(
            Query(
                vector=vector.tolist(),
                limit=max(limit, self.search.rerank_candidates) if reranking else limit,
                tenant=request.tenant,
                match=match,
                exclude_point_ids=excluded,
                exclude_document_ids=list(request.exclude_document_ids),
                with_vectors=request.mmr,
                sparse=sparse,
                fusion=self.search.fusion if sparse is not None else None,
            )
        )
        if reranking:
            hits = (await asyncio.to_thread(self._rerank, request.query, hits))[:limit]
        if request.mmr and len(hits) > request.k:
            hits = self._diversify(vector, hits, request.k)
        return [to_chunk(hit) for hit in hits[: request.k]]

    def _encode(self, text: str) -> tuple[np.ndarray, SparseVector | None]:
        """The question's dense vector, and its lexical one when the search is hybrid."""
        [vector] = self.embedder.embed([text])
        encoder = self.search.encoder
        if self.search.mode == "dense" or encoder is None:
            return vector, None
        return vector, encoder.query(text)

    def _rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        reranker = self.search.reranker
        if reranker is None or not hits:
            return hits
        scores = reranker.scores(query, [str(h.payload.get("text", "")) for h in hits])
        order = sorted(range(len(hits)), key=lambda i: -scores[i])
        return [replace(hits[i], score=float(scores[i])) for i in order]

    def _diversify(self, query: np.ndarray, hits: list[Hit], k: int) -> list[Hit]:
        candidates = np.asarray([h.vector for h in hits], dtype=np.float32)
        return [hits[i] for i in mmr(query, candidates, k, self.mmr_lambda)]


def to_chunk(hit: Hit) -> RetrievedChunk:
    """The event-schema view of a stored chunk."""
    payload = hit.payload
    document_id = str(payload["document_id"])
    index = int(str(payload["chunk_index"]))
    return RetrievedChunk(
        chunk_id=chunk_id(document_id, index),
        document_id=document_id,
        text=str(payload.get("text", "")),
        score=hit.score,
        title=_optional(payload.get("title")),
        source=public_source(_optional(payload.get("source"))),
        chunk_index=index,
    )


def _optional(value: object) -> str | None:
    return None if value is None else str(value)
