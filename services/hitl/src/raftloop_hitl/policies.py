"""Tenant-level records: routing policy, guidelines, audit log, timeline, stats, agreement."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select

from raftloop_hitl import domain
from raftloop_hitl.models import Audit, Guideline, Item, Policy, Review, TimelineEvent

DEFAULT_GUIDELINES = """\
1. Approve only answers that are correct, complete and grounded in the retrieved chunks.
2. Mark the chunk that answers the question as the oracle (there may be none).
3. Correct an answer when it is close: fix it so you would be happy to train on it.
4. Reject answers that are unsafe, leak data, follow injected instructions or are off-topic,
   and say why.
5. Skip when you cannot judge the item (missing context, unfamiliar domain).
"""


def load_policy(conn: Connection, tenant: str) -> domain.RoutingPolicy:
    """The tenant's routing policy (defaults until an admin saves one)."""
    raw = conn.execute(select(Policy.payload).where(Policy.tenant == tenant)).scalar()
    return domain.RoutingPolicy() if raw is None else domain.RoutingPolicy.model_validate_json(raw)


def save_policy(
    conn: Connection, tenant: str, policy: domain.RoutingPolicy, actor: str, now: float
) -> None:
    """Store a tenant's routing policy and audit the change."""
    conn.execute(delete(Policy).where(Policy.tenant == tenant))
    conn.execute(
        insert(Policy).values(
            tenant=tenant, payload=policy.model_dump_json(), updated_by=actor, updated_at=now
        )
    )
    add_audit(conn, tenant, actor, "policy.update", "routing", policy.model_dump_json(), now)


def add_audit(
    conn: Connection, tenant: str, actor: str, action: str, target: str, detail: str, now: float
) -> None:
    """Append one line to the audit log."""
    conn.execute(
        insert(Audit).values(
            at=now, tenant=tenant, actor=actor, action=action, target=target, detail=detail[:4000]
        )
    )


def audit_log(engine: Engine, tenant: str, *, limit: int = 200) -> list[dict[str, Any]]:
    """The newest audit lines of a tenant."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Audit).where(Audit.tenant == tenant).order_by(Audit.id.desc()).limit(limit)
        ).all()
    return [dict(r._mapping) for r in rows]


def latest_guideline_version(conn: Connection, tenant: str) -> int | None:
    """The current guideline version of a tenant."""
    return conn.execute(
        select(func.max(Guideline.version)).where(Guideline.tenant == tenant)
    ).scalar()


def guidelines(engine: Engine, tenant: str) -> list[dict[str, Any]]:
    """Every guideline version of a tenant, newest first (a default v1 if there is none)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Guideline).where(Guideline.tenant == tenant).order_by(Guideline.version.desc())
        ).all()
    if rows:
        return [dict(r._mapping) for r in rows]
    return [{"version": 0, "text": DEFAULT_GUIDELINES, "author": "raftloop", "created_at": 0.0}]


def add_guideline(engine: Engine, tenant: str, text: str, author: str, now: float) -> int:
    """Publish a new guideline version; returns its number."""
    with engine.begin() as conn:
        version = (latest_guideline_version(conn, tenant) or 0) + 1
        conn.execute(
            insert(Guideline).values(
                tenant=tenant, version=version, text=text, author=author, created_at=now
            )
        )
        add_audit(conn, tenant, author, "guidelines.publish", f"v{version}", "", now)
    return version


def add_timeline(
    engine: Engine,
    *,
    event_id: str,
    tenant: str,
    kind: str,
    at: float,
    summary: str,
    adapter_id: str | None,
    revision: int | None,
) -> bool:
    """Record a tenant's training or adapter event once; False when it was already there."""
    with engine.begin() as conn:
        seen = conn.execute(
            select(TimelineEvent.event_id).where(TimelineEvent.event_id == event_id)
        ).first()
        if seen:
            return False
        conn.execute(
            insert(TimelineEvent).values(
                event_id=event_id,
                tenant=tenant,
                kind=kind,
                at=at,
                summary=summary,
                adapter_id=adapter_id,
                revision=revision,
            )
        )
    return True


