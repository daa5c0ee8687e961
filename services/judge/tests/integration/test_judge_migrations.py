"""The judge's schema comes from Alembic revisions, on SQLite and PostgreSQL, and a database that
a release before migrations made with `create_all` is upgraded in place with its rows."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from raftloop_judge.store import SqlJudgeStore

pytestmark = pytest.mark.integration


def test_a_new_database_gets_every_table_at_the_newest_revision(sql_url: str) -> None:
    store = SqlJudgeStore(sql_url)
    try:
        tables = set(sa.inspect(store.engine).get_table_names())
        assert {"judge_processed", "judge_labels", "judge_references"} <= tables
        with store.engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version_judge"))
            assert version.scalar_one() == "0002"
    finally:
        store.close()
    SqlJudgeStore(sql_url).close()  # a second start has nothing to do


def test_labels_from_before_tenants_get_theirs_from_the_payload(sql_url: str) -> None:
    old = sa.create_engine(sql_url)
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
    store = SqlJudgeStore(sql_url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT review_id, tenant FROM judge_labels")).all()
        assert [tuple(r) for r in rows] == [("r-1", "acme")]
        assert "judge_calibrator" in sa.inspect(store.engine).get_table_names()
    finally:
        store.close()
