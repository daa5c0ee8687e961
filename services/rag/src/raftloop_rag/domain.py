"""Pure decisions of rag: chunking, point ids, tenant and filter rules, MMR. No I/O here.

The ports that adapters implement (`Embedder`, `VectorIndex`) are declared here too.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
TokenCounter = Callable[[Sequence[str]], list[int]]
"""Counts tokens of each text in the embedding model's tokenizer (no special tokens)."""

POINT_NAMESPACE = uuid.UUID("6f1d3c0e-5b7a-4c1e-9a49-2f4c8e6d7b10")
"""Fixed namespace of point ids: the same chunk always gets the same id."""


class RagError(Exception):
    """A request rag refuses; the message says what is wrong and what to do."""


class BadFilter(RagError):
    """A retrieval filter names a field that cannot be filtered on."""


class IndexConfigError(RagError):
    """The vector collection does not fit the embedding model."""


SearchMode = Literal["dense", "hybrid", "hybrid+rerank"]
"""How rag ranks chunks (`RAG_SEARCH`): dense vectors only, dense and BM25 fused by reciprocal
rank fusion, or that fusion reranked by a cross-encoder."""


# ---------------------------------------------------------------- ports


@dataclass(frozen=True)
class SparseVector:
    """A lexical vector: term indices and their weights."""

    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class Point:
    """A chunk ready to be stored: id, dense vector, payload and (hybrid) sparse vector."""

    id: str
    vector: list[float]
    payload: dict[str, object]
    sparse: SparseVector | None = None


@dataclass(frozen=True)
class Fusion:
    """How a hybrid search fuses its dense and lexical candidates (reciprocal rank fusion)."""

    candidates: int
    """Each side contributes its best `candidates` points (at least the query's limit)."""
    rrf_k: int
    """RRF's rank constant: a point at rank r (from 0) of a side adds 1 / (r + rrf_k)."""


@dataclass(frozen=True)
class Hit:
    """A stored chunk that matched a query."""

    id: str
    score: float
    payload: Mapping[str, object]
    vector: list[float] | None = None


@dataclass(frozen=True)
class Query:
    """What to search for and within which bounds (the tenant is always set)."""

    vector: list[float]
    limit: int
    tenant: str
    match: Mapping[str, str | int | list[str] | list[int]] = field(default_factory=dict)
    exclude_point_ids: Sequence[str] = ()
    exclude_document_ids: Sequence[str] = ()
    with_vectors: bool = False
    sparse: SparseVector | None = None
    """Set (with `fusion`): a hybrid search, dense and lexical fused."""
    fusion: Fusion | None = None


