"""Each tenant's approved answers in memory: a unit float32 matrix, kept in step with the store.

The store is the source of truth (durable across restarts, shared by replicas that share a
database). The index caches each tenant's newest `limit` references: it loads them on the
tenant's first use, adds what this replica stores, and re-reads the store when another writer
has added rows. Tenants never share a matrix: each has its own `TenantReferences` and lock.

Why a row count is the freshness check: every replica is in the same `<group>-references` and
`<group>-calibration` consumer groups, so a reference stored by one replica never reaches the
others' handlers, yet on a shared database it is theirs to match against. Reference rows are
only ever added, so a tenant's `count(*)` equals what this replica has accounted for (rows
loaded plus its own successful inserts) exactly when nobody else wrote. Before each batch the
index compares one count per tenant; when it moved, it re-reads the newest ids (no embeddings)
and fetches only the rows it lacks. Row times cannot serve: replicas' clocks and commit order
differ, so a row can land with an older time than one already seen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from raftloop_judge.domain import Reference, ReferenceStore


@dataclass(frozen=True)
class Hit:
    """The approved answer whose question is nearest to a question, and the cosine similarity."""

    reference_id: str
    answer: str
    similarity: float


def _unit(vec: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


def _timestamp(at: datetime | None) -> float:
    if at is None:
        return datetime.now(UTC).timestamp()
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


class TenantReferences:
    """One tenant's newest `limit` references: unit question vectors, ids, answers, times.

    No I/O and no locking (`ReferenceIndex` does both). Rows live in slots; when full, a newer
    reference takes the slot of the oldest, so the matrix is never copied on an add.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._vecs = np.zeros((0, 0), dtype=np.float32)
        self._at = np.zeros(0, dtype=np.float64)
        self._ids: list[str] = []
        self._answers: list[str] = []
        self._slot: dict[str, int] = {}
        self._answer_vecs: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, reference_id: object) -> bool:
        return reference_id in self._slot

    def ids(self) -> set[str]:
        """The ids held."""
        return set(self._slot)

    def add(self, ref: Reference) -> bool:
        """Keep `ref` if it is among the newest `limit`; False if held already or too old."""
        vec = _unit(np.asarray(ref.embedding, dtype=np.float32))
        return self._put(ref.reference_id, ref.answer, vec, _timestamp(ref.at))

    def _put(self, ref_id: str, answer: str, vec: np.ndarray, at: float) -> bool:
        if ref_id in self._slot:
            return False
        n = len(self._ids)
        if n and vec.shape[0] != self._vecs.shape[1]:
            raise ValueError(
                f"reference {ref_id} has a {vec.shape[0]}-dimensional embedding but the "
                f"tenant's others have {self._vecs.shape[1]}: the embedding model changed "
                "(JUDGE_EMBEDDING_MODEL); re-embed or delete the old judge_references rows"
            )
        if n < self.limit:
            slot = n
            self._reserve(n + 1, vec.shape[0])
            self._ids.append(ref_id)
            self._answers.append(answer)
        else:
            slot = int(np.argmin(self._at[:n]))
            if at < self._at[slot]:
                return False
            del self._slot[self._ids[slot]]
            self._answer_vecs.pop(self._ids[slot], None)
            self._ids[slot], self._answers[slot] = ref_id, answer
        self._vecs[slot] = vec
        self._at[slot] = at
        self._slot[ref_id] = slot
        return True

    def _reserve(self, rows: int, dim: int) -> None:
        capacity = self._vecs.shape[0]
        if rows <= capacity:
            return
        grown = min(self.limit, max(rows, 2 * capacity, 64))
        vecs = np.zeros((grown, dim), dtype=np.float32)
        at = np.zeros(grown, dtype=np.float64)
        if capacity:
            vecs[:capacity] = self._vecs
            at[:capacity] = self._at
        self._vecs, self._at = vecs, at

    def nearest(self, questions: np.ndarray) -> list[Hit | None]:
        """For each row of `questions` (unit vectors), the reference with the nearest question.

        Equal similarities go to the newest reference, as when the store's newest-first rows
        were scanned in order.
        """
        n = len(self._ids)
        if n == 0:
            return [None] * len(questions)
        sims = np.asarray(questions, dtype=np.float32) @ self._vecs[:n].T
        hits: list[Hit | None] = []
        for row in sims:
            best = int(np.argmax(row))
            ties = np.flatnonzero(row == row[best])
            if len(ties) > 1:
                best = int(ties[np.argmax(self._at[ties])])
            hits.append(Hit(self._ids[best], self._answers[best], float(row[best])))
        return hits

    def answer_vector(self, reference_id: str) -> np.ndarray | None:
        """The embedding of a held reference's answer, once computed."""
        return self._answer_vecs.get(reference_id)

    def keep_answer_vector(self, reference_id: str, vec: np.ndarray) -> None:
        """Remember a held reference's answer embedding (dropped with the reference)."""
        if reference_id in self._slot:
            self._answer_vecs[reference_id] = vec

    def rebuilt(self, newest_ids: Sequence[str], fetched: Sequence[Reference]) -> TenantReferences:
        """A copy holding exactly `newest_ids`: rows held here are reused, the rest `fetched`."""
        out = TenantReferences(self.limit)
        by_id = {r.reference_id: r for r in fetched}
        for ref_id in reversed(newest_ids):  # oldest first, so that no add evicts another
            slot = self._slot.get(ref_id)
            if slot is not None:
                out._put(ref_id, self._answers[slot], self._vecs[slot], float(self._at[slot]))
                cached = self._answer_vecs.get(ref_id)
                if cached is not None:
                    out._answer_vecs[ref_id] = cached
            elif ref_id in by_id:
                out.add(by_id[ref_id])
        return out


