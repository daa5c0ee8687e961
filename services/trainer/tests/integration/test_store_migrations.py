"""The trainer's schema comes from Alembic revisions, on SQLite and PostgreSQL, and a database
that a release before migrations made with `create_all` is upgraded in place with its rows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from raftloop_trainer.store import DatasetStore, metadata, runs

pytestmark = pytest.mark.integration


def _version(store: DatasetStore) -> str:
    with store.engine.connect() as conn:
        found = conn.execute(sa.text("SELECT version_num FROM alembic_version_trainer"))
        return str(found.scalar_one())


def test_a_new_database_gets_every_table_at_the_newest_revision(sql_url: str) -> None:
    store = DatasetStore(sql_url)
    try:
        tables = set(sa.inspect(store.engine).get_table_names())
        assert {"trainer_examples", "trainer_runs", "trainer_pairs", "trainer_pair_runs"} <= tables
        assert _version(store) == "0002"
    finally:
        store.engine.dispose()
    DatasetStore(sql_url).engine.dispose()  # a second start has nothing to do


def test_a_database_from_before_preference_pairs_keeps_its_runs(sql_url: str) -> None:
    old = sa.create_engine(sql_url)
    metadata.create_all(old)  # what the release before pairs (and migrations) created
    with old.begin() as conn:
        conn.execute(
            runs.insert().values(
                run_id="run-old",
                tenant="acme",
                base_model="tiny",
                trigger="manual",
                status="promoted",
                max_seq=3,
                train_examples=2,
                holdout_examples=1,
                started_at=datetime.now(UTC),
            )
        )
    old.dispose()
    store = DatasetStore(sql_url)
    try:
        assert "trainer_pairs" in sa.inspect(store.engine).get_table_names()
        assert _version(store) == "0002"
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(runs.c.run_id)).scalars().all() == ["run-old"]
    finally:
        store.engine.dispose()