class Embedder(Protocol):
    """Turns texts into normalised vectors."""

    name: str

    @property
    def dimension(self) -> int:
        """Length of each vector."""
        ...

    @property
    def max_tokens(self) -> int:
        """Longest input (in tokens, without special tokens) the model reads whole."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text, without special tokens."""
        ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised row per text."""
        ...


class SparseEncoder(Protocol):
    """Turns texts into lexical sparse vectors (BM25's term part; the index adds IDF)."""

    name: str

    def documents(self, texts: Sequence[str]) -> list[SparseVector]:
        """One vector per stored chunk."""
        ...

    def query(self, text: str) -> SparseVector:
        """The vector of a question."""
        ...


class Reranker(Protocol):
    """Orders candidate chunks by a model reading the question and each chunk together."""

    def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        """One relevance score per text; higher is better."""
        ...


class VectorIndex(Protocol):
    """The vector collection."""

    async def ensure(self, dimension: int) -> None:
        """Create the collection if missing; fail if it has another dimension.

        A collection without the lexical vectors (made before hybrid search) is migrated.
        """
        ...

    async def ready(self) -> bool:
        """Whether the collection exists and answers."""
        ...

    async def upsert(self, points: Sequence[Point]) -> None:
        """Insert or replace points by id."""
        ...

    async def point_ids(self, tenant: str, document_id: str) -> dict[str, str]:
        """Ids of a document's points, with the fingerprint each was built from."""
        ...

    async def delete(self, ids: Sequence[str]) -> None:
        """Delete points by id."""
        ...

    async def search(self, query: Query) -> list[Hit]:
        """Nearest points to the query vector within the query's bounds."""
        ...

    async def count(self, tenant: str | None = None, document_id: str | None = None) -> int:
        """Points stored (optionally of one tenant and/or document)."""
        ...

    async def close(self) -> None:
        """Release the client."""
        ...


# ---------------------------------------------------------------- ids


def chunk_id(document_id: str, chunk_index: int) -> str:
    """The public id of a chunk, as `RetrievedChunk.chunk_id` carries it."""
    return f"{document_id}#{chunk_index}"


def point_id(tenant: str, document_id: str, chunk_index: int) -> str:
    """The deterministic Qdrant point id of a chunk.

    The tenant is part of the key so that two tenants using the same document id can never
    overwrite each other's chunks.
    """
    return str(uuid.uuid5(POINT_NAMESPACE, f"{tenant}/{chunk_id(document_id, chunk_index)}"))


def public_source(source: str | None) -> str | None:
    """A chunk's source label as callers may see it: never a path on the ingesting server.

    `raftloop kb add` used to label documents with their absolute path (issue #18), and chunks
    indexed then keep it until their document changes: of such a path only the file name is
    stored or shown.
    """
    return PurePosixPath(source).name if source and source.startswith("/") else source


def parse_chunk_id(value: str) -> tuple[str, int]:
    """Split `<document_id>#<chunk_index>`.

    Raises:
        BadFilter: the value is not a chunk id.
    """
    document_id, sep, index = value.rpartition("#")
    if not sep or not document_id or not index.isdigit():
        raise BadFilter(
            f"{value!r} is not a chunk id; exclude_ids takes '<document_id>#<chunk_index>' "
            "(use exclude_document_ids for whole documents)"
        )
    return document_id, int(index)


# ---------------------------------------------------------------- tenants and filters

FILTERABLE = frozenset({"document_id", "source", "title", "format", "chunk_index", "content_hash"})
_METADATA_KEY = re.compile(r"^metadata\.[A-Za-z0-9_-]{1,64}$")


def check_filters(
    filters: Mapping[str, str | int | list[str] | list[int]],
) -> dict[str, str | int | list[str] | list[int]]:
    """Validate caller filters; they can only narrow a search, never name the tenant.

    Raises:
        BadFilter: a key is the tenant, unknown, or a value is empty.
    """
    for key, value in filters.items():
        if "tenant" in key.lower():
            raise BadFilter(
                f"filter {key!r} is not allowed: the tenant comes from your API key "
                "(the platform's own services set the top-level `tenant` field)"
            )
        if key not in FILTERABLE and not _METADATA_KEY.match(key):
            allowed = ", ".join(sorted(FILTERABLE))
            raise BadFilter(f"cannot filter on {key!r}; use one of {allowed} or metadata.<key>")
        if isinstance(value, list) and not value:
            raise BadFilter(f"filter {key!r} has an empty list; omit it or give values")
    return dict(filters)


# ---------------------------------------------------------------- MMR


def mmr(query: Vectors, candidates: Vectors, k: int, lambda_: float) -> list[int]:
    """Maximal marginal relevance: pick `k` candidates balancing relevance and novelty.

    Vectors are L2-normalised, so dot products are cosine similarities. `lambda_` = 1 is plain
    relevance order; 0 is maximal diversity.
    """
    if len(candidates) == 0 or k <= 0:
        return []
    relevance = candidates @ query
    similarity = candidates @ candidates.T
    chosen = [int(np.argmax(relevance))]
    while len(chosen) < min(k, len(candidates)):
        redundancy = similarity[:, chosen].max(axis=1)
        scores = lambda_ * relevance - (1 - lambda_) * redundancy
        scores[chosen] = -np.inf
        chosen.append(int(np.argmax(scores)))
    return chosen
