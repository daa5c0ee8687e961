"""The review queue in SQL: intake, atomic leased claims, reviews and the outbox."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from uuid import uuid4

from sqlalchemy import Connection, Engine, delete, exists, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from raftloop_core.events import FeedbackReceived, InteractionJudged
from raftloop_core.topics import Topic
from raftloop_hitl import domain
from raftloop_hitl.models import Item, Outbox, PendingFeedback, Review, Skip
from raftloop_hitl.policies import add_audit, load_policy
from raftloop_hitl.transitions import (
    Claim,
    ItemView,
    LeaseLost,
    NotFound,
    QueueError,
    Submitted,
    decisions_of,
    enqueue,
    first_sight,
    ingest_event,
    lease_free,
    make_decision,
    record_review,
    record_skip,
    same_tenant,
    view_of,
)

__all__ = ["Claim", "ItemView", "LeaseLost", "NotFound", "QueueError", "ReviewStore", "Submitted"]

log = logging.getLogger(__name__)


class ReviewStore:
    """All queue state transitions, each one a single transaction."""

    def __init__(
        self, engine: Engine, *, lease_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.engine = engine
        self.lease_s = lease_s
        self.clock = clock
        self.postgres = engine.dialect.name == "postgresql"

    # ------------------------------------------------------------ intake

    def ingest_judged(self, event: InteractionJudged) -> str:
        """Queue (or route past the queue) a judged interaction; idempotent per event id."""
        with self.engine.begin() as conn:
            return ingest_event(conn, event, self.clock())

    def ingest_many(self, events: Sequence[InteractionJudged]) -> list[str]:
        """Ingest a batch in one transaction (bulk loads and batched consumers)."""
        with self.engine.begin() as conn:
            return [ingest_event(conn, event, self.clock()) for event in events]

    def add_feedback(self, event: FeedbackReceived) -> str:
        """Attach user feedback to its item (or keep it until the item arrives).

        Only the item's own tenant's feedback joins it: feedback naming another tenant's
        interaction is `other_tenant`, and never pushes out the feedback already waiting.
        """
        iid = str(event.interaction_id)
        with self.engine.begin() as conn:
            now = self.clock()
            if not first_sight(conn, event, Topic.CHAT_FEEDBACK, now):
                return "duplicate"
            row = conn.execute(select(Item).where(Item.interaction_id == iid)).first()
            if row is not None and row.tenant != event.tenant:
                return "other_tenant"  # another tenant's interaction: never joined (#17)
            if row is None:
                waiting = conn.execute(
                    select(PendingFeedback.payload).where(PendingFeedback.interaction_id == iid)
                ).scalar()
                if waiting is not None and not same_tenant(waiting, event.tenant):
                    return "other_tenant"  # the first tenant's feedback keeps its place
                conn.execute(delete(PendingFeedback).where(PendingFeedback.interaction_id == iid))
                conn.execute(
                    insert(PendingFeedback).values(
                        interaction_id=iid, payload=event.model_dump_json()
                    )
                )
                return "pending"
            judged = InteractionJudged.model_validate_json(row.payload)
            route = domain.route(judged, load_policy(conn, event.tenant), event.feedback)
            values: dict[str, object] = {
                "feedback": event.feedback.model_dump_json(),
                "updated_at": now,
            }
            if row.state == "open":
                values |= {"priority": route.priority, "reasons": ",".join(route.reasons)}
            elif row.state == "not_routed" and route.state == "open":
                values |= {
                    "state": "open",
                    "priority": route.priority,
                    "reasons": ",".join(route.reasons),
                    "required_reviews": route.required_reviews,
                }
            conn.execute(update(Item).where(Item.id == row.id).values(**values))
            return "attached"

    # ------------------------------------------------------------ claims

    def claim(self, tenant: str, reviewer: str, *, exclude: int | None = None) -> Claim | None:
        """Lease the most valuable item this reviewer may take; None when there is none.

        Atomic: PostgreSQL locks the chosen row with `FOR UPDATE SKIP LOCKED`; SQLite runs the
        transaction under `BEGIN IMMEDIATE`, and the UPDATE re-checks that the lease is free.
        """
        with self.engine.begin() as conn:
            now = self.clock()  # read under the write lock, so a wait never shortens a lease
            held = conn.execute(
                select(Item.id, Item.lease_token, Item.lease_expires)
                .where(Item.tenant == tenant, Item.state == "open")
                .where(Item.lease_owner == reviewer, Item.lease_expires > now)
                .limit(1)
            ).first()
            if held is not None:
                return Claim(held.id, str(held.lease_token), float(held.lease_expires))
            query = (
                select(Item.id)
                .where(Item.tenant == tenant, Item.state == "open", lease_free(now))
                .where(~exists().where(Review.item_id == Item.id, Review.reviewer == reviewer))
                .where(~exists().where(Skip.item_id == Item.id, Skip.reviewer == reviewer))
                .where(Item.id != (exclude if exclude is not None else -1))
                .order_by(Item.priority.desc(), Item.id)
                .limit(1)
            )
            if self.postgres:
                query = query.with_for_update(skip_locked=True, of=Item)
            item_id = conn.execute(query).scalar()
            if item_id is None:
                return None
            token, expires = str(uuid4()), now + self.lease_s
            done = conn.execute(
                update(Item)
                .where(Item.id == item_id, lease_free(now))
                .values(
                    lease_owner=reviewer, lease_token=token, lease_expires=expires, leased_at=now
                )
            )
            if done.rowcount != 1:
                return None
            add_audit(conn, tenant, reviewer, "claim", f"item:{item_id}", "", now)
            return Claim(item_id, token, expires)

    def renew(self, tenant: str, item_id: int, reviewer: str, token: str) -> float | None:
        """Extend a lease its holder still has (a reviewer still working); new expiry or None."""
        with self.engine.begin() as conn:
            now = self.clock()
            expires = now + self.lease_s
            done = conn.execute(
                update(Item)
                .where(Item.id == item_id, Item.tenant == tenant, Item.state == "open")
                .where(Item.lease_owner == reviewer, Item.lease_token == token)
                .where(Item.lease_expires > now)
                .values(lease_expires=expires)
            )
            return expires if done.rowcount == 1 else None

    def release(self, tenant: str, item_id: int, reviewer: str, token: str) -> bool:
        """Give a lease back early (the reviewer left the item)."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(Item)
                .where(Item.id == item_id, Item.tenant == tenant)
                .where(Item.lease_owner == reviewer, Item.lease_token == token)
                .values(lease_owner=None, lease_token=None, lease_expires=None)
            )
            return done.rowcount == 1

    # ------------------------------------------------------------ reviews

    def submit(
        self,
        tenant: str,
        item_id: int,
        reviewer: str,
        token: str,
        action: domain.Action,
        *,
        answer: str | None = None,
        reason: str | None = None,
        oracle_chunk_ids: Sequence[str] = (),
    ) -> Submitted:
        """Record a decision, and queue its events in the same transaction (the outbox).

        Idempotent per lease token: a retried submission returns the first one's review.

        Raises:
            NotFound: no such item in `tenant`.
            LeaseLost: the reviewer does not hold the lease `token`.
            QueueError: the decision is incomplete (a correction without an answer, ...).
        """
        with self.engine.begin() as conn:
            now = self.clock()  # read under the write lock, so a wait never shortens a lease
            seen = conn.execute(select(Review).where(Review.lease_token == token)).first()
            if seen is not None:
                if seen.reviewer != reviewer or seen.item_id != item_id:
                    raise LeaseLost("this lease token belongs to another review")
                return Submitted(seen.id, item_id, seen.action, duplicate=True)
            query = select(Item).where(Item.id == item_id, Item.tenant == tenant)
            item = conn.execute(query.with_for_update() if self.postgres else query).first()
            if item is None:
                raise NotFound(f"no item {item_id}")
            if item.lease_owner != reviewer or item.lease_token != token:
                raise LeaseLost(
                    "you do not hold this item's lease (it expired and was claimed again, or was "
                    "never claimed); claim the next item"
                )
            event = InteractionJudged.model_validate_json(item.payload)
            decision = make_decision(
                event, reviewer, action, answer, reason, oracle_chunk_ids, conn
            )
            if action == "skipped":
                record_skip(conn, item, reviewer, now)
            else:
                record_review(conn, item, decision, token, now)
            enqueue(conn, Topic.REVIEW_COMPLETED, domain.review_event(event, decision), now)
            if action != "skipped" and item.reviews_done + 1 >= item.required_reviews:
                example = domain.curated_example(
                    event, decisions_of(conn, item.id), revision=item.revision
                )
                if example is not None:
                    enqueue(conn, Topic.EXAMPLE_CURATED, example, now)
            detail = json.dumps({"reason": reason, "oracle": list(oracle_chunk_ids)})
            add_audit(conn, tenant, reviewer, action, f"item:{item_id}", detail, now)
            return Submitted(str(decision.review_id), item_id, action, duplicate=False)

    # ------------------------------------------------------------ reads

    def item(self, tenant: str, item_id: int) -> ItemView | None:
        """One item of `tenant` (None for an unknown id or another tenant's)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(Item).where(Item.id == item_id, Item.tenant == tenant)
            ).first()
        return None if row is None else view_of(row)

    def queue(self, tenant: str, *, limit: int = 100) -> list[ItemView]:
        """Open items by priority."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Item)
                .where(Item.tenant == tenant, Item.state == "open")
                .order_by(Item.priority.desc(), Item.id)
                .limit(limit)
            ).all()
        return [view_of(r) for r in rows]

    def depth(self, tenant: str | None = None) -> dict[str, tuple[int, float]]:
        """Open items and the age of the oldest one, per tenant."""
        now = self.clock()
        query = select(Item.tenant, func.count(), func.min(Item.created_at)).where(
            Item.state == "open"
        )
        if tenant is not None:
            query = query.where(Item.tenant == tenant)
        with self.engine.connect() as conn:
            rows = conn.execute(query.group_by(Item.tenant)).all()
        return {r[0]: (int(r[1]), now - float(r[2])) for r in rows}

    def reviews_of(self, tenant: str, item_id: int) -> list[dict[str, object]]:
        """The reviews an item got so far."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Review)
                .where(Review.item_id == item_id, Review.tenant == tenant)
                .order_by(Review.created_at)
            ).all()
        return [dict(r._mapping) for r in rows]

    # ------------------------------------------------------------ outbox

    def pending(self, limit: int = 100) -> list[tuple[int, str, str, str, str]]:
        """Unsent outbox rows: (id, topic, key, payload, event_id), oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Outbox.id, Outbox.topic, Outbox.key, Outbox.payload, Outbox.event_id)
                .where(Outbox.sent_at.is_(None))
                .order_by(Outbox.id)
                .limit(limit)
            ).all()
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def mark_sent(self, ids: Sequence[int]) -> None:
        """Mark outbox rows as acknowledged by the broker."""
        if ids:
            with self.engine.begin() as conn:
                conn.execute(update(Outbox).where(Outbox.id.in_(ids)).values(sent_at=self.clock()))


class RelayLeadership:
    """Only one process publishes the outbox, so replicas never send a row twice.

    PostgreSQL: a session advisory lock held on a dedicated connection (released when the
    process dies). SQLite serves one machine, where one process owns the file: always leader.
    """

    KEY = 0x6869_746C  # "hitl"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None

    def acquire(self) -> bool:
        """Whether this process is (still, or now) the leader."""
        if self.engine.dialect.name != "postgresql":
            return True
        if self._conn is not None:
            try:
                self._conn.exec_driver_sql("SELECT 1")
                self._conn.commit()
                return True
            except SQLAlchemyError:  # the connection died, and the lock with it
                self._conn = None
        conn = self.engine.connect()
        got = conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({self.KEY})").scalar()
        conn.commit()
        if got:
            self._conn = conn
            return True
        conn.close()
        return False

    def release(self) -> None:
        """Step down (at shutdown)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({self.KEY})")
            conn.commit()
        except SQLAlchemyError as exc:  # closing the session drops the lock anyway
            log.warning("could not unlock the outbox relay lock", extra={"error": repr(exc)})
        finally:
            conn.close()