def timeline(engine: Engine, tenant: str | None = None, *, limit: int = 50) -> list[dict[str, Any]]:
    """A tenant's training runs and adapter changes (every tenant's with None), newest first."""
    query = select(TimelineEvent).order_by(TimelineEvent.at.desc()).limit(limit)
    if tenant is not None:
        query = query.where(TimelineEvent.tenant == tenant)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [dict(r._mapping) for r in rows]


def serving_adapter(engine: Engine, tenant: str) -> dict[str, Any] | None:
    """The adapter the tenant's latest promotion or rollback (highest revision) says serves."""
    with engine.connect() as conn:
        row = conn.execute(
            select(TimelineEvent)
            .where(
                TimelineEvent.kind.in_(("promoted", "rolled_back")),
                TimelineEvent.tenant == tenant,
            )
            .order_by(TimelineEvent.revision.desc(), TimelineEvent.at.desc())
            .limit(1)
        ).first()
    return None if row is None else dict(row._mapping)


@dataclass(frozen=True)
class ReviewerStats:
    """One reviewer's numbers."""

    reviewer: str
    total: int
    by_action: dict[str, int]
    median_seconds: float | None


def reviewer_stats(engine: Engine, tenant: str) -> list[ReviewerStats]:
    """Reviews per reviewer, by action, with the median time from claim to decision."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Review.reviewer, Review.action, Review.claimed_at, Review.created_at).where(
                Review.tenant == tenant
            )
        ).all()
    actions: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    times: dict[str, list[float]] = defaultdict(list)
    for reviewer, action, claimed, created in rows:
        actions[reviewer][action] += 1
        if claimed is not None:
            times[reviewer].append(created - claimed)
    return [
        ReviewerStats(
            reviewer=r,
            total=sum(actions[r].values()),
            by_action=dict(actions[r]),
            median_seconds=statistics.median(times[r]) if times[r] else None,
        )
        for r in sorted(actions)
    ]


@dataclass(frozen=True)
class Agreement:
    """Agreement figures of a tenant."""

    pairs: list[tuple[str, str, int, float | None]]
    fleiss: float | None
    fleiss_items: int
    judge_kappa: float | None
    judge_accuracy: float | None
    judge_items: int


def agreement(engine: Engine, tenant: str) -> Agreement:
    """Cohen's kappa per reviewer pair, Fleiss' kappa on overlap items, judge vs reviewers."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Review.item_id, Review.reviewer, Review.action, Item.payload)
            .join(Item, Item.id == Review.item_id)
            .where(Review.tenant == tenant)
        ).all()
    labels: dict[int, dict[str, str]] = defaultdict(dict)
    judge: dict[int, float] = {}
    for item_id, reviewer, action, payload in rows:
        labels[item_id][reviewer] = action
        if item_id not in judge:
            p = json.loads(payload)["judgement"].get("approval_probability")
            if p is not None:
                judge[item_id] = float(p)
    multi = [list(by.values()) for by in labels.values() if len(by) >= 2]
    sizes = defaultdict(list)
    for ratings in multi:
        sizes[len(ratings)].append(ratings)
    biggest = max(sizes.values(), key=len, default=[])
    human, machine = [], []
    for item_id, by in labels.items():
        if item_id in judge:
            for action in by.values():
                human.append(domain.accept_label(action))
                machine.append("accept" if judge[item_id] >= 0.5 else "reject")
    hits = sum(h == m for h, m in zip(human, machine, strict=True))
    return Agreement(
        pairs=domain.pairwise_kappas(labels),
        fleiss=domain.fleiss_kappa(biggest),
        fleiss_items=len(biggest),
        judge_kappa=domain.cohen_kappa(human, machine),
        judge_accuracy=hits / len(human) if human else None,
        judge_items=len(human),
    )
