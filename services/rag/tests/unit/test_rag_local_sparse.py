"""Local mode's lexical mirror: scores as Qdrant's IDF sparse search does, follows writes."""

from __future__ import annotations

import math

from raftloop_rag.domain import SparseVector
from raftloop_rag.local_sparse import SparseMirror


def idf(n: int, df: int) -> float:
    """Qdrant's IDF, written out from its documentation."""
    return math.log((n - df + 0.5) / (df + 0.5) + 1)


def test_scores_are_idf_weighted_dot_products_of_the_tenants_points() -> None:
    mirror = SparseMirror()
    mirror.put("a", SparseVector([1, 2], [0.5, 1.0]), "acme")
    mirror.put("b", SparseVector([2], [2.0]), "acme")
    mirror.put("c", SparseVector([3], [1.0]), "acme")  # shares no term: not a hit
    mirror.put("g", SparseVector([1, 2], [9.0, 9.0]), "globex")
    found = mirror.search(SparseVector([1, 2], [1.0, 1.0]), "acme", 10)
    # n = 4 points with the vector; term 1 is in 2 of them, term 2 in 3.
    want = {"a": 0.5 * idf(4, 2) + 1.0 * idf(4, 3), "b": 2.0 * idf(4, 3)}
    assert [i for i, _ in found] == sorted(want, key=lambda i: -want[i])
    for point, score in found:
        assert math.isclose(score, want[point], rel_tol=1e-9)
    assert mirror.search(SparseVector([1], [1.0]), "nobody", 10) == []
    assert mirror.search(SparseVector([], []), "acme", 10) == []


def test_a_search_reads_the_points_as_they_were_when_it_was_prepared() -> None:
    mirror = SparseMirror()
    mirror.put("a", SparseVector([1], [1.0]), "t")
    prepared = mirror.prepare(SparseVector([1], [1.0]), "t", 10)
    mirror.put("b", SparseVector([1], [2.0]), "t")
    mirror.drop(["a"])
    assert [i for i, _ in prepared()] == ["a"]
    assert [i for i, _ in mirror.search(SparseVector([1], [1.0]), "t", 10)] == ["b"]
    mirror.put("b", None, "t")  # re-written without terms
    assert mirror.search(SparseVector([1], [1.0]), "t", 10) == []
    assert len(mirror) == 0
