"""The judge's durable state in SQL: SQLite under `<data dir>/judge/` or PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from raftloop_core import db
from raftloop_core.events import InteractionJudged
from raftloop_judge.domain import LabelRecord, Reference

MIGRATIONS = Path(__file__).parent / "migrations"
metadata = sa.MetaData()

processed = sa.Table(
    "judge_processed",
    metadata,
    sa.Column("event_id", sa.String(36), primary_key=True),
    sa.Column("output_id", sa.String(36), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
judgements = sa.Table(
    "judge_judgements",
    metadata,
    sa.Column("output_id", sa.String(36), primary_key=True),
    sa.Column("interaction_id", sa.String(36), nullable=False, index=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
labels = sa.Table(
    "judge_labels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("review_id", sa.String(64), nullable=False, unique=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
    # Agreement figures are per tenant (issue #17); older rows get it from their payload.
    sa.Column("tenant", sa.String(64), nullable=True, index=True),
)
references = sa.Table(
    "judge_references",
    metadata,
    sa.Column("reference_id", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False, index=True),
    sa.Column("question", sa.Text, nullable=False),
    sa.Column("answer", sa.Text, nullable=False),
    sa.Column("embedding", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
# Rows of one `IN (...)` list: far below SQLite's and PostgreSQL's bound-parameter limits.
_IDS_PER_QUERY = 500
calibrators = sa.Table(
    "judge_calibrator",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)


def _now() -> datetime:
    return datetime.now(UTC)


class SqlJudgeStore:
    """Implements `JudgeStore` with SQLAlchemy Core (its schema: Alembic, `migrations/`)."""

    def __init__(self, url: str) -> None:
        self.engine = db.make_engine(url)
        db.migrate(self.engine, MIGRATIONS)

    def close(self) -> None:
        """Release connections."""
        self.engine.dispose()

    def _insert(self, table: sa.Table, **values: object) -> bool:
        try:
            with self.engine.begin() as conn:
                conn.execute(table.insert().values(**values))
        except IntegrityError:
            return False
        return True

    def is_processed(self, event_id: UUID) -> bool:
        """Whether an input event was fully handled."""
        with self.engine.connect() as conn:
            query = sa.select(processed.c.event_id).where(processed.c.event_id == str(event_id))
            return conn.execute(query).first() is not None

    def mark_processed(self, event_id: UUID, output_id: UUID) -> None:
        """Record that an input event was handled."""
        self._insert(processed, event_id=str(event_id), output_id=str(output_id), at=_now())

    def saved_judgement(self, output_id: UUID) -> InteractionJudged | None:
        """A judgement computed earlier under `output_id`."""
        with self.engine.connect() as conn:
            query = sa.select(judgements.c.payload).where(judgements.c.output_id == str(output_id))
            row = conn.execute(query).first()
        return InteractionJudged.model_validate_json(row[0]) if row else None

    def save_judgement(self, event: InteractionJudged) -> None:
        """Keep a judgement before publishing it (first one wins)."""
        self._insert(
            judgements,
            output_id=str(event.event_id),
            interaction_id=str(event.interaction.interaction_id),
            payload=event.model_dump_json(),
            at=_now(),
        )

    def latest_judgement(self, interaction_id: UUID) -> InteractionJudged | None:
        """The newest judgement of an interaction."""
        with self.engine.connect() as conn:
            query = (
                sa.select(judgements.c.payload)
                .where(judgements.c.interaction_id == str(interaction_id))
                .order_by(judgements.c.at.desc())
                .limit(1)
            )
            row = conn.execute(query).first()
        return InteractionJudged.model_validate_json(row[0]) if row else None

    def add_label(self, label: LabelRecord) -> bool:
        """Store a label once per review."""
        return self._insert(
            labels,
            review_id=label.review_id,
            payload=json.dumps(label.__dict__),
            at=_now(),
            tenant=label.slices.get("tenant"),
        )

    def recent_labels(self, limit: int, tenant: str | None = None) -> list[LabelRecord]:
        """The newest `limit` labels (of one tenant, or of all), oldest first."""
        with self.engine.connect() as conn:
            query = sa.select(labels.c.payload).order_by(labels.c.id.desc()).limit(limit)
            if tenant is not None:
                query = query.where(labels.c.tenant == tenant)
            rows = conn.execute(query).all()
        return [LabelRecord(**json.loads(r[0])) for r in reversed(rows)]

    def add_reference(self, reference: Reference) -> bool:
        """Store an approved answer once."""
        return self._insert(
            references,
            reference_id=reference.reference_id,
            tenant=reference.tenant,
            question=reference.question,
            answer=reference.answer,
            embedding=json.dumps(reference.embedding),
            at=reference.at or _now(),
        )

    def references(self, tenant: str, limit: int = 5000) -> list[Reference]:
        """The newest approved answers of a tenant."""
        with self.engine.connect() as conn:
            query = (
                sa.select(references)
                .where(references.c.tenant == tenant)
                .order_by(references.c.at.desc())
                .limit(limit)
            )
            rows = conn.execute(query).all()
        return [_reference(r) for r in rows]

    def reference_count(self, tenant: str) -> int:
        """How many approved answers a tenant has."""
        with self.engine.connect() as conn:
            query = sa.select(sa.func.count()).where(references.c.tenant == tenant)
            return int(conn.execute(query).scalar_one())

    def newest_reference_ids(self, tenant: str, limit: int) -> tuple[list[str], int]:
        """The ids of a tenant's newest `limit` answers, newest first, and the tenant's total."""
        total = sa.func.count().over().label("total")  # counted before LIMIT, in one snapshot
        with self.engine.connect() as conn:
            query = (
                sa.select(references.c.reference_id, total)
                .where(references.c.tenant == tenant)
                .order_by(references.c.at.desc())
                .limit(limit)
            )
            rows = conn.execute(query).all()
        return [r.reference_id for r in rows], int(rows[0].total) if rows else 0

    def references_by_id(self, tenant: str, ids: Sequence[str]) -> list[Reference]:
        """These answers of this tenant."""
        out: list[Reference] = []
        with self.engine.connect() as conn:
            for start in range(0, len(ids), _IDS_PER_QUERY):
                chunk = list(ids[start : start + _IDS_PER_QUERY])
                query = sa.select(references).where(
                    references.c.tenant == tenant, references.c.reference_id.in_(chunk)
                )
                out.extend(_reference(r) for r in conn.execute(query))
        return out

    def save_calibrator(self, payload: str) -> None:
        """Persist the newest calibrator."""
        with self.engine.begin() as conn:
            conn.execute(calibrators.insert().values(payload=payload, at=_now()))

    def load_calibrator(self) -> str | None:
        """The newest persisted calibrator."""
        with self.engine.connect() as conn:
            query = sa.select(calibrators.c.payload).order_by(calibrators.c.id.desc()).limit(1)
            row = conn.execute(query).first()
        return row[0] if row else None


def _reference(row: Any) -> Reference:
    # SQLite gives back naive datetimes; they were written in UTC.
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
    return Reference(
        row.reference_id, row.tenant, row.question, row.answer, json.loads(row.embedding), at
    )
