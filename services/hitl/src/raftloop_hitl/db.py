"""hitl's engine and migrations, on the platform's one way to open a database (raftloop_core.db).

hitl's transactions read, then write while fifty reviewers claim at once, so on SQLite every
transaction takes the write lock when it begins and writers queue instead of failing.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from raftloop_core import db

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    """An engine for `url`, SQLite or PostgreSQL, sized for the review UI's concurrency."""
    return db.make_engine(url, pool_size=20, max_overflow=40, immediate_writes=True)


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest revision (idempotent)."""
    db.migrate(engine, MIGRATIONS)
