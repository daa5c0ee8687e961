"""ingest's schema comes from Alembic revisions, on SQLite and PostgreSQL, and a database that a
release before migrations made with `create_all` is upgraded in place with its rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from raftloop_ingest.adapters import make_engine

pytestmark = pytest.mark.integration
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(
    request: pytest.FixtureRequest, tmp_path: Path, unique: Callable[[str], str]
) -> Iterator[str]:
    """An empty database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ingest.sqlite3'}"
        return
    schema = unique("ingest_mig").replace("-", "_")
    admin = sa.create_engine(PG)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    yield f"{PG}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def _columns(engine: sa.Engine, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns(table)}


def test_a_new_database_gets_every_table_at_the_newest_revision(url: str) -> None:
    engine = make_engine(url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
        assert {"ingest_interactions", "ingest_pending_feedback", "ingest_documents"} <= tables
        assert "tenant" in _columns(engine, "ingest_pending_feedback")
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version_ingest"))
            assert version.scalar_one() == "0002"
    finally:
        engine.dispose()
    make_engine(url).dispose()  # a second start has nothing to do


def test_a_database_from_before_migrations_keeps_its_rows_and_gains_the_column(url: str) -> None:
    old = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with old.begin() as conn:  # what the release before #17 created, with one waiting feedback
        conn.execute(
            sa.text(
                "CREATE TABLE ingest_pending_feedback (interaction_id VARCHAR(36) PRIMARY KEY, "
                "payload TEXT NOT NULL, mapping TEXT NOT NULL, "
                "received_at TIMESTAMP WITH TIME ZONE NOT NULL)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO ingest_pending_feedback VALUES "
                "('i-1', '{}', '{}', '2026-01-01 00:00:00+00:00')"
            )
        )
    old.dispose()
    engine = make_engine(url)
    try:
        assert "tenant" in _columns(engine, "ingest_pending_feedback")
        assert "ingest_interactions" in sa.inspect(engine).get_table_names()
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT interaction_id FROM ingest_pending_feedback"))
            assert rows.scalars().all() == ["i-1"]
    finally:
        engine.dispose()
