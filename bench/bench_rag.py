"""rag: embedding throughput of the indexing path vs raw sentence-transformers, retrieval latency
at 10k chunks, and recall@10 of the Qdrant search vs exact brute-force search.

- Throughput: the demo knowledge base as document events, through `Indexer.points` (chunking,
  token counting, batched embedding, point building) vs `SentenceTransformer.encode` on the very
  same chunk texts in the same per-document batches. Runs alternate (and swap who goes first)
  and the best of each is kept; the overhead is also given in process CPU time, which other
  processes on shared cores disturb less than wall time.
  The same model encoding all chunks in one call shows what per-document batches cost.
- Latency: 10k synthetic chunks (noisy copies of the demo KB's chunk vectors, so the corpus is
  clustered like real text) in qdrant-client local mode (in memory: the folder mode searches
  with the same code), or the server in QDRANT_URL / RAG_QDRANT_URL when set.
  `Retriever.retrieve` is timed end to end (question embedding, tenant-scoped search, payload
  to RetrievedChunk); `filtered_search` is local mode's own payload filter, which rag avoids
  with an exact unfiltered-then-tenant search.
- Recall@10: the demo questions' top 10 from Qdrant vs exact numpy dot products over the same
  10k vectors. Local mode searches exhaustively, so 1.0 is expected there; against a server this
  measures its HNSW index.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import tempfile
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TITLE = "RAG: indexing-path embedding throughput, retrieval latency at 10k chunks, Qdrant recall@10"
CORPUS = 10_000
QUERIES = 200
FILTERED_QUERIES = 30
ROUNDS = 4
DOCUMENTS = 12


def _events() -> list:
    import raftloop_demo_kb as kb
    from raftloop_demo_kb.text import raw_text

    from raftloop_core.events import DocumentSubmitted

    events = []
    for doc in kb.documents()[:DOCUMENTS]:
        text = raw_text(doc.path)
        events.append(
            DocumentSubmitted(
                tenant="bench",
                document_id=doc.name,
                source=doc.name,
                title=doc.title,
                text=text,
                content_hash=hashlib.sha256(text.encode()).hexdigest(),
                format=doc.format,
            )
        )
    return events


def _throughput(indexer, embedder, events) -> tuple[dict[str, float | int | str], np.ndarray]:
    from raftloop_rag.chunking import chunk_text

    batches = [
        [
            c.text
            for c in chunk_text(
                e.text,
                title=e.title,
                count=embedder.count_tokens,
                policy=indexer.policy,
                plain_headings=e.format != "md",
            )
        ]
        for e in events
    ]
    texts = [t for batch in batches for t in batch]
    embedder.embed(batches[0])  # warm-up

    def ours() -> None:
        for event in events:
            indexer.points(event)

    def raw() -> None:
        for batch in batches:  # the same texts in the same per-document batches
            embedder.model.encode(batch, batch_size=embedder.batch_size)

    timings: dict[str, list[tuple[float, float]]] = {"ours": [], "raw": []}
    for round_ in range(ROUNDS):
        order = [("ours", ours), ("raw", raw)]
        for name, fn in order if round_ % 2 == 0 else order[::-1]:  # alternate who goes first
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            timings[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    start = time.perf_counter()
    vectors = embedder.model.encode(texts, batch_size=embedder.batch_size)
    one_call = len(texts) / (time.perf_counter() - start)
    best = {name: (min(w for w, _ in t), min(c for _, c in t)) for name, t in timings.items()}
    figures: dict[str, float | int | str] = {
        "documents": len(events),
        "chunks": len(texts),
        "index_path_chunks_per_s": round(len(texts) / best["ours"][0], 1),
        "raw_encode_chunks_per_s": round(len(texts) / best["raw"][0], 1),
        "index_path_overhead_pct_wall": round(100 * (best["ours"][0] / best["raw"][0] - 1), 1),
        "index_path_overhead_pct_cpu": round(100 * (best["ours"][1] / best["raw"][1] - 1), 1),
        "overhead_target": "< 10%",
        "raw_encode_one_call_chunks_per_s": round(one_call, 1),
    }
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return figures, normed.astype(np.float32)


def _corpus(seeds: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(7)
    base = seeds[rng.integers(0, len(seeds), CORPUS)]
    noisy = base + 0.08 * rng.standard_normal(base.shape).astype(np.float32)
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


async def _search_figures(embedder, vectors: np.ndarray, folder: str) -> dict[str, float | str]:
    from qdrant_client import AsyncQdrantClient
    from raftloop_demo_kb import questions

    from raftloop_rag.adapters import QdrantIndex
    from raftloop_rag.domain import Point, Query, point_id
    from raftloop_rag.main import qdrant_client
    from raftloop_rag.retrieval import RetrievalRequest, Retriever
    from raftloop_rag.settings import RagSettings

    settings = RagSettings(qdrant_path=folder, collection=f"bench-{os.getpid()}")
    # Local mode in memory: its search code is the folder mode's, without the slow disk upsert.
    client = qdrant_client(settings) if settings.qdrant_url else AsyncQdrantClient(":memory:")
    index = QdrantIndex(client, settings.collection, local=not settings.qdrant_url)
    filtered = QdrantIndex(client, settings.collection, local=False)
    await index.ensure(embedder.dimension)
    ids = [point_id("bench", f"doc-{i // 10}", i % 10) for i in range(CORPUS)]
    points = [
        Point(
            id=ids[i],
            vector=vectors[i].tolist(),
            payload={
                "tenant": "bench",
                "document_id": f"doc-{i // 10}",
                "chunk_index": i % 10,
                "title": "synthetic",
                "source": "bench",
                "text": f"synthetic chunk {i}",
            },
        )
        for i in range(CORPUS)
    ]
    start = time.perf_counter()
    await index.upsert(points)
    upsert_s = time.perf_counter() - start
    retriever = Retriever(embedder, index)
    asked = [q.question for q in questions()]
    texts = asked[:QUERIES]
    latencies = []
    for text in texts:
        start = time.perf_counter()
        await retriever.retrieve(RetrievalRequest(query=text, k=10, tenant="bench"))
        latencies.append(time.perf_counter() - start)
    qv = embedder.embed(asked)
    position = {pid: i for i, pid in enumerate(ids)}
    search_latencies = []
    overlaps = []
    for q in qv:
        start = time.perf_counter()
        hits = await index.search(Query(vector=q.tolist(), limit=10, tenant="bench"))
        search_latencies.append(time.perf_counter() - start)
        exact = set(np.argsort(-(vectors @ q))[:10].tolist())
        overlaps.append(len(exact & {position[h.id] for h in hits}) / 10)
    filtered_latencies = []
    for q in qv[:FILTERED_QUERIES]:
        start = time.perf_counter()
        await filtered.search(Query(vector=q.tolist(), limit=10, tenant="bench"))
        filtered_latencies.append(time.perf_counter() - start)
    await index.client.delete_collection(settings.collection)
    await index.close()
    qs = statistics.quantiles
    return {
        "corpus_chunks": CORPUS,
        "qdrant_mode": "server" if settings.qdrant_url else "local (in memory)",
        "upsert_10k_s": round(upsert_s, 2),
        "retrieve_p50_ms": round(1000 * statistics.median(latencies), 2),
        "retrieve_p99_ms": round(1000 * qs(latencies, n=100)[98], 2),
        "search_only_p50_ms": round(1000 * statistics.median(search_latencies), 2),
        "search_only_p99_ms": round(1000 * qs(search_latencies, n=100)[98], 2),
        "filtered_search_p50_ms": round(1000 * statistics.median(filtered_latencies), 2),
        "qdrant_recall_at_10_vs_exact": round(float(np.mean(overlaps)), 4),
        "recall_queries": len(qv),
    }


def run() -> dict[str, float | int | str]:
    """Run both comparisons and return flat figures."""
    from raftloop_rag.adapters import SentenceTransformerEmbedder
    from raftloop_rag.chunking import ChunkingPolicy
    from raftloop_rag.indexing import Indexer
    from raftloop_rag.settings import RagSettings

    settings = RagSettings()
    embedder = SentenceTransformerEmbedder(
        settings.model_path(), batch_size=settings.embedding_batch_size
    )
    policy = ChunkingPolicy(min(settings.chunk_tokens, embedder.max_tokens))
    indexer = Indexer(embedder, index=None, policy=policy)  # type: ignore[arg-type]
    figures, seeds = _throughput(indexer, embedder, _events())
    with tempfile.TemporaryDirectory() as folder:
        figures |= asyncio.run(_search_figures(embedder, _corpus(seeds), folder))
    return figures


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key}: {value}")
