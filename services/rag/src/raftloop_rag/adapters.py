"""I/O of rag: the sentence-transformers embedder and the Qdrant collection."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from qdrant_client import AsyncQdrantClient, models

from raftloop_rag.domain import Hit, IndexConfigError, Point, Query, Vectors

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

SCROLL_PAGE = 1_000
UPSERT_BATCH = 256
LOCAL_WIDEN = 4
"""Local mode first searches this many times k without a filter (see `_search_then_keep_tenant`)."""
_INDEXED_FIELDS = ("tenant", "document_id")


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 (or any sentence-transformers model) from a local folder."""

    def __init__(self, path: str, *, device: str = "cpu", batch_size: int = 32) -> None:
        from sentence_transformers import SentenceTransformer
        from tokenizers import Tokenizer

        self.name = path.rstrip("/").split("/")[-1]
        if self.name == "model":
            self.name = "all-MiniLM-L6-v2"
        self.batch_size = batch_size
        self.model: SentenceTransformer = SentenceTransformer(
            path, device=device, local_files_only=True
        )
        # A private copy of the fast tokenizer without truncation or padding, for exact counts.
        backend = self.model.tokenizer.backend_tokenizer
        self._tokenizer = Tokenizer.from_str(backend.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        dimension = self.model.get_embedding_dimension()
        if dimension is None:
            raise IndexConfigError(f"{path} does not say its embedding dimension")
        self._dimension = int(dimension)

    @property
    def dimension(self) -> int:
        """Length of each vector."""
        return self._dimension

    @property
    def max_tokens(self) -> int:
        """The model's sequence limit less [CLS] and [SEP]."""
        return int(self.model.max_seq_length or 256) - 2

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text, without special tokens."""
        encoded = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encoded]

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Encode in batches; rows are L2-normalised float32."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class QdrantIndex:
    """One Qdrant collection, local mode or server, cosine distance."""

    def __init__(self, client: AsyncQdrantClient, collection: str, *, local: bool = False) -> None:
        self.client = client
        self.collection = collection
        # Local mode has no payload indexes (it warns about them) and checks a filter in Python,
        # point by point; a server needs the indexes and filters fast with them.
        self.local = local

    async def ensure(self, dimension: int) -> None:
        """Create the collection with `dimension`, or check that the existing one matches.

        Raises:
            IndexConfigError: the collection exists with another vector size or layout.
        """
        if not await self.client.collection_exists(self.collection):
            await self.client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE),
            )
            for name in () if self.local else _INDEXED_FIELDS:
                await self.client.create_payload_index(
                    self.collection, name, models.PayloadSchemaType.KEYWORD
                )
            log.info("created collection", extra={"collection": self.collection, "dim": dimension})
            return
        info = await self.client.get_collection(self.collection)
        vectors = info.config.params.vectors
        size = vectors.size if isinstance(vectors, models.VectorParams) else None
        if size != dimension:
            raise IndexConfigError(
                f"collection {self.collection!r} holds vectors of size {size}, but the "
                f"embedding model makes {dimension}; set RAG_COLLECTION to a new name (then "
                "re-submit the documents) or delete the collection to re-index it"
            )

    async def ready(self) -> bool:
        """Whether the collection exists."""
        return bool(await self.client.collection_exists(self.collection))

    async def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points, in batches."""
        for start in range(0, len(points), UPSERT_BATCH):
            batch = points[start : start + UPSERT_BATCH]
            await self.client.upsert(
                self.collection,
                points=[
                    models.PointStruct(id=p.id, vector=p.vector, payload=p.payload) for p in batch
                ],
                wait=True,
            )

    async def point_ids(self, tenant: str, document_id: str) -> dict[str, str]:
        """Ids of a document's points with the fingerprint each was built from."""
        found: dict[str, str] = {}
        offset: Any = None
        scope = _scope(tenant, document_id)
        while True:
            records, offset = await self.client.scroll(
                self.collection,
                scroll_filter=scope,
                limit=SCROLL_PAGE,
                offset=offset,
                with_payload=["fingerprint"],
                with_vectors=False,
            )
            for record in records:
                found[str(record.id)] = str((record.payload or {}).get("fingerprint", ""))
            if offset is None:
                return found

    async def delete(self, ids: Sequence[str]) -> None:
        """Delete points by id."""
        if ids:
            await self.client.delete(
                self.collection, points_selector=models.PointIdsList(points=list(ids)), wait=True
            )

    async def search(self, query: Query) -> list[Hit]:
        """Nearest points within the query's tenant and filters."""
        if self.local and not (
            query.match or query.exclude_point_ids or query.exclude_document_ids
        ):
            found = await self._search_then_keep_tenant(query)
            if found is not None:
                return found
        return await self._search(query, _filter(query), query.limit)

    async def _search_then_keep_tenant(self, query: Query) -> list[Hit] | None:
        """Local mode: an unfiltered (vectorised) search, then keep the tenant's points.

        Exact, not approximate: when the global top L holds at least k of the tenant's points,
        those are the tenant's top k, since any better one of the tenant's would be in the top L
        too; when it returned fewer than L points, it saw every point. Otherwise (None) the
        caller runs the filtered search. Isolation does not depend on this: the tenant check
        below is on the stored payload.
        """
        wide = query.limit * LOCAL_WIDEN
        hits = await self._search(query, None, wide)
        mine = [h for h in hits if h.payload.get("tenant") == query.tenant]
        if len(mine) >= query.limit or len(hits) < wide:
            return mine[: query.limit]
        return None

    async def _search(self, query: Query, flt: models.Filter | None, limit: int) -> list[Hit]:
        response = await self.client.query_points(
            self.collection,
            query=query.vector,
            query_filter=flt,
            limit=limit,
            with_payload=True,
            with_vectors=query.with_vectors,
        )
        return [
            Hit(
                id=str(p.id),
                score=float(p.score),
                payload=p.payload or {},
                vector=_dense(p.vector),
            )
            for p in response.points
        ]

    async def count(self, tenant: str | None = None, document_id: str | None = None) -> int:
        """Exact count of points, optionally of one tenant and/or document."""
        conditions = []
        if tenant is not None:
            conditions.append(_match("tenant", tenant))
        if document_id is not None:
            conditions.append(_match("document_id", document_id))
        flt = models.Filter(must=conditions) if conditions else None
        result = await self.client.count(self.collection, count_filter=flt, exact=True)
        return int(result.count)

    async def close(self) -> None:
        """Close the client (releases the local-mode folder lock)."""
        await self.client.close()


def _match(key: str, value: object) -> models.FieldCondition:
    if isinstance(value, list):
        return models.FieldCondition(key=key, match=models.MatchAny(any=value))
    if isinstance(value, str | int):
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))
    raise TypeError(f"cannot match {key!r} on a {type(value).__name__}")


def _dense(vector: object) -> list[float] | None:
    if isinstance(vector, list) and all(isinstance(x, float | int) for x in vector):
        return [float(x) for x in vector]
    return None


def _scope(tenant: str, document_id: str) -> models.Filter:
    return models.Filter(must=[_match("tenant", tenant), _match("document_id", document_id)])


def _filter(query: Query) -> models.Filter:
    """The tenant condition always comes first and is always a `must`: filters only narrow."""
    must: list[Any] = [_match("tenant", query.tenant)]
    must.extend(_match(key, value) for key, value in query.match.items())
    must_not: list[Any] = []
    if query.exclude_point_ids:
        must_not.append(models.HasIdCondition(has_id=list(query.exclude_point_ids)))
    if query.exclude_document_ids:
        must_not.append(_match("document_id", list(query.exclude_document_ids)))
    return models.Filter(must=must, must_not=must_not or None)