@dataclass
class _Synced:
    refs: TenantReferences
    stored: int  # the tenant's rows in the store that `refs` was chosen from


def _insert_all(store: ReferenceStore, refs: Sequence[Reference]) -> list[bool]:
    return [store.add_reference(r) for r in refs]


class ReferenceIndex:
    """Every tenant's `TenantReferences`, loaded from the store on first use, kept in step."""

    def __init__(self, store: ReferenceStore, limit: int = 5000) -> None:
        self.store = store
        self.limit = limit
        self._tenants: dict[str, _Synced] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, tenant: str) -> asyncio.Lock:
        return self._locks.setdefault(tenant, asyncio.Lock())

    async def _current(self, tenant: str) -> TenantReferences:
        """The tenant's references as the store has them now (call with the tenant's lock)."""
        synced = self._tenants.get(tenant)
        if synced is not None:
            count = await asyncio.to_thread(self.store.reference_count, tenant)
            if count == synced.stored:
                return synced.refs
        ids, total = await asyncio.to_thread(self.store.newest_reference_ids, tenant, self.limit)
        old = synced.refs if synced is not None else TenantReferences(self.limit)
        missing = [i for i in ids if i not in old]
        fetched = await asyncio.to_thread(self.store.references_by_id, tenant, missing)
        refs = await asyncio.to_thread(old.rebuilt, ids, fetched)
        self._tenants[tenant] = _Synced(refs, total)
        return refs

    async def refresh(self, tenant: str) -> TenantReferences:
        """The tenant's references, loaded on first use and re-read when the store moved."""
        async with self._lock(tenant):
            return await self._current(tenant)

    async def nearest(self, tenant: str, questions: np.ndarray) -> list[Hit | None]:
        """The tenant's nearest reference to each question, from an up-to-date index."""
        async with self._lock(tenant):
            refs = await self._current(tenant)
            return await asyncio.to_thread(refs.nearest, questions)

    async def add(self, refs: Sequence[Reference]) -> list[bool]:
        """Store each reference once; a loaded tenant's index takes the ones newly stored."""
        done: dict[int, bool] = {}
        tenants = dict.fromkeys(r.tenant for r in refs)
        for tenant in tenants:
            mine = [(i, r) for i, r in enumerate(refs) if r.tenant == tenant]
            async with self._lock(tenant):
                inserted = await asyncio.to_thread(_insert_all, self.store, [r for _, r in mine])
                synced = self._tenants.get(tenant)
                for (i, ref), ok in zip(mine, inserted, strict=True):
                    done[i] = ok
                    if ok and synced is not None:
                        synced.refs.add(ref)
                        synced.stored += 1
        return [done[i] for i in range(len(refs))]

    def answer_vector(self, tenant: str, reference_id: str) -> np.ndarray | None:
        """A reference's cached answer embedding."""
        synced = self._tenants.get(tenant)
        return synced.refs.answer_vector(reference_id) if synced else None

    def keep_answer_vector(self, tenant: str, reference_id: str, vec: np.ndarray) -> None:
        """Cache a reference's answer embedding in its tenant's index."""
        synced = self._tenants.get(tenant)
        if synced is not None:
            synced.refs.keep_answer_vector(reference_id, vec)
