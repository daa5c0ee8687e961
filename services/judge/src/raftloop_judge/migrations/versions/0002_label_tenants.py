"""Agreement figures are per tenant (#17): labels get a tenant column, filled from payloads.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from raftloop_core.db import has_column

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision (a table that already has the column is left as it is)."""
    if has_column("judge_labels", "tenant"):
        return
    with op.batch_alter_table("judge_labels") as batch:
        batch.add_column(sa.Column("tenant", sa.String(64), nullable=True))
        batch.create_index("ix_judge_labels_tenant", ["tenant"])
    labels = sa.table(
        "judge_labels", sa.column("id", sa.Integer), sa.column("payload"), sa.column("tenant")
    )
    bind = op.get_bind()
    for row in bind.execute(sa.select(labels.c.id, labels.c.payload)).all():
        tenant = json.loads(row.payload).get("slices", {}).get("tenant")
        bind.execute(labels.update().where(labels.c.id == row.id).values(tenant=tenant))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("judge_labels") as batch:
        batch.drop_index("ix_judge_labels_tenant")
        batch.drop_column("tenant")
