"""The in-memory reference index: per tenant, newest N, in step with the store it caches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from raftloop_judge.domain import Reference
from raftloop_judge.reference_index import ReferenceIndex, TenantReferences

from ..fakes import FakeReferenceStore

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def ref(i: int, tenant: str = "acme", vec: list[float] | None = None, **kw: object) -> Reference:
    rng = np.random.default_rng(i)
    v = vec if vec is not None else [float(x) for x in rng.normal(size=8)]
    at = kw.pop("at", T0 + timedelta(seconds=i))
    return Reference(f"{tenant}-{i}", tenant, f"q{i}", f"a{i}", v, at)  # type: ignore[arg-type]


def unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def brute_force(store: FakeReferenceStore, tenant: str, limit: int, q: np.ndarray) -> Reference:
    """The old path: the store's newest rows, newest first, first best cosine wins."""
    rows = store.references(tenant, limit)
    sims = [float(unit(r.embedding) @ q) for r in rows]
    return rows[int(np.argmax(sims))]


async def test_ranking_equals_brute_force_over_the_store_rows() -> None:
    store = FakeReferenceStore()
    for i in range(300):
        store.add_reference(ref(i))
    index = ReferenceIndex(store, limit=120)
    queries = np.stack([unit(ref(1000 + k).embedding) for k in range(40)])
    hits = await index.nearest("acme", queries)
    for q, hit in zip(queries, hits, strict=True):
        expected = brute_force(store, "acme", 120, q)
        assert hit is not None
        assert hit.reference_id == expected.reference_id
        assert hit.answer == expected.answer
        assert hit.similarity == pytest.approx(float(unit(expected.embedding) @ q), abs=1e-5)


async def test_tenants_never_see_each_others_references() -> None:
    store = FakeReferenceStore()
    shared = [1.0, 0.0, 0.0]
    store.add_reference(ref(1, "acme", shared))
    index = ReferenceIndex(store)
    q = np.asarray([shared], dtype=np.float32)
    assert await index.nearest("globex", q) == [None]
    await index.add([ref(2, "globex", [0.0, 1.0, 0.0])])
    [acme] = await index.nearest("acme", q)
    [globex] = await index.nearest("globex", q)
    assert acme is not None
    assert acme.reference_id == "acme-1"
    assert globex is not None
    assert globex.reference_id == "globex-2"
    assert globex.similarity == pytest.approx(0.0)
    assert store.fetched == ["acme-1"]  # globex's load fetched no acme row


async def test_an_add_extends_a_loaded_index_without_reloading() -> None:
    store = FakeReferenceStore()
    store.add_reference(ref(1, vec=[1.0, 0.0]))
    index = ReferenceIndex(store)
    await index.refresh("acme")
    assert store.calls["newest_reference_ids"] == 1
    assert await index.add([ref(2, vec=[0.0, 2.0]), ref(1, vec=[1.0, 0.0])]) == [True, False]
    [hit] = await index.nearest("acme", np.asarray([[0.0, 1.0]], dtype=np.float32))
    assert hit is not None
    assert hit.reference_id == "acme-2"
    assert hit.similarity == pytest.approx(1.0)  # stored un-normalised, held as a unit vector
    assert store.calls["newest_reference_ids"] == 1  # its own insert kept it in step
    assert store.fetched == ["acme-1"]


async def test_rows_another_replica_stored_are_fetched_before_the_next_search() -> None:
    store = FakeReferenceStore()
    store.add_reference(ref(1, vec=[1.0, 0.0]))
    mine, theirs = ReferenceIndex(store), ReferenceIndex(store)
    await mine.refresh("acme")
    await theirs.add([ref(2, vec=[0.0, 1.0])])  # the other replica's consumer got this one
    [hit] = await mine.nearest("acme", np.asarray([[0.0, 1.0]], dtype=np.float32))
    assert hit is not None
    assert hit.reference_id == "acme-2"
    assert store.fetched == ["acme-1", "acme-2"]  # only the missing row is read again


async def test_only_the_newest_n_are_kept() -> None:
    store = FakeReferenceStore()
    for i in range(5):
        store.add_reference(ref(i))
    index = ReferenceIndex(store, limit=3)
    refs = await index.refresh("acme")
    assert refs.ids() == {"acme-2", "acme-3", "acme-4"}
    await index.add([ref(9), ref(10, at=T0 - timedelta(days=1))])  # newest, then oldest
    refs = await index.refresh("acme")
    assert refs.ids() == {"acme-3", "acme-4", "acme-9"}
    reloaded = await ReferenceIndex(store, limit=3).refresh("acme")
    assert reloaded.ids() == refs.ids()


def test_equal_similarities_go_to_the_newest_reference() -> None:
    refs = TenantReferences(limit=10)
    for i in (3, 1, 2):
        refs.add(ref(i, vec=[1.0, 0.0]))
    [hit] = refs.nearest(np.asarray([[1.0, 0.0]], dtype=np.float32))
    assert hit is not None
    assert hit.reference_id == "acme-3"


def test_an_embedding_of_another_size_is_refused_with_what_to_do() -> None:
    refs = TenantReferences(limit=10)
    refs.add(ref(1, vec=[1.0, 0.0]))
    with pytest.raises(ValueError, match="embedding model changed"):
        refs.add(ref(2, vec=[1.0, 0.0, 0.0]))
    assert len(refs) == 1


def test_answer_vectors_are_dropped_with_their_reference() -> None:
    refs = TenantReferences(limit=1)
    refs.add(ref(1))
    refs.keep_answer_vector("acme-1", np.ones(8, dtype=np.float32))
    assert refs.answer_vector("acme-1") is not None
    refs.add(ref(2))
    assert refs.answer_vector("acme-1") is None
    refs.keep_answer_vector("acme-1", np.ones(8, dtype=np.float32))  # gone: not cached
    assert refs.answer_vector("acme-1") is None
