"""Indexing use case: document events in, chunks in the collection out.

Idempotent by construction: point ids are derived from (tenant, document id, chunk index), so a
redelivered or re-submitted document overwrites its own points; a document whose stored chunks
already carry its content hash is skipped without embedding anything.

A long document arrives as several events (`part` of `parts`, in order on one partition): each
part is chunked on its own, its chunk indexes start at `part * PART_STRIDE`, and the chunks of
earlier versions are removed when the last part has been indexed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from raftloop_core.events import DocumentDeleted, DocumentSubmitted
from raftloop_rag.chunking import ChunkingPolicy, chunk_text
from raftloop_rag.domain import (
    Embedder,
    Point,
    SparseEncoder,
    VectorIndex,
    point_id,
    public_source,
)

log = logging.getLogger(__name__)

PART_STRIDE = 1_000_000
"""Chunk indexes of part p start at p * PART_STRIDE: a part (one broker message) never holds
that many chunks, and part 0's indexes are those of a document sent whole."""


@dataclass(frozen=True)
class IndexResult:
    """What one event changed."""

    document_id: str
    upserted: int = 0
    deleted: int = 0
    skipped: bool = False


class Indexer:
    """Applies document events to the vector index."""

    def __init__(
        self,
        embedder: Embedder,
        index: VectorIndex,
        policy: ChunkingPolicy,
        encoder: SparseEncoder | None = None,
    ) -> None:
        self.embedder = embedder
        self.index = index
        self.policy = policy
        # Lexical vectors are stored whatever RAG_SEARCH is, so switching it needs no re-index.
        self.encoder = encoder
        # One document at a time: the diff of old and new points must not interleave.
        self._lock = asyncio.Lock()
        self.signature = f"{embedder.name}/{policy.max_tokens}/{policy.overlap_tokens}"

    def version(self, event: DocumentSubmitted) -> str:
        """What every chunk of this version of the document shares: content, model, chunking."""
        base = f"{event.content_hash}/{self.signature}"
        return base if event.parts == 1 else f"{base}/{event.parts} parts/"

    def fingerprint(self, event: DocumentSubmitted, chunk_count: int) -> str:
        """What a stored chunk was built from: its version, its part and the part's chunks."""
        if event.parts == 1:
            return f"{self.version(event)}/{chunk_count}"
        return f"{self.version(event)}{event.part}/{chunk_count}"

    def up_to_date(self, event: DocumentSubmitted, existing: dict[str, str]) -> bool:
        """Whether the stored chunks are complete and built from this very content and setup.

        For a part: its own chunks are, and after the last part no other version's are left.
        """
        if event.parts == 1:
            return set(existing.values()) == {self.fingerprint(event, len(existing))}
        own = self.fingerprint(event, 0).rsplit("/", 1)[0] + "/"
        mine = [fp for fp in existing.values() if fp.startswith(own)]
        if not mine or set(mine) != {self.fingerprint(event, len(mine))}:
            return False
        last = event.part == event.parts - 1
        return not last or all(fp.startswith(self.version(event)) for fp in existing.values())

    def stale(
        self, event: DocumentSubmitted, existing: dict[str, str], kept: set[str]
    ) -> list[str]:
        """Stored points that the new version does not have, once it is complete."""
        if event.parts == 1:
            return sorted(set(existing) - kept)
        if event.part < event.parts - 1:  # earlier parts: the old version serves until the last
            return []
        version = self.version(event)
        return sorted(
            i for i, fp in existing.items() if not fp.startswith(version) and i not in kept
        )

    def points(self, event: DocumentSubmitted) -> list[Point]:
        """Chunk and embed a document (CPU-bound: call it off the event loop)."""
        chunks = chunk_text(
            event.text,
            title=event.title,
            count=self.embedder.count_tokens,
            policy=self.policy,
            plain_headings=event.format != "md",
        )
        texts = [c.text for c in chunks]
        vectors = self.embedder.embed(texts)
        sparse = self.encoder.documents(texts) if self.encoder else [None] * len(chunks)
        first = event.part * PART_STRIDE
        return [
            Point(
                id=point_id(event.tenant, event.document_id, first + chunk.index),
                vector=vector.tolist(),
                payload={
                    "document_id": event.document_id,
                    "tenant": event.tenant,
                    "source": public_source(event.source),
                    "title": event.title,
                    "format": event.format,
                    "chunk_index": first + chunk.index,
                    "chunk_count": len(chunks),
                    "part": event.part,
                    "parts": event.parts,
                    "heading": chunk.heading,
                    "text": chunk.text,
                    "content_hash": event.content_hash,
                    "fingerprint": self.fingerprint(event, len(chunks)),
                    "metadata": dict(event.metadata),
                },
                sparse=lexical,
            )
            for chunk, vector, lexical in zip(chunks, vectors, sparse, strict=True)
        ]

    async def submitted(self, event: DocumentSubmitted) -> IndexResult:
        """Index a document; chunks of an earlier version that no longer exist are removed."""
        async with self._lock:
            existing = await self.index.point_ids(event.tenant, event.document_id)
            if existing and self.up_to_date(event, existing):
                return IndexResult(event.document_id, skipped=True)
            points = await asyncio.to_thread(self.points, event)
            await self.index.upsert(points)
            stale = self.stale(event, existing, {p.id for p in points})
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
