"""Fixtures of the hitl tests: judged events, databases (SQLite file and PostgreSQL)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy import Engine

from raftloop_core import events as ev
from raftloop_core.testing import sample_events
from raftloop_core.topics import Topic
from raftloop_hitl.db import make_engine, migrate

PG_ADMIN_URL = os.environ.get(
    "HITL_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def judged(
    *,
    p: float | None = 0.3,
    flagged: bool = False,
    answer: str = "About a week.",
    tenant: str = "default",
    revision: int = 1,
    interaction_id: uuid.UUID | None = None,
    feedback: ev.Feedback | None = None,
    chunks: int = 2,
) -> ev.InteractionJudged:
    """A judged interaction with a fresh id (based on the core sample event)."""
    base = sample_events()[Topic.INTERACTION_JUDGED]
    assert isinstance(base, ev.InteractionJudged)
    retrieved = [
        ev.RetrievedChunk(
            chunk_id=f"doc-{i}#0",
            document_id=f"doc-{i}",
            text=f"Chunk {i}: refunds take {i} days.",
            score=0.9 - i / 10,
            title=f"Doc {i}",
        )
        for i in range(1, chunks + 1)
    ]
    interaction = base.interaction.model_copy(
        update={
            "interaction_id": interaction_id or uuid4(),
            "answer": answer,
            "retrieved": retrieved,
            "flags": base.interaction.flags if flagged else [],
            "feedback": feedback,
        }
    )
    judgement = base.judgement.model_copy(update={"approval_probability": p})
    return ev.InteractionJudged(
        tenant=tenant,
        interaction=interaction,
        judgement=judgement,
        ingested_event_id=uuid4(),
        revision=revision,
    )


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'hitl.sqlite3'}")
    migrate(engine)
    yield engine
    engine.dispose()


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    admin_url = PG_ADMIN_URL.replace("+psycopg", "")
    name = f"hitl_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """Each store test runs on SQLite and on PostgreSQL."""
    name = "sqlite_engine"
    if request.param == "postgresql":
        if not _pg_available():
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}; set HITL_TEST_POSTGRES")
        name = "pg_engine"
    engine: Engine = request.getfixturevalue(name)
    return engine
