"""I/O behind the domain's ports: the SQL state store (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)

from raftloop_core import db
from raftloop_core.events import Feedback, Interaction
from raftloop_ingest.domain import BatchState, PendingFeedback, StoredInteraction

MIGRATIONS = Path(__file__).parent / "migrations"
metadata = MetaData()

interactions = Table(
    "ingest_interactions",
    metadata,
    Column("interaction_id", String(36), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("source_event_id", String(36), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("payload", Text, nullable=False),
    Column("mapping", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
question_hashes = Table(
    "ingest_question_hashes",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("question_hash", String(64), primary_key=True),
    Column("interaction_id", String(36), nullable=False),
)
pending_feedback = Table(
    "ingest_pending_feedback",
    metadata,
    Column("interaction_id", String(36), primary_key=True),
    Column("payload", Text, nullable=False),
    Column("mapping", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    # The sender's tenant, checked against the interaction's when it arrives (issue #17).
    Column("tenant", String(64), nullable=True),
)
feedback_seen = Table(
    "ingest_feedback_seen",
    metadata,
    Column("event_id", String(36), primary_key=True),
)
documents = Table(
    "ingest_documents",
    metadata,
    Column("document_id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("source", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def make_engine(url: str) -> Engine:
    """Ingest's engine (`raftloop_core.db`), its schema brought up to date."""
    engine = db.make_engine(url)
    db.migrate(engine, MIGRATIONS)
    return engine


def _now() -> datetime:
    return datetime.now(UTC)


