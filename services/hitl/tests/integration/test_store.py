"""Queue transitions on SQLite and PostgreSQL: intake, revisions, decisions, overlap, stats."""

from __future__ import annotations

import json
import time
from uuid import UUID, uuid4

import pytest
from sqlalchemy import Engine

from raftloop_core import events as ev
from raftloop_hitl import policies
from raftloop_hitl.domain import Action, RoutingPolicy
from raftloop_hitl.store import LeaseLost, NotFound, QueueError, ReviewStore

from ..conftest import judged

pytestmark = pytest.mark.integration


def test_intake_is_idempotent_and_newer_revisions_replace_unreviewed_items(engine: Engine) -> None:
    store = ReviewStore(engine, lease_s=60)
    first = judged(p=0.3)
    assert store.ingest_judged(first) == "open"
    assert store.ingest_judged(first) == "duplicate"
    newer = first.model_copy(update={"event_id": uuid4(), "revision": 2})
    assert store.ingest_judged(newer) == "revised:open"
    older = first.model_copy(update={"event_id": uuid4(), "revision": 1})
    assert store.ingest_judged(older) == "stale"
    assert len(store.queue("default")) == 1


def test_feedback_before_the_item_is_kept_and_joined(engine: Engine) -> None:
    store = ReviewStore(engine, lease_s=60)
    iid = uuid4()
    feedback = ev.FeedbackReceived(
        interaction_id=iid, feedback=ev.Feedback(feedback_id=uuid4(), rating=-1, correction="5d")
    )
    assert store.add_feedback(feedback) == "pending"
    assert store.ingest_judged(judged(p=0.99, interaction_id=iid)) == "open"
    [item] = store.queue("default")
    assert {"negative_feedback", "user_correction"} <= set(item.reasons)
    assert item.feedback is not None
    assert item.feedback["correction"] == "5d"


def _feedback(tenant: str, iid: UUID, text: str) -> ev.FeedbackReceived:
    return ev.FeedbackReceived(
        tenant=tenant,
        interaction_id=iid,
        feedback=ev.Feedback(feedback_id=uuid4(), rating=-1, correction=text, comment=text),
    )


def test_early_feedback_of_another_tenant_never_joins_the_item(engine: Engine) -> None:
    # Issue #17, found by the two-tenant suite: feedback that reached hitl before its item was
    # kept by interaction id alone and joined whichever tenant's item then arrived.
    store = ReviewStore(engine, lease_s=60)
    iid = uuid4()
    assert store.add_feedback(_feedback("globex", iid, "globex text")) == "pending"
    assert store.ingest_judged(judged(p=0.3, tenant="acme", interaction_id=iid)) == "open"
    [item] = store.queue("acme")
    assert item.feedback is None
    # Once the item is there, another tenant's feedback neither joins it nor waits for it.
    assert store.add_feedback(_feedback("globex", iid, "globex again")) == "other_tenant"
    [item] = store.queue("acme")
    assert item.feedback is None


def test_another_tenants_early_feedback_never_pushes_out_the_owners(engine: Engine) -> None:
    store = ReviewStore(engine, lease_s=60)
    iid = uuid4()
    assert store.add_feedback(_feedback("acme", iid, "acme text")) == "pending"
    assert store.add_feedback(_feedback("globex", iid, "globex text")) == "other_tenant"
    assert store.ingest_judged(judged(p=0.3, tenant="acme", interaction_id=iid)) == "open"
    [item] = store.queue("acme")
    assert item.feedback is not None
    assert item.feedback["correction"] == "acme text"


