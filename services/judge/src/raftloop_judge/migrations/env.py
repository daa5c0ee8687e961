"""Alembic environment: runs on the connection or URL that raftloop_judge.store hands it."""

from __future__ import annotations

from raftloop_core.db import run_migrations
from raftloop_judge.store import metadata

run_migrations(metadata, version_table="alembic_version_judge")