class SqlIngestStore:
    """`IngestStore` on SQLAlchemy Core."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, interaction_id: UUID) -> StoredInteraction | None:
        """The interaction as last published, if any."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(interactions).where(interactions.c.interaction_id == str(interaction_id))
            ).first()
        if row is None:
            return None
        return StoredInteraction(
            interaction=Interaction.model_validate_json(row.payload),
            tenant=row.tenant,
            source_event_id=UUID(row.source_event_id),
            revision=row.revision,
            mapping=json.loads(row.mapping),
        )

    def pending(self, interaction_id: UUID) -> PendingFeedback | None:
        """Feedback waiting for its interaction."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(pending_feedback).where(
                    pending_feedback.c.interaction_id == str(interaction_id)
                )
            ).first()
        if row is None:
            return None
        return PendingFeedback(
            interaction_id=interaction_id,
            feedback=Feedback.model_validate_json(row.payload),
            mapping=json.loads(row.mapping),
            tenant=row.tenant,
        )

    def feedback_seen(self, event_id: UUID) -> bool:
        """Whether this feedback event was already processed."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(feedback_seen.c.event_id).where(feedback_seen.c.event_id == str(event_id))
            ).first()
        return found is not None

    def save_ingested(self, stored: StoredInteraction, *, feedback_event_id: UUID | None) -> None:
        """Record a published revision in one transaction."""
        with self.engine.begin() as conn:
            self._save(conn, stored, feedback_event_id)

    def lookup_batch(self, ids: list[UUID]) -> BatchState:
        """What the store knows about a batch of interactions, in three queries."""
        keys = [str(i) for i in ids]
        with self.engine.connect() as conn:
            known = conn.execute(
                select(interactions.c.interaction_id).where(interactions.c.interaction_id.in_(keys))
            ).scalars()
            existing = {UUID(k) for k in known}
            rows = conn.execute(
                select(pending_feedback).where(pending_feedback.c.interaction_id.in_(keys))
            ).all()
        pending = {
            UUID(r.interaction_id): PendingFeedback(
                UUID(r.interaction_id),
                Feedback.model_validate_json(r.payload),
                json.loads(r.mapping),
                r.tenant,
            )
            for r in rows
        }
        return BatchState(existing, pending)

    def firsts(self, tenant: str, hashes: list[str]) -> dict[str, UUID]:
        """The first interaction of each question hash seen before, in one query."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(question_hashes.c.question_hash, question_hashes.c.interaction_id).where(
                    question_hashes.c.tenant == tenant,
                    question_hashes.c.question_hash.in_(hashes),
                )
            ).all()
        return {r.question_hash: UUID(r.interaction_id) for r in rows}

    def save_many(self, stored: list[StoredInteraction]) -> None:
        """Record first revisions of new interactions in one transaction, in bulk."""
        if not stored:
            return
        now = _now()
        rows = [
            {
                "interaction_id": str(s.interaction.interaction_id),
                "tenant": s.tenant,
                "source_event_id": str(s.source_event_id),
                "revision": s.revision,
                "payload": s.interaction.model_dump_json(),
                "mapping": json.dumps(s.mapping),
                "updated_at": now,
            }
            for s in stored
        ]
        firsts = [
            {
                "tenant": s.tenant,
                "question_hash": s.interaction.question_hash,
                "interaction_id": str(s.interaction.interaction_id),
            }
            for s in stored
            if s.interaction.question_hash and s.interaction.duplicate_of is None
        ]
        with self.engine.begin() as conn:
            conn.execute(insert(interactions), rows)
            conn.execute(
                delete(pending_feedback).where(
                    pending_feedback.c.interaction_id.in_([r["interaction_id"] for r in rows])
                )
            )
            if firsts:
                conn.execute(insert(question_hashes), firsts)

    def _save(self, conn: Any, stored: StoredInteraction, feedback_event_id: UUID | None) -> None:
        iid = str(stored.interaction.interaction_id)
        values = {
            "tenant": stored.tenant,
            "source_event_id": str(stored.source_event_id),
            "revision": stored.revision,
            "payload": stored.interaction.model_dump_json(),
            "mapping": json.dumps(stored.mapping),
            "updated_at": _now(),
        }
        changed = conn.execute(
            update(interactions).where(interactions.c.interaction_id == iid).values(**values)
        ).rowcount
        if not changed:
            conn.execute(insert(interactions).values(interaction_id=iid, **values))
        conn.execute(delete(pending_feedback).where(pending_feedback.c.interaction_id == iid))
        qhash = stored.interaction.question_hash
        if qhash and stored.interaction.duplicate_of is None:
            self._insert_ignore(
                conn, question_hashes, tenant=stored.tenant, question_hash=qhash, interaction_id=iid
            )
        if feedback_event_id is not None:
            self._insert_ignore(conn, feedback_seen, event_id=str(feedback_event_id))

    def save_pending(self, pending: PendingFeedback, *, feedback_event_id: UUID) -> None:
        """Park feedback until its interaction arrives (the latest feedback wins)."""
        iid = str(pending.interaction_id)
        with self.engine.begin() as conn:
            conn.execute(delete(pending_feedback).where(pending_feedback.c.interaction_id == iid))
            conn.execute(
                insert(pending_feedback).values(
                    interaction_id=iid,
                    payload=pending.feedback.model_dump_json(),
                    mapping=json.dumps(pending.mapping),
                    received_at=_now(),
                    tenant=pending.tenant,
                )
            )
            self._insert_ignore(conn, feedback_seen, event_id=str(feedback_event_id))

    def document_hash(self, doc_id: str) -> str | None:
        """Content hash of the document as last published, if any."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(documents.c.content_hash).where(documents.c.document_id == doc_id)
            ).scalar()
        return str(value) if value else None

    def save_document(self, doc_id: str, *, tenant: str, source: str, content_hash: str) -> None:
        """Record a published document."""
        values = {"tenant": tenant, "source": source, "content_hash": content_hash}
        with self.engine.begin() as conn:
            conn.execute(delete(documents).where(documents.c.document_id == doc_id))
            conn.execute(insert(documents).values(document_id=doc_id, updated_at=_now(), **values))

    def has_document(self, doc_id: str, *, tenant: str) -> bool:
        """Whether the tenant has this document (another tenant's is unknown here)."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(documents.c.document_id).where(
                    documents.c.document_id == doc_id, documents.c.tenant == tenant
                )
            ).first()
        return found is not None

    def delete_document(self, doc_id: str, *, tenant: str) -> bool:
        """Forget a document of the tenant; whether it was known."""
        with self.engine.begin() as conn:
            removed = conn.execute(
                delete(documents).where(
                    documents.c.document_id == doc_id, documents.c.tenant == tenant
                )
            )
        return bool(removed.rowcount)

    @staticmethod
    def _insert_ignore(conn: Any, table: Table, **values: str) -> None:
        # Check first (savepoints are unreliable on pysqlite); writers are serialised per
        # interaction by the pipeline, so no other writer slips in between.
        keys = list(table.primary_key.columns)
        where = [c == values[c.name] for c in keys]
        if conn.execute(select(*keys).where(*where)).first() is None:
            conn.execute(insert(table).values(**values))
