"""ingest's schema comes from Alembic revisions, on SQLite and PostgreSQL, and a database that a
release before migrations made with `create_all` is upgraded in place with its rows."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from raftloop_ingest.adapters import make_engine

pytestmark = pytest.mark.integration


def _columns(engine: sa.Engine, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns(table)}


def test_a_new_database_gets_every_table_at_the_newest_revision(sql_url: str) -> None:
    engine = make_engine(sql_url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
        assert {"ingest_interactions", "ingest_pending_feedback", "ingest_documents"} <= tables
        assert "tenant" in _columns(engine, "ingest_pending_feedback")
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version_ingest"))
            assert version.scalar_one() == "0002"
    finally:
        engine.dispose()
    make_engine(sql_url).dispose()  # a second start has nothing to do


def test_a_database_from_before_migrations_keeps_its_rows_and_gains_the_column(
    sql_url: str,
) -> None:
    old = sa.create_engine(sql_url)
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
    engine = make_engine(sql_url)
    try:
        assert "tenant" in _columns(engine, "ingest_pending_feedback")
        assert "ingest_interactions" in sa.inspect(engine).get_table_names()
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT interaction_id FROM ingest_pending_feedback"))
            assert rows.scalars().all() == ["i-1"]
    finally:
        engine.dispose()
