"""The retrieval HTTP API: `POST /v1/retrieve`."""

# No `from __future__ import annotations`: FastAPI must see the route's dependency alias, which is
# local to `retrieval_router`, as a real object rather than a string.

import logging
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Header
from pydantic import BaseModel, ConfigDict, Field

from raftloop_core.api import ApiError, Caller, KeyStore, require
from raftloop_core.events import RetrievedChunk, Tenant
from raftloop_core.logs import INTERACTION_ID_HEADER
from raftloop_rag.retrieval import FilterValue, RetrievalRequest, Retriever
from raftloop_rag.telemetry import RagMetrics

log = logging.getLogger(__name__)


class RetrieveRequest(BaseModel):
    """Body of `POST /v1/retrieve`."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=8_000)
    k: int | None = Field(default=None, ge=1, description="Default RAG_DEFAULT_K; max RAG_MAX_K.")
    tenant: Tenant | None = Field(
        default=None,
        description="Default: the key's tenant. Another only with a key that may act for it.",
    )
    filters: dict[str, FilterValue] = Field(default_factory=dict)
    exclude_ids: list[str] = Field(default_factory=list, description="Chunk ids to leave out.")
    exclude_document_ids: list[str] = Field(default_factory=list)
    mmr: bool = False


class RetrieveResponse(BaseModel):
    """The chunks found, best first, and the tenant that was searched."""

    chunks: list[RetrievedChunk]
    tenant: str


def retrieval_router(
    retriever: Retriever,
    keys: KeyStore,
    *,
    default_k: int,
    max_k: int,
    metrics: RagMetrics,
) -> APIRouter:
    """Routes of the retrieval API; every caller needs a client, internal or admin key."""
    router = APIRouter(prefix="/v1")
    CallerDep = Annotated[Caller, Depends(require(keys, "client", "internal"))]
    # The gateway names the interaction a retrieval serves, so it can be followed in the logs.
    InteractionDep = Annotated[str | None, Header(alias=INTERACTION_ID_HEADER, max_length=64)]

    @router.post("/retrieve", response_model=RetrieveResponse)
    async def retrieve(
        body: RetrieveRequest, caller: CallerDep, interaction_id: InteractionDep = None
    ) -> RetrieveResponse:
        k = body.k or default_k
        if k > max_k:
            raise ApiError(
                400, f"k={k} is above the limit of {max_k} (RAG_MAX_K)", param="k", code="k_too_big"
            )
        tenant = caller.acting_for(body.tenant)
        start = time.perf_counter()
        chunks = await retriever.retrieve(
            RetrievalRequest(
                query=body.query,
                k=k,
                tenant=tenant,
                filters=body.filters,
                exclude_ids=body.exclude_ids,
                exclude_document_ids=body.exclude_document_ids,
                mmr=body.mmr,
            )
        )
        seconds = time.perf_counter() - start
        metrics.retrieval_seconds.labels("mmr" if body.mmr else "plain").observe(seconds)
        log.log(
            logging.INFO if interaction_id else logging.DEBUG,
            "retrieved",
            extra={
                "interaction_id": interaction_id,
                "tenant": tenant,
                "k": k,
                "hits": len(chunks),
                "ms": round(seconds * 1000, 1),
            },
        )
        return RetrieveResponse(chunks=chunks, tenant=tenant)

    return router
