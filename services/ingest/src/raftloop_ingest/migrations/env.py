"""Alembic environment: runs on the connection or URL that raftloop_ingest.adapters hands it."""

from __future__ import annotations

from raftloop_core.db import run_migrations
from raftloop_ingest.adapters import metadata

run_migrations(metadata, version_table="alembic_version_ingest")
