"""ingest's tables as the releases before migrations made them (each only where missing).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from raftloop_core.db import missing_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = [
    "ingest_interactions",
    "ingest_question_hashes",
    "ingest_pending_feedback",
    "ingest_feedback_seen",
    "ingest_documents",
]


def upgrade() -> None:
    """Apply this revision: a database made by `create_all` keeps its tables and rows."""
    missing = missing_tables(TABLES)
    if "ingest_interactions" in missing:
        op.create_table(
            "ingest_interactions",
            sa.Column("interaction_id", sa.String(36), primary_key=True),
            sa.Column("tenant", sa.String(64), nullable=False),
            sa.Column("source_event_id", sa.String(36), nullable=False),
            sa.Column("revision", sa.Integer(), nullable=False),
            sa.Column("payload", sa.Text(), nullable=False),
            sa.Column("mapping", sa.Text(), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        )
    if "ingest_question_hashes" in missing:
        op.create_table(
            "ingest_question_hashes",
            sa.Column("tenant", sa.String(64), primary_key=True),
            sa.Column("question_hash", sa.String(64), primary_key=True),
            sa.Column("interaction_id", sa.String(36), nullable=False),
        )
    if "ingest_pending_feedback" in missing:
        op.create_table(
            "ingest_pending_feedback",
            sa.Column("interaction_id", sa.String(36), primary_key=True),
            sa.Column("payload", sa.Text(), nullable=False),
            sa.Column("mapping", sa.Text(), nullable=False),
            sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        )
    if "ingest_feedback_seen" in missing:
        op.create_table(
            "ingest_feedback_seen",
            sa.Column("event_id", sa.String(36), primary_key=True),
        )
    if "ingest_documents" in missing:
        op.create_table(
            "ingest_documents",
            sa.Column("document_id", sa.String(64), primary_key=True),
            sa.Column("tenant", sa.String(64), nullable=False),
            sa.Column("source", sa.Text(), nullable=False),
            sa.Column("content_hash", sa.String(64), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        )


def downgrade() -> None:
    """Revert this revision."""
    for table in reversed(TABLES):
        op.drop_table(table)
