"""50 concurrent claimers over 2,000 items, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pytest
from sqlalchemy import Engine, func, select

from raftloop_hitl.domain import RoutingPolicy
from raftloop_hitl.models import Item, Review
from raftloop_hitl.policies import save_policy
from raftloop_hitl.store import LeaseLost, ReviewStore

from ..conftest import judged

pytestmark = pytest.mark.integration

ITEMS, CLAIMERS, KILLED, LEASE_S = 2_000, 50, 3, 2.0


@dataclass
class Held:
    item_id: int
    token: str
    reviewer: str
    claimed_at: float
    expires: float


def load(store: ReviewStore, engine: Engine) -> None:
    with engine.begin() as conn:
        policy = RoutingPolicy(review_below=1.0, overlap_rate=0.1, overlap_reviewers=2)
        save_policy(conn, "default", policy, "test", time.time())
    events = [judged(p=0.3) for _ in range(ITEMS)]
    for start in range(0, ITEMS, 500):
        store.ingest_many(events[start : start + 500])


@dataclass
class Claimers:
    """Reviewers that claim and approve until no item is open, and what they ran into."""

    store: ReviewStore
    engine: Engine
    lock: threading.Lock = field(default_factory=threading.Lock)
    holders: dict[int, Held] = field(default_factory=dict)
    overlaps: list[tuple[Held, Held]] = field(default_factory=list)
    killed_claims: list[Held] = field(default_factory=list)
    lost_in_time: list[Held] = field(default_factory=list)
    claims: int = 0
    errors: list[BaseException] = field(default_factory=list)

    def reviewer(self, name: str, killed: bool) -> None:
        """One reviewer's thread; a killed one stops while it holds its first item."""
        try:
            self._review(name, killed)
        except BaseException as exc:  # noqa: BLE001  # surfaced by the main thread
            self.errors.append(exc)

    def _review(self, name: str, killed: bool) -> None:
        while True:
            got = self.store.claim("default", name)
            if got is None:
                if self._open_left() == 0:
                    return
                time.sleep(0.05)
                continue
            held = Held(got.item_id, got.token, name, got.expires_at - LEASE_S, got.expires_at)
            self._hold(held)
            if killed:
                self.killed_claims.append(held)
                return  # a killed reviewer never submits nor releases
            with self.lock:
                self.holders.pop(got.item_id, None)
            try:
                self.store.submit("default", got.item_id, name, got.token, "approved")
            except LeaseLost:
                if time.time() < held.expires:
                    self.lost_in_time.append(held)

    def _hold(self, held: Held) -> None:
        with self.lock:
            self.claims += 1
            before = self.holders.get(held.item_id)
            # The previous holder still had an unexpired lease and had not submitted.
            if before is not None and before.expires > held.claimed_at:
                self.overlaps.append((before, held))
            self.holders[held.item_id] = held

    def _open_left(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(Item).where(Item.state == "open")
            ).scalar_one()


def test_fifty_claimers_never_share_an_item(engine: Engine) -> None:
    store = ReviewStore(engine, lease_s=LEASE_S)
    load(store, engine)
    claimers = Claimers(store, engine)
    threads = [
        threading.Thread(target=claimers.reviewer, args=(f"r{i:02d}", i < KILLED))
        for i in range(CLAIMERS)
    ]
    # The reviewers that get killed claim first, so that each surely holds an item.
    for t in threads[:KILLED]:
        t.start()
        t.join(timeout=60)
    for t in threads[KILLED:]:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not claimers.errors, claimers.errors[:3]
    assert not any(t.is_alive() for t in threads)
    assert claimers.overlaps == []
    assert claimers.lost_in_time == []

    with engine.connect() as conn:
        items = {r.id: r for r in conn.execute(select(Item)).all()}
        reviews = conn.execute(select(Review.item_id, Review.reviewer, Review.created_at)).all()
    counts = Counter(r.item_id for r in reviews)
    assert len(items) == ITEMS
    assert all(item.state == "done" for item in items.values())
    assert all(counts[i] == item.required_reviews for i, item in items.items())
    overlap_items = sum(1 for item in items.values() if item.required_reviews == 2)
    assert 100 < overlap_items < 300  # about 10 % of the items go to two reviewers
    by_item = defaultdict(list)
    for r in reviews:
        by_item[r.item_id].append(r)
    assert len(claimers.killed_claims) == KILLED
    for held in claimers.killed_claims:
        # The killed reviewer's item came back after its lease and someone else reviewed it.
        taken = [r for r in by_item[held.item_id] if r.reviewer != held.reviewer]
        assert taken
        assert all(r.reviewer != held.reviewer for r in by_item[held.item_id])
        assert min(r.created_at for r in taken) >= held.expires
