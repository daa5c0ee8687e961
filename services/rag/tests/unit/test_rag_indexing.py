"""Indexer and Retriever decisions with hand-written fakes of the Embedder and VectorIndex ports."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from raftloop_core.events import DocumentDeleted, DocumentSubmitted
from raftloop_rag.chunking import ChunkingPolicy
from raftloop_rag.domain import Hit, Point, Query, Vectors, point_id
from raftloop_rag.indexing import PART_STRIDE, Indexer
from raftloop_rag.retrieval import RetrievalRequest, Retriever, to_chunk


class FakeEmbedder:
    name = "fake"
    dimension = 4
    max_tokens = 64

    def __init__(self) -> None:
        self.embedded = 0

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.embedded += len(texts)
        rows = [[len(t) % 7 + 1.0, t.count("a") + 1.0, 1.0, float(i)] for i, t in enumerate(texts)]
        array = np.asarray(rows, dtype=np.float32)
        normed: Vectors = array / np.linalg.norm(array, axis=1, keepdims=True)
        return normed


class FakeIndex:
    def __init__(self) -> None:
        self.points: dict[str, Point] = {}
        self.queries: list[Query] = []

    async def ensure(self, dimension: int) -> None:
        return None

    async def ready(self) -> bool:
        return True

    async def upsert(self, points: Sequence[Point]) -> None:
        self.points.update({p.id: p for p in points})

    async def point_ids(self, tenant: str, document_id: str) -> dict[str, str]:
        return {
            pid: str(p.payload["fingerprint"])
            for pid, p in self.points.items()
            if p.payload["tenant"] == tenant and p.payload["document_id"] == document_id
        }

    async def delete(self, ids: Sequence[str]) -> None:
        for pid in ids:
            self.points.pop(pid, None)

    async def search(self, query: Query) -> list[Hit]:
        self.queries.append(query)
        mine = [p for p in self.points.values() if p.payload["tenant"] == query.tenant]
        scored = [
            Hit(p.id, float(np.dot(p.vector, query.vector)), p.payload, p.vector) for p in mine
        ]
        return sorted(scored, key=lambda h: -h.score)[: query.limit]

    async def count(self, tenant: str | None = None, document_id: str | None = None) -> int:
        return len(self.points)

    async def close(self) -> None:
        return None


def submitted(text: str, tenant: str = "acme") -> DocumentSubmitted:
    return DocumentSubmitted(
        tenant=tenant,
        document_id="doc.md",
        source="kb/doc.md",
        title="Doc",
        text=text,
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
        format="md",
    )


TEXT = "\n\n".join(f"## Part {i}\n\n" + "Refunds take days. " * 20 for i in range(4))


def make() -> tuple[Indexer, FakeEmbedder, FakeIndex]:
    embedder, index = FakeEmbedder(), FakeIndex()
    return Indexer(embedder, index, ChunkingPolicy(48, 8)), embedder, index


async def test_an_unchanged_document_is_not_embedded_again() -> None:
    indexer, embedder, index = make()
    first = await indexer.submitted(submitted(TEXT))
    embedded = embedder.embedded
    again = await indexer.submitted(submitted(TEXT))
    assert first.upserted == len(index.points) > 1
    assert again.skipped
    assert embedder.embedded == embedded


async def test_a_partly_written_document_is_indexed_again() -> None:
    indexer, _, index = make()
    await indexer.submitted(submitted(TEXT))
    total = len(index.points)
    await index.delete([point_id("acme", "doc.md", total - 1)])  # as if a crash cut the upsert
    result = await indexer.submitted(submitted(TEXT))
    assert not result.skipped
    assert len(index.points) == total


async def test_another_chunking_setup_reindexes_the_same_content() -> None:
    indexer, embedder, index = make()
    await indexer.submitted(submitted(TEXT))
    finer = Indexer(embedder, index, ChunkingPolicy(24, 4))
    result = await finer.submitted(submitted(TEXT))
    assert not result.skipped
    assert len(index.points) == result.upserted
    assert {p.payload["fingerprint"] for p in index.points.values()} == {
        finer.fingerprint(submitted(TEXT), result.upserted)
    }


async def test_deletion_is_scoped_to_the_events_tenant() -> None:
    indexer, _, index = make()
    await indexer.submitted(submitted(TEXT, tenant="acme"))
    await indexer.submitted(submitted("# Other\n\nGlobex text.", tenant="globex"))
    result = await indexer.deleted(DocumentDeleted(tenant="acme", document_id="doc.md"))
    assert result.deleted > 0
    assert {p.payload["tenant"] for p in index.points.values()} == {"globex"}


async def test_mmr_asks_for_more_candidates_and_returns_k() -> None:
    indexer, embedder, index = make()
    await indexer.submitted(submitted(TEXT))
    retriever = Retriever(embedder, index, mmr_lambda=0.5, mmr_candidates=3)
    chunks = await retriever.retrieve(
        RetrievalRequest(query="refunds", k=2, tenant="acme", mmr=True)
    )
    assert len(chunks) == 2
    assert index.queries[-1].limit == 6
    assert index.queries[-1].with_vectors
    plain = await retriever.retrieve(RetrievalRequest(query="refunds", k=2, tenant="acme"))
    assert index.queries[-1].limit == 2
    assert plain[0].chunk_id == f"doc.md#{plain[0].chunk_index}"


def in_parts(text: str, pieces: list[str]) -> list[DocumentSubmitted]:
    whole = submitted(text)
    return [
        whole.model_copy(update={"text": piece, "part": i, "parts": len(pieces)})
        for i, piece in enumerate(pieces)
    ]


async def test_a_document_in_parts_replaces_its_old_version_once_the_last_part_is_in() -> None:
    indexer, embedder, index = make()
    await indexer.submitted(submitted(TEXT))
    old = set(index.points)
    pieces = [f"## Part {i}\n\n" + f"Version two, part {i} says refunds take days. " * 12
              for i in range(3)]  # fmt: skip
    parts = in_parts("\n\n".join(pieces), pieces)

    await indexer.submitted(parts[0])
    await indexer.submitted(parts[1])
    # Until the last part, the old version still answers: none of its points is deleted.
    assert old <= set(index.points)
    assert any(p.payload["content_hash"] == submitted(TEXT).content_hash
               for p in index.points.values())  # fmt: skip
    await indexer.submitted(parts[2])

    stored = list(index.points.values())
    assert {p.payload["content_hash"] for p in stored} == {parts[0].content_hash}
    assert {p.payload["part"] for p in stored} == {0, 1, 2}
    for p in stored:  # each part's chunk indexes start at part * PART_STRIDE
        index_in_part = int(str(p.payload["chunk_index"])) - PART_STRIDE * int(
            str(p.payload["part"])
        )
        assert 0 <= index_in_part < PART_STRIDE
        assert p.id == point_id("acme", "doc.md", int(str(p.payload["chunk_index"])))
    embedded = embedder.embedded
    assert all([(await indexer.submitted(part)).skipped for part in parts])
    assert embedder.embedded == embedded

    result = await indexer.submitted(submitted("# Short\n\nNow one small event."))
    assert result.deleted == len(stored) - result.upserted
    assert {p.payload["parts"] for p in index.points.values()} == {1}


async def test_a_server_path_never_becomes_a_chunks_source() -> None:
    indexer, _, index = make()
    event = submitted(TEXT).model_copy(update={"source": "/home/ops/kb/private/doc.md"})
    await indexer.submitted(event)
    assert {p.payload["source"] for p in index.points.values()} == {"doc.md"}
    [hit] = (await index.search(Query([1.0, 0, 0, 0], 1, "acme")))[:1]
    assert to_chunk(hit).source == "doc.md"
    legacy = Hit(hit.id, 1.0, {**hit.payload, "source": "/srv/kb/old.md"})
    assert to_chunk(legacy).source == "old.md"
