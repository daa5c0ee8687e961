"""rag: the knowledge base's chunks in Qdrant and the retrieval API that gateway and trainer call.

Indexing
    Consumes `Topic.KB_DOCUMENT` (`DocumentSubmitted` / `DocumentDeleted`, group `rag`). A
    submitted document is chunked along its markdown headings (each chunk starts with its
    heading path, e.g. "Refunds > Annual plans", and holds at most `RAG_CHUNK_TOKENS` tokens
    of the embedding model, with `RAG_CHUNK_OVERLAP_TOKENS` shared between neighbours),
    embedded in batches and upserted under deterministic ids (uuid5 of tenant, document id and
    chunk index). Re-submitting removes chunks the new version no longer has; re-submitting
    identical content changes nothing; a deletion removes exactly that document's chunks. A
    document too long for one message arrives in parts (`part` of `parts`), indexed one by
    one; the old version's chunks go when the last part is in.

Retrieval contract (port 8001, `RAG_PORT`)
    `POST /v1/retrieve` with `Authorization: Bearer <key>` (client, internal or admin role)::

        {"query": "How long do refunds take?",    # required
         "k": 5,                                  # default RAG_DEFAULT_K (5), at most RAG_MAX_K
         "tenant": "acme",                        # optional: see Tenants below
         "filters": {"document_id": "refunds.md", "source": ["a", "b"], "metadata.lang": "en"},
         "exclude_ids": ["refunds.md#0"],         # chunk ids to leave out
         "exclude_document_ids": ["refunds.md"],  # whole documents to leave out (RAFT distractors)
         "mmr": false}                            # maximal-marginal-relevance diversification

    answers ``{"chunks": [RetrievedChunk, ...], "tenant": "acme"}``, best first, where each
    chunk is `raftloop_core.events.RetrievedChunk`: ``chunk_id`` ("<document_id>#<chunk_index>"),
    ``document_id``, ``text``, ``score``, ``title``, ``source``,
    ``chunk_index``. ``score`` is the cosine similarity with RAG_SEARCH=dense, the fused
    reciprocal-rank score with hybrid and the cross-encoder's with hybrid+rerank: compare
    scores within one answer only. ``source`` is a label (a file name), never a path on a
    server. The gateway cites ``title`` and ``document_id`` and records the chunks in
    `ChatCompleted.retrieved`.

    Tenants: a key searches its own tenant. ``tenant`` may name another one only with a key
    whose record lists it in ``tenants`` (the platform's internal key, ``["*"]``, which the
    gateway and the trainer send with the tenant of the work they do); any other tenant is a
    403 (``tenant_forbidden``), whatever the key's role. Filters can only narrow
    a search (they are ANDed after the tenant condition, which the service adds itself); a filter
    key that mentions the tenant, or any key outside document_id, source, title, format,
    chunk_index, content_hash and metadata.<key>, is a 400.

    Errors use the OpenAI envelope: 401 no or unknown key, 403 wrong role or tenant, 400 bad
    body.
    `/healthz`, `/readyz` (collection, model and broker) and `/metrics` need no key.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from raftloop_core.api import ApiError, KeyStore, error_response, install_error_handlers
from raftloop_core.events import DocumentEvent, DocumentSubmitted
from raftloop_core.limits import install_request_guards
from raftloop_core.messaging import consumer_options, make_broker
from raftloop_core.service import ReadinessCheck, add_ops_routes, broker_check
from raftloop_rag.chunking import ChunkingPolicy
from raftloop_rag.domain import (
    Embedder,
    Fusion,
    RagError,
    Reranker,
    SparseEncoder,
    VectorIndex,
)
from raftloop_rag.indexing import Indexer
from raftloop_rag.lexical import Bm25sSparseEncoder
from raftloop_rag.retrieval import Retriever, Search
from raftloop_rag.routes import retrieval_router
from raftloop_rag.settings import RagSettings
from raftloop_rag.telemetry import RagMetrics

log = logging.getLogger(__name__)


def chunking_policy(settings: RagSettings, embedder: Embedder) -> ChunkingPolicy:
    """The chunk budget, capped by what the model reads without truncation."""
    return ChunkingPolicy(
        max_tokens=min(settings.chunk_tokens, embedder.max_tokens),
        overlap_tokens=settings.chunk_overlap_tokens,
    )


def subscribe(broker: KafkaBroker, settings: RagSettings, indexer: Indexer, m: RagMetrics) -> None:
    """Register the indexing consumer on `broker`."""

    @broker.subscriber(  # type: ignore[untyped-decorator]  # faststream's is untyped
        settings.topic, **consumer_options(settings.kafka, group_id=settings.consumer_group)
    )
    async def on_document(event: DocumentEvent) -> None:
        """kb.document -> chunks upserted or removed."""
        if isinstance(event, DocumentSubmitted):
            result = await indexer.submitted(event)
            m.documents.labels("unchanged" if result.skipped else "indexed").inc()
        else:
            result = await indexer.deleted(event)
            m.documents.labels("deleted").inc()
        m.chunks.labels("upserted").inc(result.upserted)
        m.chunks.labels("deleted").inc(result.deleted)


def search_for(
    settings: RagSettings, encoder: SparseEncoder | None, reranker: Reranker | None
) -> Search:
    """The retriever's ranking, as RAG_SEARCH and its parameters say.

    Raises:
        RagError: the mode needs an encoder or reranker that was not given.
    """
    return Search(
        mode=settings.search,
        encoder=encoder,
        fusion=Fusion(candidates=settings.fusion_candidates, rrf_k=settings.rrf_k),
        reranker=reranker,
        rerank_candidates=settings.rerank_candidates,
    )


def create_app(
    settings: RagSettings,
    *,
    embedder: Embedder,
    index: VectorIndex,
    keys: KeyStore,
    encoder: SparseEncoder | None = None,
    reranker: Reranker | None = None,
) -> FastAPI:
    """Wire the indexing consumer, the retrieval API and the ops routes.

    `encoder` builds the lexical vectors that hybrid search needs (stored whatever the mode;
    pure, no model and no I/O, so bm25s's is the default); `reranker` is needed by
    `hybrid+rerank` only.
    """
    encoder = encoder or Bm25sSparseEncoder()
    registry = CollectorRegistry()
    broker = make_broker(
        settings.kafka,
        client_id=f"{settings.kafka.client_id}-rag",
        registry=registry,
        service="rag",
    )
    metrics = RagMetrics.create(registry)
    indexer = Indexer(embedder, index, chunking_policy(settings, embedder), encoder)
    retriever = Retriever(
        embedder,
        index,
        mmr_lambda=settings.mmr_lambda,
        mmr_candidates=settings.mmr_candidates,
        search=search_for(settings, encoder, reranker),
    )
    subscribe(broker, settings, indexer, metrics)
    state = {"collection": False}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await index.ensure(embedder.dimension)
        state["collection"] = True
        try:
            await broker.start()
        except Exception as exc:
            await index.close()
            raise RuntimeError(
                f"rag cannot reach the Kafka broker at {settings.kafka.bootstrap_servers} "
                f"({type(exc).__name__}); start it with `raftloop broker` or set "
                "KAFKA_BOOTSTRAP_SERVERS"
            ) from exc
        try:
            yield
        finally:
            state["collection"] = False
            await broker.stop()
            await index.close()

    app = FastAPI(title="raftloop rag", lifespan=lifespan)
    app.state.broker, app.state.indexer, app.state.index = broker, indexer, index
    app.state.registry = registry
    install_error_handlers(app)
    install_request_guards(app, settings.request_limits())

    async def on_rag_error(_: Request, exc: Exception) -> JSONResponse:
        return error_response(ApiError(400, str(exc), code=type(exc).__name__))

    app.add_exception_handler(RagError, on_rag_error)

    async def collection_ready() -> bool:
        return state["collection"] and await index.ready()

    async def model_ready() -> bool:
        return embedder.dimension > 0

    add_ops_routes(
        app,
        service="rag",
        registry=registry,
        checks=[
            ReadinessCheck("collection", collection_ready),
            ReadinessCheck("model", model_ready),
            broker_check(broker),
        ],
        keys=keys,
        protect=settings.runtime.ops_protected,
    )
    app.include_router(
        retrieval_router(
            retriever, keys, default_k=settings.default_k, max_k=settings.max_k, metrics=metrics
        )
    )
    return app
