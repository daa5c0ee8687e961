"""Preference pairs from corrections, and which runs trained on them (#20).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from raftloop_core.db import missing_tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision (tables a newer `create_all` already made are left as they are)."""
    missing = missing_tables(["trainer_pairs", "trainer_pair_runs"])
    if "trainer_pairs" in missing:
        op.create_table(
            "trainer_pairs",
            sa.Column("example_id", sa.String(64), primary_key=True),
            sa.Column("tenant", sa.String(64), nullable=False),
            sa.Column("base_model", sa.String(200), nullable=False),
            sa.Column("split", sa.String(16), nullable=False),
            sa.Column("interaction_id", sa.String(64), nullable=False),
            sa.Column("review_id", sa.String(64)),
            sa.Column("rejected_answer", sa.Text(), nullable=False),
            sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        )
        op.create_index("ix_trainer_pairs_tenant", "trainer_pairs", ["tenant"])
    if "trainer_pair_runs" in missing:
        op.create_table(
            "trainer_pair_runs",
            sa.Column("example_id", sa.String(64), primary_key=True),
            sa.Column("run_id", sa.String(64), primary_key=True),
            sa.Column("dataset_version", sa.String(64), nullable=False),
            sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
        )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("trainer_pair_runs")
    op.drop_table("trainer_pairs")
