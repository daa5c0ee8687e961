"""Review-queue claims: 50 concurrent claimers, atomic leased claims vs a naive read-then-write.

Our path is `ReviewStore.claim` (BEGIN IMMEDIATE + conditional UPDATE on SQLite, FOR UPDATE
SKIP LOCKED on PostgreSQL) followed by an approve. The baseline claims the same way a first
version often does: SELECT the top open item, then UPDATE it by id with no lease check, each
in its own autocommit statement; it is faster per claim but hands items to two reviewers.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections import Counter
from typing import Any

from sqlalchemy import select, update

TITLE = "HITL: claim+review throughput with 50 claimers, and double claims vs a naive claim"
ITEMS = 1_000
CLAIMERS = 50
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _events(n: int) -> list[Any]:
    from raftloop_core import events as ev
    from raftloop_core.testing import sample_events
    from raftloop_core.topics import Topic

    base = sample_events()[Topic.INTERACTION_JUDGED]
    assert isinstance(base, ev.InteractionJudged)
    out = []
    for _ in range(n):
        interaction = base.interaction.model_copy(
            update={"interaction_id": uuid.uuid4(), "flags": [], "feedback": None}
        )
        judgement = base.judgement.model_copy(update={"approval_probability": 0.3})
        out.append(
            ev.InteractionJudged(
                interaction=interaction, judgement=judgement, ingested_event_id=uuid.uuid4()
            )
        )
    return out


def _run_threads(work: Any) -> float:
    threads = [threading.Thread(target=work, args=(f"r{i}",)) for i in range(CLAIMERS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def _ours(engine: Any) -> tuple[float, int]:
    from raftloop_hitl.store import ReviewStore

    store = ReviewStore(engine, lease_s=60)
    store.ingest_many(_events(ITEMS))
    done = Counter[str]()

    def work(name: str) -> None:
        while (claim := store.claim("default", name)) is not None:
            store.submit("default", claim.item_id, name, claim.token, "approved")
            done[name] += 1

    elapsed = _run_threads(work)
    return sum(done.values()) / elapsed, sum(done.values())


def _naive(engine: Any) -> tuple[float, int]:
    from raftloop_hitl.models import Item
    from raftloop_hitl.store import ReviewStore

    ReviewStore(engine, lease_s=60).ingest_many(_events(ITEMS))
    holders: dict[int, set[str]] = {}
    lock = threading.Lock()
    claims = Counter[str]()

    def work(name: str) -> None:
        while True:
            with engine.connect() as conn:
                item_id = conn.execute(
                    select(Item.id)
                    .where(Item.state == "open", Item.lease_owner.is_(None))
                    .order_by(Item.priority.desc(), Item.id)
                    .limit(1)
                ).scalar()
                conn.commit()
            if item_id is None:
                return
            with engine.begin() as conn:
                conn.execute(update(Item).where(Item.id == item_id).values(lease_owner=name))
            with lock:
                holders.setdefault(item_id, set()).add(name)
            with engine.begin() as conn:
                conn.execute(update(Item).where(Item.id == item_id).values(state="done"))
            claims[name] += 1

    elapsed = _run_threads(work)
    doubles = sum(1 for names in holders.values() if len(names) > 1)
    return sum(claims.values()) / elapsed, doubles


def _engines() -> list[tuple[str, Any, Any]]:
    import psycopg

    from raftloop_hitl.db import make_engine, migrate

    out = []
    for kind in ("sqlite", "postgresql"):
        if kind == "sqlite":
            url = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
            cleanup = None
        else:
            name = f"hitl_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(PG.replace("+psycopg", ""), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            url = PG.rsplit("/", 1)[0] + f"/{name}"
            cleanup = name
        engine = make_engine(url)
        migrate(engine)
        out.append((kind, engine, cleanup))
    return out


def _drop(name: str) -> None:
    import psycopg

    with psycopg.connect(PG.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run() -> dict[str, float | int | str]:
    """Claims per second (claim + approve) and double claims, ours vs naive, on both stores."""
    figures: dict[str, float | int | str] = {
        "target": "0 double claims; >= 100 claim+review/s with 50 claimers on 2 cores",
        "items": ITEMS,
        "claimers": CLAIMERS,
    }
    for kind, engine, cleanup in _engines():
        rate, reviewed = _ours(engine)
        figures[f"{kind}_ours_reviews_per_s"] = round(rate, 1)
        figures[f"{kind}_ours_reviewed"] = reviewed
        engine.dispose()
        if cleanup:
            _drop(cleanup)
    for kind, engine, cleanup in _engines():
        rate, doubles = _naive(engine)
        figures[f"{kind}_naive_claims_per_s"] = round(rate, 1)
        figures[f"{kind}_naive_double_claimed_items"] = doubles
        engine.dispose()
        if cleanup:
            _drop(cleanup)
    return figures


if __name__ == "__main__":
    print(run())
