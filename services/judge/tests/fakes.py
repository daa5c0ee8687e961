"""Hand-written fakes of the judge's reference store and embedder, for unit tests."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np

from raftloop_judge.domain import Reference


class FakeReferenceStore:
    """Append-only reference rows in memory; counts the calls the index makes."""

    def __init__(self) -> None:
        self.rows: list[Reference] = []
        self.calls: Counter[str] = Counter()
        self.fetched: list[str] = []

    def add_reference(self, reference: Reference) -> bool:
        self.calls["add_reference"] += 1
        if any(r.reference_id == reference.reference_id for r in self.rows):
            return False
        self.rows.append(replace(reference, at=reference.at or datetime.now(UTC)))
        return True

    def _newest(self, tenant: str) -> list[Reference]:
        mine = [r for r in self.rows if r.tenant == tenant]
        return sorted(mine, key=lambda r: r.at or datetime.min, reverse=True)

    def references(self, tenant: str, limit: int = 5000) -> list[Reference]:
        self.calls["references"] += 1
        return self._newest(tenant)[:limit]

    def reference_count(self, tenant: str) -> int:
        self.calls["reference_count"] += 1
        return sum(r.tenant == tenant for r in self.rows)

    def newest_reference_ids(self, tenant: str, limit: int) -> tuple[list[str], int]:
        self.calls["newest_reference_ids"] += 1
        newest = self._newest(tenant)
        return [r.reference_id for r in newest[:limit]], len(newest)

    def references_by_id(self, tenant: str, ids: Sequence[str]) -> list[Reference]:
        self.calls["references_by_id"] += 1
        self.fetched.extend(ids)
        wanted = set(ids)
        return [r for r in self.rows if r.tenant == tenant and r.reference_id in wanted]


def text_vector(text: str, dim: int = 16) -> list[float]:
    """A deterministic unit vector per text: equal texts, equal vectors."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    vec = np.random.default_rng(seed).normal(size=dim)
    return [float(x) for x in vec / np.linalg.norm(vec)]


class FakeEmbedder:
    """`text_vector` for each text; records every call's texts."""

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []

    async def encode(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [text_vector(t, self.dim) for t in texts]
