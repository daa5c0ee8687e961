"""Local mode's lexical search, vectorised: the stored BM25 vectors as one scipy sparse matrix.

qdrant-client's local mode scores sparse vectors one point at a time in Python (about 0.2 s a
question at 10k chunks on a shared core), far over rag's 50 ms budget. Local mode allows one
client per folder, so the `QdrantIndex` that owns it sees every write and can keep this mirror
of the collection's sparse vectors: loaded from the collection at start, updated on each upsert
and delete, and scored the way Qdrant scores a `Modifier.IDF` sparse vector (the query's
weights times IDF = ln((n - df + 0.5) / (df + 0.5) + 1) over the points that have the vector,
dotted with the stored weights; points sharing no term are not hits). The tests hold it to
Qdrant's own query on the same points.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from scipy import sparse as sp  # type: ignore[import-untyped]  # scipy ships no stubs here

from raftloop_rag.domain import SparseVector


class SparseMirror:
    """The sparse vectors of one local collection, with each point's tenant.

    Written on the event loop; searched in a worker thread through `prepare`, which takes what
    the search reads on the loop, so a write during a search never changes what it reads.
    """

    def __init__(self) -> None:
        self._rows: dict[str, tuple[SparseVector, str]] = {}
        self._version = 0
        self._built: tuple[int, _Matrix] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def put(self, point_id: str, vector: SparseVector | None, tenant: str) -> None:
        """Record a point's vector (a point without terms has none, as in Qdrant)."""
        if vector is None or not vector.indices:
            self._rows.pop(point_id, None)
        else:
            self._rows[point_id] = (vector, tenant)
        self._version += 1

    def drop(self, point_ids: list[str]) -> None:
        """Forget deleted points."""
        for point_id in point_ids:
            self._rows.pop(point_id, None)
        self._version += 1

    def prepare(
        self, query: SparseVector, tenant: str, limit: int
    ) -> Callable[[], list[tuple[str, float]]]:
        """The tenant's best `limit` points by IDF-weighted dot product, best first.

        Call on the loop; run what it returns in a thread (it may rebuild the matrix).
        """
        version, built = self._version, self._built
        if built is not None and built[0] == version:
            matrix = built[1]
            return lambda: matrix.search(query, tenant, limit)
        rows = dict(self._rows)  # a snapshot: writes after this do not touch it

        def build_and_search() -> list[tuple[str, float]]:
            if not rows:
                return []
            fresh = _Matrix(rows)
            self._built = (version, fresh)  # rebuilt once after a write, then reused
            return fresh.search(query, tenant, limit)

        return build_and_search

    def search(self, query: SparseVector, tenant: str, limit: int) -> list[tuple[str, float]]:
        """`prepare` and run it here (tests, scripts)."""
        return self.prepare(query, tenant, limit)()


class _Matrix:
    """Points by terms, the terms' document frequencies, and each tenant's rows.

    Compressed by column: a question reads only its few terms' columns.
    """

    def __init__(self, rows: dict[str, tuple[SparseVector, str]]) -> None:
        self.ids = list(rows)
        self.columns: dict[int, int] = {}
        indptr, indices, data = [0], [], []
        for vector, _ in rows.values():
            for term, weight in zip(vector.indices, vector.values, strict=True):
                indices.append(self.columns.setdefault(term, len(self.columns)))
                data.append(weight)
            indptr.append(len(indices))
        shape = (len(self.ids), len(self.columns))
        matrix = sp.csr_matrix((data, indices, indptr), shape=shape, dtype=np.float64)
        matrix.sum_duplicates()
        self.frequency: npt.NDArray[np.int64] = np.bincount(
            matrix.indices, minlength=len(self.columns)
        )
        self.matrix = matrix.tocsc()
        tenants = np.asarray([tenant for _, tenant in rows.values()], dtype=object)
        self.tenant_rows = {t: tenants == t for t in set(tenants.tolist())}

    def search(self, query: SparseVector, tenant: str, limit: int) -> list[tuple[str, float]]:
        if not query.indices:
            return []
        mine = self.tenant_rows.get(tenant)
        known = [
            (self.columns[t], w)
            for t, w in zip(query.indices, query.values, strict=True)
            if t in self.columns
        ]
        if mine is None or not known:
            return []
        columns = np.asarray([c for c, _ in known])
        n = len(self.ids)
        df = self.frequency[columns]
        idf = np.log((n - df + 0.5) / (df + 0.5) + 1)
        weights = np.asarray([w for _, w in known]) * idf
        sub = self.matrix[:, columns]
        scores = np.asarray(sub @ weights).ravel()
        shares_a_term = np.bincount(sub.indices, minlength=n) > 0
        rows = np.flatnonzero(shares_a_term & mine)
        best = rows[np.argsort(-scores[rows], kind="stable")[:limit]]
        return [(self.ids[i], float(scores[i])) for i in best]
