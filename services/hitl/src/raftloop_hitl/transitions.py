"""Queue state transitions inside one open transaction, and the queue's value types."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import ColumnElement, Connection, Row, insert, or_, select, update

from raftloop_core.events import Event, FeedbackReceived, InteractionJudged, event_key
from raftloop_core.topics import Topic
from raftloop_hitl import domain
from raftloop_hitl.models import Inbox, Item, Outbox, PendingFeedback, Review, Skip
from raftloop_hitl.policies import latest_guideline_version, load_policy


class QueueError(Exception):
    """Base of queue errors; `status` is the HTTP status that fits."""

    status = 400


class NotFound(QueueError):
    """No such item in the caller's tenant."""

    status = 404


class LeaseLost(QueueError):
    """The caller does not hold the item's lease (expired and taken, or never claimed)."""

    status = 409


@dataclass(frozen=True)
class Claim:
    """A held lease on an item."""

    item_id: int
    token: str
    expires_at: float


@dataclass(frozen=True)
class ItemView:
    """An item with its decoded event, for pages and the API."""

    id: int
    tenant: str
    state: str
    reasons: list[str]
    priority: float
    required_reviews: int
    reviews_done: int
    lease_owner: str | None
    lease_token: str | None
    lease_expires: float | None
    created_at: float
    event: InteractionJudged
    feedback: dict[str, object] | None


@dataclass(frozen=True)
class Submitted:
    """The outcome of a submission; `duplicate` when the same lease token was seen before."""

    review_id: str
    item_id: int
    action: str
    duplicate: bool


def ingest_event(conn: Connection, event: InteractionJudged, now: float) -> str:
    """Apply one judged interaction inside an open transaction."""
    if not first_sight(conn, event, Topic.INTERACTION_JUDGED, now):
        return "duplicate"
    iid = str(event.interaction.interaction_id)
    item = conn.execute(select(Item).where(Item.interaction_id == iid)).first()
    pending = conn.execute(
        select(PendingFeedback.payload).where(PendingFeedback.interaction_id == iid)
    ).scalar()
    feedback = event.interaction.feedback
    if feedback is None and pending is not None and same_tenant(pending, event.tenant):
        feedback = FeedbackReceived.model_validate_json(pending).feedback
    policy = load_policy(conn, event.tenant)
    decision = domain.route(event, policy, feedback)
    values = {
        "revision": event.revision,
        "event_id": str(event.event_id),
        "payload": event.model_dump_json(),
        "question": event.interaction.question[:2000],
        "state": decision.state,
        "reasons": ",".join(decision.reasons),
        "priority": decision.priority,
        "required_reviews": decision.required_reviews,
        "flagged": bool(event.interaction.flags or event.judgement.flags),
        "feedback": feedback.model_dump_json() if feedback else None,
        "updated_at": now,
    }
    if item is None:
        conn.execute(
            insert(Item).values(tenant=event.tenant, interaction_id=iid, created_at=now, **values)
        )
        outcome: str = decision.state
    elif replaceable(item, event.revision):
        conn.execute(update(Item).where(Item.id == item.id).values(**values))
        outcome = f"revised:{decision.state}"
    else:
        return "stale"
    if decision.state == "auto_accepted":
        enqueue(conn, Topic.EXAMPLE_CURATED, domain.auto_example(event), now)
    return outcome


def same_tenant(pending: str, tenant: str) -> bool:
    """Whether parked feedback (a FeedbackReceived's JSON) was sent by `tenant`.

    Feedback waits by interaction id alone until its item arrives; only the item's own tenant's
    may join it (issue #17), whoever else names the id.
    """
    return FeedbackReceived.model_validate_json(pending).tenant == tenant


def first_sight(conn: Connection, event: Event, topic: Topic, now: float) -> bool:
    """Record an event id; False when it was applied before."""
    eid = str(event.event_id)
    if conn.execute(select(Inbox.event_id).where(Inbox.event_id == eid)).first():
        return False
    conn.execute(insert(Inbox).values(event_id=eid, topic=str(topic), received_at=now))
    return True


def replaceable(item: Row[Any], revision: int) -> bool:
    """Whether a newer revision may replace this item (nobody reviewed it yet)."""
    return (
        revision > item.revision and item.reviews_done == 0 and item.state in ("open", "not_routed")
    )


def lease_free(now: float) -> ColumnElement[bool]:
    """The condition that an item's lease is free at `now`."""
    return or_(Item.lease_expires.is_(None), Item.lease_expires <= now)


