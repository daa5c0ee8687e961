"""The trainer's dataset, runs and regression sets as the releases before migrations made them.

Each table is created only where missing, so a database made by `create_all` keeps its rows.

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
    "trainer_examples",
    "trainer_runs",
    "trainer_regression_sets",
    "trainer_regression_items",
]


def upgrade() -> None:
    """Apply this revision."""
    missing = missing_tables(TABLES)
    if "trainer_examples" in missing:
        _examples()
    if "trainer_runs" in missing:
        _runs()
    if "trainer_regression_sets" in missing:
        op.create_table(
            "trainer_regression_sets",
            sa.Column("tenant", sa.String(64), primary_key=True),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        )
    if "trainer_regression_items" in missing:
        op.create_table(
            "trainer_regression_items",
            sa.Column("tenant", sa.String(64), primary_key=True),
            sa.Column("item_id", sa.String(64), primary_key=True),
            sa.Column("position", sa.Integer(), nullable=False),
            sa.Column("question", sa.Text(), nullable=False),
            sa.Column("answer", sa.Text(), nullable=False),
        )


def _examples() -> None:
    op.create_table(
        "trainer_examples",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("example_id", sa.String(64), nullable=False, unique=True),
        sa.Column("content_key", sa.String(64), nullable=False, unique=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("base_model", sa.String(200), nullable=False),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("messages", sa.Text(), nullable=False),
        sa.Column("oracle_chunks", sa.Text(), nullable=False),
        sa.Column("interaction_id", sa.String(64), nullable=False),
        sa.Column("review_id", sa.String(64)),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("reviewer", sa.String(200)),
        sa.Column("judge_version", sa.String(200)),
        sa.Column("adapter_id", sa.String(64)),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_trainer_examples_tenant", "trainer_examples", ["tenant"])


def _runs() -> None:
    op.create_table(
        "trainer_runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("base_model", sa.String(200), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("max_seq", sa.Integer(), nullable=False),
        sa.Column("dataset_version", sa.String(64)),
        sa.Column("train_examples", sa.Integer(), nullable=False),
        sa.Column("holdout_examples", sa.Integer(), nullable=False),
        sa.Column("adapter_id", sa.String(64)),
        sa.Column("decision", sa.Text()),
        sa.Column("report_path", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    """Revert this revision."""
    for table in reversed(TABLES):
        op.drop_table(table)
