"""Hybrid search (#21): lexical matches that dense search misses, tenants in both modes, and
collections made before hybrid search migrated without losing a chunk."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient, models

from raftloop_core.api import KeyStore
from raftloop_core.events import DocumentSubmitted
from raftloop_core.settings import KafkaSettings
from raftloop_rag.adapters import MIGRATED_SUFFIX, QdrantIndex, SentenceTransformerEmbedder
from raftloop_rag.app import chunking_policy, search_for
from raftloop_rag.domain import Fusion, Point, Query, SearchMode, SparseVector, point_id
from raftloop_rag.indexing import Indexer
from raftloop_rag.lexical import Bm25sSparseEncoder
from raftloop_rag.retrieval import RetrievalRequest, Retriever
from raftloop_rag.settings import RagSettings
from raftloop_rag.testing import rag_settings, running_rag

pytestmark = pytest.mark.integration

ANSWER = (
    "Sign-in and sync errors > VB-101: the session ended; sign in again. VB-115: the account is "
    "locked after too many attempts; wait 15 minutes. VB-412: storage is full; delete files or "
    "upgrade. VB-617: the private key does not match. VB-720: the clock is more than five "
    "minutes off; turn on automatic date and time. VB-733: a file is locked by another program."
)
# A handbook's error codes: the answer sits in a list of codes (as a table's chunk does), while
# other chunks each speak of one code that looks like VB-720 to a dense model.
CHUNKS = [
    "Error codes > VB-702: the backup destination is offline. Check that the external drive or "
    "NAS is connected and switched on.",
    "Error codes > VB-270: a backup was stopped because the computer went to sleep. Change the "
    "power settings to keep it awake.",
    "Error codes > VB-727: an error occurred while the backup was running; the app tries again "
    "after the next restart.",
    ANSWER,
    "Network > Port 17500: LAN sync listens on TCP port 17500; allow it in the firewall so that "
    "devices on the same network sync directly.",
    "Network > Proxies: the app uses the system proxy settings; a proxy that inspects TLS breaks "
    "uploads.",
]
FUSION = Fusion(candidates=20, rrf_k=2)
DIM = 16


def retriever(embedder: SentenceTransformerEmbedder, index: QdrantIndex, mode: str) -> Retriever:
    settings = RagSettings(search=mode)
    return Retriever(embedder, index, search=search_for(settings, index.encoder, None))


async def test_an_error_code_that_dense_search_misses_is_found_by_hybrid(
    embedder: SentenceTransformerEmbedder,
) -> None:
    encoder = Bm25sSparseEncoder()
    index = QdrantIndex(AsyncQdrantClient(":memory:"), "kb", local=True, encoder=encoder)
    await index.ensure(embedder.dimension)
    vectors, lexical = embedder.embed(CHUNKS), encoder.documents(CHUNKS)
    await index.upsert(
        [
            Point(point_id("acme", "errors.md", i), v.tolist(), payload(i, text), s)
            for i, (text, v, s) in enumerate(zip(CHUNKS, vectors, lexical, strict=True))
        ]
    )
    # The gateway's k: 2 chunks per answer.
    ask = RetrievalRequest(query="What causes error VB-720?", k=2, tenant="acme")
    dense = await retriever(embedder, index, "dense").retrieve(ask)
    hybrid = await retriever(embedder, index, "hybrid").retrieve(ask)
    assert ANSWER not in [c.text for c in dense]
    assert ANSWER in [c.text for c in hybrid]
    await index.close()


def payload(i: int, text: str, tenant: str = "acme") -> dict[str, object]:
    return {"tenant": tenant, "document_id": "errors.md", "chunk_index": i, "text": text}


def unit(v: np.ndarray) -> list[float]:
    scaled: list[float] = (v / np.linalg.norm(v)).tolist()
    return scaled


def sparse(rng: np.random.Generator, terms: int = 40) -> SparseVector:
    indices = sorted({int(i) for i in rng.integers(0, terms, 5)})
    return SparseVector(indices, [float(x) for x in rng.uniform(0.2, 2.0, len(indices))])


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
async def test_tenants_hold_and_the_local_fast_path_is_exact_in_both_modes(
    mode: SearchMode,
) -> None:
    client = AsyncQdrantClient(location=":memory:")
    fast = QdrantIndex(client, "kb", local=True)
    filtered = QdrantIndex(client, "kb", local=False)  # Qdrant's own filtered (fused) query
    await fast.ensure(DIM)
    rng = np.random.default_rng(5)
    tenants = ["big"] * 300 + ["mid"] * 40 + ["tiny"] * 3
    await fast.upsert(
        [
            Point(
                point_id(t, f"d{i}", 0),
                unit(rng.standard_normal(DIM)),
                {"tenant": t, "document_id": f"d{i}"},
                sparse(rng),
            )
            for i, t in enumerate(tenants)
        ]
    )
    for _ in range(10):
        vector = unit(rng.standard_normal(DIM))
        terms = sparse(rng)
        for tenant in ("big", "mid", "tiny", "nobody"):
            for k in (1, 5, 10):
                query = Query(
                    vector=vector,
                    limit=k,
                    tenant=tenant,
                    sparse=terms if mode == "hybrid" else None,
                    fusion=FUSION if mode == "hybrid" else None,
                )
                got = await fast.search(query)
                want = await filtered.search(query)
                assert [h.id for h in got] == [h.id for h in want]
                assert {h.payload["tenant"] for h in got} <= {tenant}
                assert len(got) == min(k, tenants.count(tenant))
    # A filter on top of the tenant (Qdrant's filtered query) narrows and never widens.
    narrowed = await fast.search(
        Query(vector, 10, "mid", match={"document_id": "d305"}, sparse=terms, fusion=FUSION)
    )
    assert [h.payload["document_id"] for h in narrowed] == ["d305"]
    assert await fast.search(Query(vector, 10, "big", match={"document_id": "d305"})) == []


async def old_collection(client: AsyncQdrantClient, name: str, dimension: int) -> bool:
    """The collection as rag made it before #21: one unnamed dense vector, nothing else."""
    return await client.create_collection(
        name, vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE)
    )