def test_decisions_are_validated_and_leases_enforced(engine: Engine) -> None:
    store = ReviewStore(engine, lease_s=60)
    store.ingest_judged(judged(p=0.3))
    claim = store.claim("default", "alice")
    assert claim is not None
    with pytest.raises(QueueError, match="needs the corrected answer"):
        store.submit("default", claim.item_id, "alice", claim.token, "corrected")
    with pytest.raises(QueueError, match="needs a reason"):
        store.submit("default", claim.item_id, "alice", claim.token, "rejected")
    with pytest.raises(QueueError, match="not among"):
        store.submit(
            "default", claim.item_id, "alice", claim.token, "approved", oracle_chunk_ids=["nope"]
        )
    with pytest.raises(LeaseLost):
        store.submit("default", claim.item_id, "bob", claim.token, "approved")
    with pytest.raises(NotFound):
        store.submit("acme", claim.item_id, "alice", claim.token, "approved")
    assert store.claim("default", "bob") is None  # the only item is leased
    store.submit("default", claim.item_id, "alice", claim.token, "rejected", reason="unsafe")
    [review, *rest] = store.pending()
    assert json.loads(review[3])["action"] == "rejected"
    assert rest == []  # a rejection makes no example


def test_skip_releases_the_item_to_others_only(engine: Engine) -> None:
    store = ReviewStore(engine, lease_s=60)
    store.ingest_judged(judged(p=0.3))
    claim = store.claim("default", "alice")
    assert claim is not None
    store.submit("default", claim.item_id, "alice", claim.token, "skipped")
    assert store.claim("default", "alice") is None
    assert store.claim("default", "bob") is not None


def test_overlap_items_go_to_distinct_reviewers_then_agreement(engine: Engine) -> None:
    store = ReviewStore(engine, lease_s=60)
    with engine.begin() as conn:
        policy = RoutingPolicy(overlap_rate=1.0, overlap_reviewers=2)
        policies.save_policy(conn, "default", policy, "admin", time.time())
    for _ in range(4):
        store.ingest_judged(judged(p=0.3))
    reviews: tuple[tuple[str, Action], ...] = (("alice", "approved"), ("bob", "approved"))
    for reviewer, action in reviews:
        while (claim := store.claim("default", reviewer)) is not None:
            store.submit("default", claim.item_id, reviewer, claim.token, action)
    assert store.queue("default") == []
    curated = [row for row in store.pending() if row[1] == "dataset.example.curated.v1"]
    assert len(curated) == 4  # one per item, after its second review
    figures = policies.agreement(engine, "default")
    assert figures.pairs == [("alice", "bob", 4, 1.0)]
    assert figures.fleiss_items == 4
    assert figures.judge_items == 8
    assert figures.judge_accuracy == 0.0  # the judge said p=0.3, both reviewers approved
    stats = {s.reviewer: s for s in policies.reviewer_stats(engine, "default")}
    assert stats["alice"].total == 4
    assert stats["bob"].by_action == {"approved": 4}


def test_a_lease_is_renewed_while_held_and_returns_once_expired(engine: Engine) -> None:
    now = [1000.0]
    store = ReviewStore(engine, lease_s=10, clock=lambda: now[0])
    store.ingest_judged(judged(p=0.3))
    claim = store.claim("default", "alice")
    assert claim is not None
    now[0] = 1005.0
    assert store.renew("default", claim.item_id, "alice", claim.token) == 1015.0
    assert store.renew("default", claim.item_id, "bob", claim.token) is None
    now[0] = 1012.0
    assert store.claim("default", "bob") is None  # renewed: still alice's
    now[0] = 1016.0
    assert store.renew("default", claim.item_id, "alice", claim.token) is None
    taken = store.claim("default", "bob")
    assert taken is not None
    assert taken.item_id == claim.item_id
    with pytest.raises(LeaseLost):
        store.submit("default", claim.item_id, "alice", claim.token, "approved")


def test_leaving_an_item_claims_another_one(engine: Engine) -> None:
    store = ReviewStore(engine, lease_s=60)
    store.ingest_judged(judged(p=0.5))
    store.ingest_judged(judged(p=0.2))
    first = store.claim("default", "alice")
    assert first is not None
    assert store.release("default", first.item_id, "alice", first.token)
    second = store.claim("default", "alice", exclude=first.item_id)
    assert second is not None
    assert second.item_id != first.item_id