def enqueue(conn: Connection, topic: Topic, event: Event, now: float) -> None:
    """Add an event to the outbox (same transaction as the fact it tells)."""
    conn.execute(
        insert(Outbox).values(
            event_id=str(event.event_id),
            topic=str(topic),
            key=event_key(topic, event).decode(),
            payload=event.model_dump_json(),
            created_at=now,
        )
    )


def make_decision(
    event: InteractionJudged,
    reviewer: str,
    action: domain.Action,
    answer: str | None,
    reason: str | None,
    oracle: Sequence[str],
    conn: Connection,
) -> domain.Decision:
    """Validate a reviewer's input and turn it into a decision."""
    known = {c.chunk_id for c in event.interaction.retrieved}
    unknown = [c for c in oracle if c not in known]
    if unknown:
        raise QueueError(f"oracle chunk ids {unknown} are not among this item's retrieved chunks")
    answer = (answer or "").strip() or None
    reason = (reason or "").strip() or None
    if action == "corrected" and answer is None:
        raise QueueError("a correction needs the corrected answer")
    if action == "rejected" and reason is None:
        raise QueueError("a rejection needs a reason")
    final = event.interaction.answer if action == "approved" else answer
    return domain.Decision(
        review_id=uuid4(),
        reviewer=reviewer,
        action=action,
        final_answer=final if action in ("approved", "corrected") else None,
        reason=reason,
        oracle_chunk_ids=tuple(dict.fromkeys(oracle)),
        guideline_version=latest_guideline_version(conn, event.tenant),
    )


def record_review(
    conn: Connection, item: Row[Any], decision: domain.Decision, token: str, now: float
) -> None:
    """Store a review and advance the item (done when all its reviews are in)."""
    item_id, required = item.id, item.required_reviews
    conn.execute(
        insert(Review).values(
            id=str(decision.review_id),
            item_id=item_id,
            tenant=item.tenant,
            reviewer=decision.reviewer,
            action=decision.action,
            final_answer=decision.final_answer,
            reason=decision.reason,
            oracle_chunk_ids=json.dumps(list(decision.oracle_chunk_ids)),
            lease_token=token,
            guideline_version=decision.guideline_version,
            claimed_at=item.leased_at,
            created_at=now,
        )
    )
    done = item.reviews_done + 1
    conn.execute(
        update(Item)
        .where(Item.id == item_id)
        .values(
            reviews_done=done,
            state="done" if done >= required else "open",
            lease_owner=None,
            lease_token=None,
            lease_expires=None,
            updated_at=now,
        )
    )


def record_skip(conn: Connection, item: Row[Any], reviewer: str, now: float) -> None:
    """Remember that a reviewer passed on an item, and free it."""
    item_id = item.id
    if not conn.execute(
        select(Skip.item_id).where(Skip.item_id == item_id, Skip.reviewer == reviewer)
    ).first():
        conn.execute(insert(Skip).values(item_id=item_id, reviewer=reviewer, created_at=now))
    conn.execute(
        update(Item)
        .where(Item.id == item_id)
        .values(lease_owner=None, lease_token=None, lease_expires=None, updated_at=now)
    )


def decisions_of(conn: Connection, item_id: int) -> list[domain.Decision]:
    """Every decision an item got, oldest first."""
    rows = conn.execute(
        select(Review).where(Review.item_id == item_id).order_by(Review.created_at, Review.id)
    ).all()
    return [
        domain.Decision(
            review_id=UUID(r.id),
            reviewer=r.reviewer,
            action=r.action,
            final_answer=r.final_answer,
            reason=r.reason,
            oracle_chunk_ids=tuple(json.loads(r.oracle_chunk_ids)),
            guideline_version=r.guideline_version,
        )
        for r in rows
    ]


def view_of(row: Row[Any]) -> ItemView:
    """An item row as an ItemView."""
    g = row._mapping
    return ItemView(
        id=g["id"],
        tenant=g["tenant"],
        state=g["state"],
        reasons=[r for r in g["reasons"].split(",") if r],
        priority=g["priority"],
        required_reviews=g["required_reviews"],
        reviews_done=g["reviews_done"],
        lease_owner=g["lease_owner"],
        lease_token=g["lease_token"],
        lease_expires=g["lease_expires"],
        created_at=g["created_at"],
        event=InteractionJudged.model_validate_json(g["payload"]),
        feedback=json.loads(g["feedback"]) if g["feedback"] else None,
    )