def document(tenant: str, document_id: str, text: str) -> DocumentSubmitted:
    return DocumentSubmitted(
        tenant=tenant,
        document_id=document_id,
        source=document_id,
        title="Troubleshooting",
        text=text,
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
        format="md",
    )


ERRORS = document("acme", "errors.md", "# Troubleshooting\n\n" + "\n\n".join(CHUNKS))
SECRET = document("globex", "secret.md", "# Secret\n\nGLOBEX error VB-720 means the vault is shut.")


async def test_a_collection_made_before_hybrid_search_is_migrated_and_still_serves(
    embedder: SentenceTransformerEmbedder,
    kafka_settings: KafkaSettings,
    tmp_path: Path,
    unique: Callable[[str], str],
    keys: KeyStore,
) -> None:
    settings = rag_settings(kafka_settings, tmp_path / "qdrant", unique)
    # Before the upgrade: the old layout, filled by the indexer of the time (no lexical vectors).
    client = AsyncQdrantClient(path=str(settings.local_path()))
    await old_collection(client, settings.collection, embedder.dimension)
    before = QdrantIndex(client, settings.collection, local=True)
    await before.ensure(embedder.dimension)  # without an encoder it is left as it is
    old = Indexer(embedder, before, chunking_policy(settings, embedder))
    for event in (ERRORS, SECRET):
        await old.submitted(event)
    stored = await before.count()
    await before.close()

    async with running_rag(settings, embedder, keys) as rag:
        # Migrated on start: every chunk copied, the name now an alias of the new collection.
        assert await rag.index.count() == stored
        aliases = await rag.index.client.get_aliases()
        assert [(a.alias_name, a.collection_name) for a in aliases.aliases] == [
            (settings.collection, settings.collection + MIGRATED_SUFFIX)
        ]
        found = await rag.retrieve("acme", query="What causes error VB-720?", k=2)
        assert found.status_code == 200
        assert {c["document_id"] for c in found.json()["chunks"]} == {"errors.md"}
        globex = await rag.retrieve("globex", query="What causes error VB-720?", k=5)
        assert {c["document_id"] for c in globex.json()["chunks"]} == {"secret.md"}
        # Nothing was re-embedded: the same content is still up to date.
        await rag.apply(ERRORS)
        assert rag.applied() == 1
        registry = rag.app.state.registry
        assert (
            registry.get_sample_value("raftloop_rag_documents_total", {"outcome": "unchanged"})
            == 1.0
        )

    # A second start finds the migrated collection as it left it.
    client = AsyncQdrantClient(path=str(settings.local_path()))
    again = QdrantIndex(client, settings.collection, local=True, encoder=Bm25sSparseEncoder())
    await again.ensure(embedder.dimension)
    assert await again.count() == stored
    await again.close()


