"""Alembic environment: runs on the connection or URL that raftloop_hitl.db hands it."""

from __future__ import annotations

from raftloop_core.db import run_migrations
from raftloop_hitl.models import Base

run_migrations(Base.metadata)
