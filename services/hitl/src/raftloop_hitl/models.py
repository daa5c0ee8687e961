"""SQLAlchemy 2 models of the review queue. Migrations in `migrations/` create the same schema."""

from __future__ import annotations

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of every hitl table."""


class User(Base):
    """A reviewer or admin account of one tenant."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    tenant: Mapped[str] = mapped_column(String(63))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[float] = mapped_column(Float)
    session_epoch: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0", doc="Bumped to sign the user out everywhere."
    )


class SignInFailures(Base):
    """Recent failed sign-ins of one client address (`a:`) or one username (`u:`)."""

    __tablename__ = "signin_failures"
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_at: Mapped[float] = mapped_column(Float, doc="When the last attempt was admitted.")
    __table_args__ = (Index("ix_signin_failures_last_at", "last_at"),)


class Item(Base):
    """One interaction in the review queue; the lease columns make claims atomic."""

    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    interaction_id: Mapped[str] = mapped_column(String(36), unique=True)
    revision: Mapped[int] = mapped_column(Integer)
    event_id: Mapped[str] = mapped_column(String(36))
    payload: Mapped[str] = mapped_column(Text, doc="The InteractionJudged event as JSON.")
    question: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), doc="open, done, not_routed, auto_accepted")
    reasons: Mapped[str] = mapped_column(Text, default="")
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    required_reviews: Mapped[int] = mapped_column(Integer, default=1)
    reviews_done: Mapped[int] = mapped_column(Integer, default=0)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    feedback: Mapped[str | None] = mapped_column(Text, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(36), nullable=True)
    lease_expires: Mapped[float | None] = mapped_column(Float, nullable=True)
    leased_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (Index("ix_items_queue", "tenant", "state", "priority"),)


class Review(Base):
    """A reviewer's decision on an item; the lease token makes a resubmission idempotent."""

    __tablename__ = "reviews"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    tenant: Mapped[str] = mapped_column(String(63))
    reviewer: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(16))
    final_answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    oracle_chunk_ids: Mapped[str] = mapped_column(Text, default="[]")
    lease_token: Mapped[str] = mapped_column(String(36), unique=True)
    guideline_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    claimed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (
        UniqueConstraint("item_id", "reviewer", name="uq_reviews_item_reviewer"),
        Index("ix_reviews_tenant_reviewer", "tenant", "reviewer"),
    )


class Skip(Base):
    """A reviewer passed on an item; it is not offered to them again."""

    __tablename__ = "skips"
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)
    reviewer: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)


class Outbox(Base):
    """Events waiting to be published; written in the same transaction as the fact they tell."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(255))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    sent_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (Index("ix_outbox_pending", "sent_at", "id"),)


class Inbox(Base):
    """Ids of consumed events, so that a redelivered event is applied once."""

    __tablename__ = "inbox"
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    topic: Mapped[str] = mapped_column(String(255))
    received_at: Mapped[float] = mapped_column(Float)


class PendingFeedback(Base):
    """Feedback that arrived before its interaction was judged."""

    __tablename__ = "pending_feedback"
    interaction_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    payload: Mapped[str] = mapped_column(Text)


class Policy(Base):
    """A tenant's routing thresholds (JSON of domain.RoutingPolicy)."""

    __tablename__ = "policies"
    tenant: Mapped[str] = mapped_column(String(63), primary_key=True)
    payload: Mapped[str] = mapped_column(Text)
    updated_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[float] = mapped_column(Float)


class Guideline(Base):
    """One version of a tenant's review guidelines."""

    __tablename__ = "guidelines"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63))
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("tenant", "version", name="uq_guidelines_version"),)


class Audit(Base):
    """Every action anybody took, for the audit log."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float)
    tenant: Mapped[str] = mapped_column(String(63))
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    __table_args__ = (Index("ix_audit_tenant_at", "tenant", "at"),)


class TimelineEvent(Base):
    """Training runs and adapter promotions/rollbacks, for the ops timeline."""

    __tablename__ = "timeline"
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[float] = mapped_column(Float)
    summary: Mapped[str] = mapped_column(Text)
    adapter_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tenant: Mapped[str] = mapped_column(String(64), server_default="default")
    __table_args__ = (Index("ix_timeline_tenant_at", "tenant", "at"),)