async def test_a_migration_cut_short_is_finished_on_the_next_start() -> None:
    client = AsyncQdrantClient(location=":memory:")
    await old_collection(client, "kb", DIM)
    rng = np.random.default_rng(1)
    points = [
        Point(
            point_id("a", f"d{i}", 0),
            unit(rng.standard_normal(DIM)),
            {"tenant": "a", "text": f"chunk {i}"},
        )
        for i in range(30)
    ]
    await QdrantIndex(client, "kb", local=True).upsert(points)
    # A copy cut short before the old collection went: it is made again from the start.
    await client.create_collection(
        "kb" + MIGRATED_SUFFIX,
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
    )
    index = QdrantIndex(client, "kb", local=True, encoder=Bm25sSparseEncoder())
    await index.ensure(DIM)
    assert await index.count() == 30
    terms = Bm25sSparseEncoder().query("chunk 7")
    [hit] = await index.search(Query(points[7].vector, 1, "a", sparse=terms, fusion=FUSION))
    assert hit.id == points[7].id
    # Cut short after the old collection went but before the alias: the alias is made.
    drop = models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="kb"))
    await client.update_collection_aliases(change_aliases_operations=[drop])
    assert not await client.collection_exists("kb")
    await index.ensure(DIM)
    assert await index.count() == 30
    await index.close()


async def test_the_local_lexical_side_follows_upserts_and_deletes() -> None:
    client = AsyncQdrantClient(location=":memory:")
    fast = QdrantIndex(client, "kb", local=True)
    filtered = QdrantIndex(client, "kb", local=False)
    await fast.ensure(DIM)
    rng = np.random.default_rng(9)

    def points(n: int, start: int = 0) -> list[Point]:
        return [
            Point(
                point_id("a", f"d{i}", 0),
                unit(rng.standard_normal(DIM)),
                {"tenant": "a"},
                sparse(rng),
            )
            for i in range(start, start + n)
        ]

    await fast.upsert(points(120))
    await fast.delete([point_id("a", f"d{i}", 0) for i in range(0, 120, 2)])
    await fast.upsert(points(30, start=100))  # replaces some, adds others
    # A point re-written without terms leaves the lexical side, as in Qdrant.
    await fast.upsert(
        [Point(point_id("a", "d1", 0), unit(rng.standard_normal(DIM)), {"tenant": "a"})]
    )
    for _ in range(20):
        query = Query(unit(rng.standard_normal(DIM)), 10, "a", sparse=sparse(rng), fusion=FUSION)
        assert [h.id for h in await fast.search(query)] == [
            h.id for h in await filtered.search(query)
        ]
    # A second index on the same collection reads the stored vectors back at `ensure`.
    reopened = QdrantIndex(client, "kb", local=True)
    await reopened.ensure(DIM)
    query = Query(unit(rng.standard_normal(DIM)), 10, "a", sparse=sparse(rng), fusion=FUSION)
    assert [h.id for h in await reopened.search(query)] == [
        h.id for h in await filtered.search(query)
    ]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real sentence-transformers CrossEncoder folder: one random BERT layer, MiniLM's vocab.

    No trained cross-encoder installs from a package registry here; this one checks the
    plumbing of `hybrid+rerank` (loading offline, scoring, ordering), not its quality.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(RagSettings().model_path(), local_files_only=True)
    tokenizer.save_pretrained(str(folder))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,  # type: ignore[call-arg]  # a keyword transformers' typing leaves out
    )
    BertForSequenceClassification(config).save_pretrained(str(folder))
    return str(folder)


async def test_hybrid_rerank_runs_a_cross_encoder_folder_over_the_fused_candidates(
    embedder: SentenceTransformerEmbedder, tiny_cross_encoder: str
) -> None:
    from raftloop_rag.adapters import CrossEncoderReranker

    reranker = CrossEncoderReranker(tiny_cross_encoder)
    encoder = Bm25sSparseEncoder()
    index = QdrantIndex(AsyncQdrantClient(":memory:"), "kb", local=True, encoder=encoder)
    await index.ensure(embedder.dimension)
    vectors, lexical = embedder.embed(CHUNKS), encoder.documents(CHUNKS)
    await index.upsert(
        [
            Point(point_id("acme", "errors.md", i), v.tolist(), payload(i, text), s)
            for i, (text, v, s) in enumerate(zip(CHUNKS, vectors, lexical, strict=True))
        ]
    )
    settings = RagSettings(search="hybrid+rerank", rerank_model=tiny_cross_encoder)
    retriever = Retriever(embedder, index, search=search_for(settings, encoder, reranker))
    question = "What causes error VB-720?"
    found = await retriever.retrieve(RetrievalRequest(query=question, k=3, tenant="acme"))
    assert len(found) == 3
    want = reranker.scores(question, [c.text for c in found])
    assert [c.score for c in found] == pytest.approx(want)
    assert want == sorted(want, reverse=True)
    await index.close()
