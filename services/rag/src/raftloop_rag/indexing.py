"""Indexing use case: document events in, chunks in the collection out.

Idempotent by construction: point ids are derived from (tenant, document id, chunk index), so a
redelivered or re-submitted document overwrites its own points; a document whose stored chunks
already carry its content hash is skipped without embedding anything.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from raftloop_core.events import DocumentDeleted, DocumentSubmitted
from raftloop_rag.chunking import ChunkingPolicy, chunk_text
from raftloop_rag.domain import Embedder, Point, VectorIndex, point_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexResult:
    """What one event changed."""

    document_id: str
    upserted: int = 0
    deleted: int = 0
    skipped: bool = False


class Indexer:
    """Applies document events to the vector index."""

    def __init__(self, embedder: Embedder, index: VectorIndex, policy: ChunkingPolicy) -> None:
        self.embedder = embedder
        self.index = index
        self.policy = policy
        # One document at a time: the diff of old and new points must not interleave.
        self._lock = asyncio.Lock()
        self.signature = f"{embedder.name}/{policy.max_tokens}/{policy.overlap_tokens}"

    def fingerprint(self, event: DocumentSubmitted, chunk_count: int) -> str:
        """What a stored chunk was built from: content, model, chunking and chunk count."""
        return f"{event.content_hash}/{self.signature}/{chunk_count}"

    def up_to_date(self, event: DocumentSubmitted, existing: dict[str, str]) -> bool:
        """Whether the stored chunks are complete and built from this very content and setup."""
        return set(existing.values()) == {self.fingerprint(event, len(existing))}

    def points(self, event: DocumentSubmitted) -> list[Point]:
        """Chunk and embed a document (CPU-bound: call it off the event loop)."""
        chunks = chunk_text(
            event.text,
            title=event.title,
            count=self.embedder.count_tokens,
            policy=self.policy,
            plain_headings=event.format != "md",
        )
        vectors = self.embedder.embed([c.text for c in chunks])
        return [
            Point(
                id=point_id(event.tenant, event.document_id, chunk.index),
                vector=vector.tolist(),
                payload={
                    "document_id": event.document_id,
                    "tenant": event.tenant,
                    "source": event.source,
                    "title": event.title,
                    "format": event.format,
                    "chunk_index": chunk.index,
                    "chunk_count": len(chunks),
                    "heading": chunk.heading,
                    "text": chunk.text,
                    "content_hash": event.content_hash,
                    "fingerprint": self.fingerprint(event, len(chunks)),
                    "metadata": dict(event.metadata),
                },
            )
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]

    async def submitted(self, event: DocumentSubmitted) -> IndexResult:
        """Index a document; chunks of an earlier version that no longer exist are removed."""
        async with self._lock:
            existing = await self.index.point_ids(event.tenant, event.document_id)
            if existing and self.up_to_date(event, existing):
                return IndexResult(event.document_id, skipped=True)
            points = await asyncio.to_thread(self.points, event)
            await self.index.upsert(points)
            stale = sorted(set(existing) - {p.id for p in points})
            await self.index.delete(stale)
        log.info(
            "indexed document",
            extra={"document_id": event.document_id, "chunks": len(points), "stale": len(stale)},
        )
        return IndexResult(event.document_id, upserted=len(points), deleted=len(stale))

    async def deleted(self, event: DocumentDeleted) -> IndexResult:
        """Remove exactly the document's points (of the event's tenant)."""
        async with self._lock:
            existing = await self.index.point_ids(event.tenant, event.document_id)
            await self.index.delete(sorted(existing))
        log.info("deleted document", extra={"document_id": event.document_id, "n": len(existing)})
        return IndexResult(event.document_id, deleted=len(existing))
