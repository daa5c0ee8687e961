"""The judge's tables as the releases before migrations made them (each only where missing).

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
    "judge_processed",
    "judge_judgements",
    "judge_labels",
    "judge_references",
    "judge_calibrator",
]


def upgrade() -> None:
    """Apply this revision: a database made by `create_all` keeps its tables and rows."""
    missing = missing_tables(TABLES)
    if "judge_processed" in missing:
        op.create_table(
            "judge_processed",
            sa.Column("event_id", sa.String(36), primary_key=True),
            sa.Column("output_id", sa.String(36), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        )
    if "judge_judgements" in missing:
        op.create_table(
            "judge_judgements",
            sa.Column("output_id", sa.String(36), primary_key=True),
            sa.Column("interaction_id", sa.String(36), nullable=False),
            sa.Column("payload", sa.Text(), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        )
        op.create_index(
            "ix_judge_judgements_interaction_id", "judge_judgements", ["interaction_id"]
        )
    if "judge_labels" in missing:
        op.create_table(
            "judge_labels",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("review_id", sa.String(64), nullable=False, unique=True),
            sa.Column("payload", sa.Text(), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        )
        op.create_index("ix_judge_labels_at", "judge_labels", ["at"])
    _create_references_and_calibrators(missing)


def _create_references_and_calibrators(missing: set[str]) -> None:
    if "judge_references" in missing:
        op.create_table(
            "judge_references",
            sa.Column("reference_id", sa.String(64), primary_key=True),
            sa.Column("tenant", sa.String(64), nullable=False),
            sa.Column("question", sa.Text(), nullable=False),
            sa.Column("answer", sa.Text(), nullable=False),
            sa.Column("embedding", sa.Text(), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        )
        op.create_index("ix_judge_references_tenant", "judge_references", ["tenant"])
    if "judge_calibrator" in missing:
        op.create_table(
            "judge_calibrator",
            sa.Column("id", sa.Integer(), primary_key=True),
            sa.Column("payload", sa.Text(), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        )


def downgrade() -> None:
    """Revert this revision."""
    for table in reversed(TABLES):
        op.drop_table(table)
