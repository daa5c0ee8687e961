"""I/O of rag: the sentence-transformers embedder and the Qdrant collection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.hybrid.fusion import DEFAULT_RANKING_CONSTANT_K, reciprocal_rank_fusion

from raftloop_rag.domain import (
    Hit,
    IndexConfigError,
    Point,
    Query,
    SparseEncoder,
    SparseVector,
    Vectors,
)
from raftloop_rag.local_sparse import SparseMirror

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

SCROLL_PAGE = 1_000
UPSERT_BATCH = 256
LOCAL_WIDEN = 4
"""Local mode first searches this many times k without a filter (see `_top_of_tenant`)."""
_INDEXED_FIELDS = ("tenant", "document_id")
SPARSE = "bm25"
"""The collection's named sparse vector (BM25 terms; Qdrant applies IDF). The dense vector stays
the unnamed default, as in collections made before hybrid search."""
MIGRATED_SUFFIX = "-hybrid"
"""A collection made before hybrid search is copied to `<name>-hybrid`, which `<name>` then
names as an alias."""


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


class CrossEncoderReranker:
    """A sentence-transformers cross-encoder from a local folder (RAG_RERANK_MODEL).

    rag ships none: no cross-encoder's weights install from a package registry here, and
    models are never fetched from a hub at run time.
    """

    def __init__(self, path: str, *, device: str = "cpu") -> None:
        from sentence_transformers import CrossEncoder

        try:
            self.model = CrossEncoder(path, device=device, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise IndexConfigError(
                f"RAG_RERANK_MODEL={path!r} is not a cross-encoder folder ({exc}); give the "
                "folder of a sentence-transformers CrossEncoder, or use RAG_SEARCH=hybrid"
            ) from exc

    def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        """One relevance score per text; higher is better."""
        if not texts:
            return []
        found = self.model.predict(
            [(query, t) for t in texts], convert_to_numpy=True, show_progress_bar=False
        )
        return [float(x) for x in np.asarray(found).reshape(-1)]


class QdrantIndex:
    """One Qdrant collection, local mode or server, cosine distance."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        collection: str,
        *,
        local: bool = False,
        encoder: SparseEncoder | None = None,
    ) -> None:
        self.client = client
        self.collection = collection
        # Local mode has no payload indexes (it warns about them) and checks a filter in Python,
        # point by point; a server needs the indexes and filters fast with them.
        self.local = local
        # Builds the lexical vectors of a collection made before hybrid search (migration);
        # without one the index is dense-only and leaves such a collection as it is.
        self.encoder = encoder
        # Local mode's lexical side, vectorised (see local_sparse); loaded by `ensure`.
        self._mirror: SparseMirror | None = None

    async def ensure(self, dimension: int) -> None:
        """Create the collection with `dimension`, or check that the existing one matches.

        A collection made before hybrid search (no sparse vectors) is migrated: its points are
        copied with their dense vectors and payloads to `<name>-hybrid`, which gets lexical
        vectors built from each chunk's stored text (nothing is re-embedded); the old collection
        is then dropped and `<name>` made an alias of the new one. The copy is counted before
        the old one goes, and a migration cut short is finished on the next start.

        Raises:
            IndexConfigError: the collection exists with another vector size or layout.
        """
        name, migrated = self.collection, f"{self.collection}{MIGRATED_SUFFIX}"
        # Aliases are read outright: what a server's collection calls make of one varies.
        aliases = {
            a.alias_name: a.collection_name for a in (await self.client.get_aliases()).aliases
        }
        if name not in aliases and not await self.client.collection_exists(name):
            if await self.client.collection_exists(migrated):  # cut short after the drop
                await self._alias(name, migrated)
            else:
                await self._create(name, dimension)
            if self.local:
                await self._load_mirror()
            return
        info = await self.client.get_collection(aliases.get(name, name))
        vectors = info.config.params.vectors
        size = vectors.size if isinstance(vectors, models.VectorParams) else None
        if size != dimension:
            raise IndexConfigError(
                f"collection {name!r} holds vectors of size {size}, but the "
                f"embedding model makes {dimension}; set RAG_COLLECTION to a new name (then "
                "re-submit the documents) or delete the collection to re-index it"
            )
        if SPARSE not in (info.config.params.sparse_vectors or {}) and self.encoder is not None:
            await self._migrate(name, migrated, dimension, self.encoder)
        if self.local:
            await self._load_mirror()

    async def _load_mirror(self) -> None:
        """Read every stored lexical vector into the local mirror (local mode only)."""
        mirror, offset = SparseMirror(), None
        while True:
            records, offset = await self.client.scroll(
                self.collection,
                limit=SCROLL_PAGE,
                offset=offset,
                with_payload=["tenant"],
                with_vectors=[SPARSE],
            )
            for r in records:
                vector = r.vector.get(SPARSE) if isinstance(r.vector, dict) else None
                terms = (
                    SparseVector(list(vector.indices), list(vector.values))
                    if isinstance(vector, models.SparseVector)
                    else None
                )
                mirror.put(str(r.id), terms, str((r.payload or {}).get("tenant", "")))
            if offset is None:
                break
        self._mirror = mirror

    async def _create(self, name: str, dimension: int) -> None:
        await self.client.create_collection(
            name,
            vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE),
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
        )
        for field in () if self.local else _INDEXED_FIELDS:
            await self.client.create_payload_index(name, field, models.PayloadSchemaType.KEYWORD)
        log.info("created collection", extra={"collection": name, "dim": dimension})

    async def _alias(self, alias: str, target: str) -> None:
        create = models.CreateAlias(collection_name=target, alias_name=alias)
        await self.client.update_collection_aliases(
            change_aliases_operations=[models.CreateAliasOperation(create_alias=create)]
        )

    async def _migrate(
        self, name: str, target: str, dimension: int, encoder: SparseEncoder
    ) -> None:
        """Copy a dense-only collection to one with lexical vectors, then alias it."""
        if await self.client.collection_exists(target):  # a copy cut short: start it again
            await self.client.delete_collection(target)
        await self._create(target, dimension)
        copied, offset = 0, None
        while True:
            records, offset = await self.client.scroll(
                name, limit=SCROLL_PAGE, offset=offset, with_payload=True, with_vectors=True
            )
            texts = [str((r.payload or {}).get("text", "")) for r in records]
            sparse = await asyncio.to_thread(encoder.documents, texts)
            await self._upsert_into(
                target,
                [
                    Point(str(r.id), _dense(r.vector) or [], r.payload or {}, s)
                    for r, s in zip(records, sparse, strict=True)
                ],
            )
            copied += len(records)
            if offset is None:
                break
        before = (await self.client.count(name, exact=True)).count
        after = (await self.client.count(target, exact=True)).count
        if after != before:
            raise IndexConfigError(
                f"migrating {name!r} copied {after} of {before} chunks to {target!r}; "
                f"{name!r} is kept as it was: restart rag to try again"
            )
        await self.client.delete_collection(name)
        await self._alias(name, target)
        log.info("migrated collection", extra={"collection": name, "to": target, "n": copied})

    async def ready(self) -> bool:
        """Whether the collection exists."""
        return bool(await self.client.collection_exists(self.collection))

    async def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points, in batches."""
        await self._upsert_into(self.collection, points)
        if self._mirror is not None:
            for p in points:
                self._mirror.put(p.id, p.sparse, str(p.payload.get("tenant", "")))

    async def _upsert_into(self, collection: str, points: Sequence[Point]) -> None:
        for start in range(0, len(points), UPSERT_BATCH):
            batch = points[start : start + UPSERT_BATCH]
            await self.client.upsert(
                collection,
                points=[
                    models.PointStruct(id=p.id, vector=_vectors(p), payload=p.payload)
                    for p in batch
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
            if self._mirror is not None:
                self._mirror.drop(list(ids))

    async def search(self, query: Query) -> list[Hit]:
        """Nearest points within the query's tenant and filters (fused with BM25 if hybrid)."""
        if self.local and not (
            query.match or query.exclude_point_ids or query.exclude_document_ids
        ):
            found = await self._local_tenant_search(query)
            if found is not None:
                return [_hit(p) for p in found]
        flt = _filter(query)
        if query.fusion is None or query.sparse is None:
            return [
                _hit(p) for p in await self._points(query, query.vector, None, flt, query.limit)
            ]
        candidates = max(query.fusion.candidates, query.limit)
        prefetch = [models.Prefetch(query=query.vector, filter=flt, limit=candidates)]
        if query.sparse.indices:  # a question of stopwords only has no lexical side
            prefetch.append(
                models.Prefetch(
                    query=_sparse(query.sparse), using=SPARSE, filter=flt, limit=candidates
                )
            )
        response = await self.client.query_points(
            self.collection,
            prefetch=prefetch,
            query=_rrf(query.fusion.rrf_k),
            query_filter=flt,
            limit=query.limit,
            with_payload=True,
            with_vectors=query.with_vectors,
        )
        return [_hit(p) for p in response.points]

    async def _local_tenant_search(self, query: Query) -> list[models.ScoredPoint] | None:
        """Local mode: each side searched unfiltered (vectorised), then fused by Qdrant's RRF.

        Each side's tenant list is exact (see `_top_of_tenant` and `local_sparse`), so fusing
        them with the very function local mode's query API uses gives what the filtered query
        would, fast. The sides carry only the tenant; payloads are read for the fused top only.
        """
        if query.fusion is None or query.sparse is None:
            return await self._top_of_tenant(query, query.vector, None, query.limit)
        candidates = max(query.fusion.candidates, query.limit)
        dense = await self._top_of_tenant(query, query.vector, None, candidates, light=True)
        if dense is None:
            return None
        sides = [dense]
        if query.sparse.indices:
            lexical = await self._lexical_of_tenant(query, query.sparse, candidates)
            if lexical is None:
                return None
            sides.append(lexical)
        fused = reciprocal_rank_fusion(
            sides, limit=query.limit, ranking_constant_k=query.fusion.rrf_k
        )
        records = await self.client.retrieve(
            self.collection,
            ids=[p.id for p in fused],
            with_payload=True,
            with_vectors=query.with_vectors,
        )
        by_id = {str(r.id): r for r in records}
        return [
            models.ScoredPoint(
                id=p.id,
                version=0,
                score=p.score,
                payload=by_id[str(p.id)].payload,
                vector=by_id[str(p.id)].vector,
            )
            for p in fused
            if str(p.id) in by_id and (by_id[str(p.id)].payload or {}).get("tenant") == query.tenant
        ]

    async def _lexical_of_tenant(
        self, query: Query, terms: SparseVector, k: int
    ) -> list[models.ScoredPoint] | None:
        """Local mode's lexical side: the mirror's exact tenant top k, else Qdrant's search."""
        if self._mirror is None:  # `ensure` was not called: ask Qdrant, point by point
            return await self._top_of_tenant(query, _sparse(terms), SPARSE, k, light=True)
        found = await asyncio.to_thread(self._mirror.prepare(terms, query.tenant, k))
        return [models.ScoredPoint(id=i, version=0, score=score) for i, score in found]

    async def _top_of_tenant(
        self,
        query: Query,
        vector: list[float] | models.SparseVector,
        using: str | None,
        k: int,
        *,
        light: bool = False,
    ) -> list[models.ScoredPoint] | None:
        """Local mode: an unfiltered (vectorised) search, then keep the tenant's points.

        Exact, not approximate: when the global top L holds at least k of the tenant's points,
        those are the tenant's top k, since any better one of the tenant's would be in the top L
        too; when it returned fewer than L points, it saw every point (that matched). Otherwise
        (None) the caller runs the filtered search. Isolation does not depend on this: the
        tenant check below is on the stored payload. `light` reads only the tenant.
        """
        wide = k * LOCAL_WIDEN
        points = await self._points(query, vector, using, None, wide, light=light)
        mine = [p for p in points if (p.payload or {}).get("tenant") == query.tenant]
        if len(mine) >= k or len(points) < wide:
            return mine[:k]
        return None

    async def _points(
        self,
        query: Query,
        vector: list[float] | models.SparseVector,
        using: str | None,
        flt: models.Filter | None,
        limit: int,
        *,
        light: bool = False,
    ) -> list[models.ScoredPoint]:
        response = await self.client.query_points(
            self.collection,
            query=vector,
            using=using,
            query_filter=flt,
            limit=limit,
            with_payload=["tenant"] if light else True,
            with_vectors=False if light else query.with_vectors,
        )
        return response.points

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


def _hit(point: models.ScoredPoint) -> Hit:
    return Hit(
        id=str(point.id),
        score=float(point.score),
        payload=point.payload or {},
        vector=_dense(point.vector),
    )


def _sparse(vector: SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=vector.indices, values=vector.values)


def _vectors(point: Point) -> Any:
    """The dense vector alone, or with the lexical one (an empty text has none)."""
    if point.sparse is None or not point.sparse.indices:
        return point.vector
    return {"": point.vector, SPARSE: _sparse(point.sparse)}


def _rrf(rank_constant: int) -> models.FusionQuery | models.RrfQuery:
    """Qdrant's RRF; its default constant as a plain `FusionQuery`, which older servers know."""
    if rank_constant == DEFAULT_RANKING_CONSTANT_K:
        return models.FusionQuery(fusion=models.Fusion.RRF)
    return models.RrfQuery(rrf=models.Rrf(k=rank_constant))


def _dense(vector: object) -> list[float] | None:
    if isinstance(vector, dict):  # named vectors: the dense one is the unnamed default
        vector = vector.get("")
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
