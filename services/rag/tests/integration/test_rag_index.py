"""QdrantIndex on qdrant-client's in-memory local mode: the local tenant fast path is exact."""

from __future__ import annotations

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient

from raftloop_rag.adapters import QdrantIndex
from raftloop_rag.domain import Point, Query, point_id

pytestmark = pytest.mark.integration

DIM = 16


def unit(v: np.ndarray) -> list[float]:
    scaled: list[float] = (v / np.linalg.norm(v)).tolist()
    return scaled


async def indexes() -> tuple[QdrantIndex, QdrantIndex]:
    client = AsyncQdrantClient(location=":memory:")
    fast = QdrantIndex(client, "kb", local=True)
    await fast.ensure(DIM)
    return fast, QdrantIndex(client, "kb", local=False)


async def test_the_fast_path_equals_the_filtered_search() -> None:
    fast, filtered = await indexes()
    rng = np.random.default_rng(3)
    tenants = ["big"] * 300 + ["mid"] * 40 + ["tiny"] * 3
    await fast.upsert(
        [
            Point(point_id(t, f"d{i}", 0), unit(rng.standard_normal(DIM)), {"tenant": t})
            for i, t in enumerate(tenants)
        ]
    )
    for _ in range(60):
        vector = unit(rng.standard_normal(DIM))
        for tenant in ("big", "mid", "tiny", "nobody"):
            for k in (1, 5, 10):
                query = Query(vector=vector, limit=k, tenant=tenant)
                got = [h.id for h in await fast.search(query)]
                want = [h.id for h in await filtered.search(query)]
                assert got == want
                assert len(got) == min(k, tenants.count(tenant))


async def test_a_tenant_outranked_by_others_still_gets_its_chunks() -> None:
    fast, _ = await indexes()
    near = np.ones(DIM)
    points = [
        Point(point_id("a", f"d{i}", 0), unit(near + 0.01 * i), {"tenant": "a"}) for i in range(50)
    ]
    points.append(Point(point_id("b", "far", 0), unit(-near), {"tenant": "b"}))
    await fast.upsert(points)
    [hit] = await fast.search(Query(vector=unit(near), limit=1, tenant="b"))
    assert hit.payload["tenant"] == "b"
    assert all(h.payload["tenant"] == "a" for h in await fast.search(Query(unit(near), 50, "a")))
