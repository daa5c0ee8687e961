"""Pending feedback records its sender's tenant, checked when the interaction arrives (#17).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from raftloop_core.db import has_column

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision (a table that already has the column is left as it is)."""
    if not has_column("ingest_pending_feedback", "tenant"):
        with op.batch_alter_table("ingest_pending_feedback") as batch:
            batch.add_column(sa.Column("tenant", sa.String(64), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("ingest_pending_feedback") as batch:
        batch.drop_column("tenant")
