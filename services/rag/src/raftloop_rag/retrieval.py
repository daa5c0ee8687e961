"""Retrieval use case: a question in, the tenant's nearest chunks out, optionally diversified."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from raftloop_core.events import RetrievedChunk
from raftloop_rag.domain import (
    Embedder,
    Hit,
    Query,
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


class Retriever:
    """Embeds the question and searches the tenant's chunks."""

    def __init__(
        self,
        embedder: Embedder,
        index: VectorIndex,
        *,
        mmr_lambda: float = 0.5,
        mmr_candidates: int = 4,
    ) -> None:
        self.embedder = embedder
        self.index = index
        self.mmr_lambda = mmr_lambda
        self.mmr_candidates = mmr_candidates

    async def retrieve(self, request: RetrievalRequest) -> list[RetrievedChunk]:
        """The `k` best chunks of the request's tenant.

        Raises:
            BadFilter: a filter or excluded id is malformed.
        """
        match = check_filters(request.filters)
        excluded = [point_id(request.tenant, *parse_chunk_id(c)) for c in request.exclude_ids]
        [vector] = await asyncio.to_thread(self.embedder.embed, [request.query])
        limit = request.k * self.mmr_candidates if request.mmr else request.k
        hits = await self.index.search(
            Query(
                vector=vector.tolist(),
                limit=limit,
                tenant=request.tenant,
                match=match,
                exclude_point_ids=excluded,
                exclude_document_ids=list(request.exclude_document_ids),
                with_vectors=request.mmr,
            )
        )
        if request.mmr and len(hits) > request.k:
            hits = self._diversify(vector, hits, request.k)
        return [to_chunk(hit) for hit in hits[: request.k]]

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
