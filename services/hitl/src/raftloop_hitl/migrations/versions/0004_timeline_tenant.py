"""Timeline rows keep the tenant of their training or adapter event (issue #17).

The ops page shows each tenant's admin only its own tenant's runs and adapters. Rows written
before this revision did not record one; they belong to `default`, the only tenant there was.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("timeline") as batch:
        batch.add_column(
            sa.Column("tenant", sa.String(length=64), nullable=False, server_default="default")
        )
        batch.create_index("ix_timeline_tenant_at", ["tenant", "at"])


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("timeline") as batch:
        batch.drop_index("ix_timeline_tenant_at")
        batch.drop_column("tenant")
