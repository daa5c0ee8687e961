"""Alembic environment: runs on the connection or URL that raftloop_trainer.store hands it."""

from __future__ import annotations

from raftloop_core.db import run_migrations
from raftloop_trainer.preference_store import pair_metadata
from raftloop_trainer.store import metadata

run_migrations([metadata, pair_metadata], version_table="alembic_version_trainer")
