"""Failed sign-ins per client address and per username, for throttling with growing delays.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "signin_failures",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_signin_failures_last_at", "signin_failures", ["last_at"], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_signin_failures_last_at", table_name="signin_failures")
    op.drop_table("signin_failures")
