"""The judge's schema comes from Alembic revisions, on SQLite and PostgreSQL, and a database that
a release before migrations made with `create_all` is upgraded in place with its rows."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from raftloop_judge.store import SqlJudgeStore

pytestmark = pytest.mark.integration
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(
    request: pytest.FixtureRequest, tmp_path: Path, unique: Callable[[str], str]
) -> Iterator[str]:
    """An empty database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'judge.sqlite3'}"
        return
    schema = unique("judge_mig").replace("-", "_")
    admin = sa.create_engine(PG)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    yield f"{PG}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def test_a_new_database_gets_every_table_at_the_newest_revision(url: str) -> None:
    store = SqlJudgeStore(url)
    try:
        tables = set(sa.inspect(store.engine).get_table_names())
        assert {"judge_processed", "judge_labels", "judge_references"} <= tables
        with store.engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version_judge"))
            assert version.scalar_one() == "0002"
    finally:
        store.close()
    SqlJudgeStore(url).close()  # a second start has nothing to do


def test_labels_from_before_tenants_get_theirs_from_the_payload(url: str) -> None:
    old = sa.create_engine(url)
    payload = json.dumps({"slices": {"tenant": "acme"}})
    with old.begin() as conn:  # the labels table of the release before #17, with one label
        conn.execute(
            sa.text(
                "CREATE TABLE judge_labels (id INTEGER PRIMARY KEY, review_id VARCHAR(64) NOT "
                "NULL UNIQUE, payload TEXT NOT NULL, at TIMESTAMP WITH TIME ZONE NOT NULL)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO judge_labels VALUES (1, 'r-1', :p, '2026-01-01 00:00:00+00:00')"),
            {"p": payload},
        )
    old.dispose()
    store = SqlJudgeStore(url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT review_id, tenant FROM judge_labels")).all()
        assert [tuple(r) for r in rows] == [("r-1", "acme")]
        assert "judge_calibrator" in sa.inspect(store.engine).get_table_names()
    finally:
        store.close()
