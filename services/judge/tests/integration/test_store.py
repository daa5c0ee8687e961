"""The judge's SQL state on SQLite and PostgreSQL: idempotent writes, windows, calibrator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
import sqlalchemy as sa

from raftloop_core.events import InteractionJudged, Judgement
from raftloop_judge.domain import LabelRecord, Reference
from raftloop_judge.store import SqlJudgeStore

from .test_endpoint_behaviours import ingested

pytestmark = pytest.mark.integration


@pytest.fixture
def store(sql_url: str) -> Iterator[SqlJudgeStore]:
    """An empty store on SQLite, then on a PostgreSQL schema of its own (`sql_url`)."""
    s = SqlJudgeStore(sql_url)
    yield s
    s.close()  # before `sql_url` drops the schema


def test_state_round_trips_and_writes_are_idempotent(store: SqlJudgeStore) -> None:
    event = ingested("How long?", "Five days.")
    judged = InteractionJudged(
        event_id=uuid4(),
        interaction=event.interaction,
        judgement=Judgement(judge_version="v", overall=4.0),
        ingested_event_id=event.event_id,
    )
    assert not store.is_processed(event.event_id)
    store.save_judgement(judged)
    store.save_judgement(judged)  # a second save after a crash is harmless
    assert store.saved_judgement(judged.event_id) == judged
    assert store.latest_judgement(event.interaction.interaction_id) == judged
    store.mark_processed(event.event_id, judged.event_id)
    store.mark_processed(event.event_id, judged.event_id)
    assert store.is_processed(event.event_id)

    labels = [
        LabelRecord(str(i), "x", i % 2 == 0, {"overall": float(i)}, {"overall": True}, {})
        for i in range(5)
    ]
    assert all(store.add_label(label) for label in labels)
    assert not store.add_label(labels[0])
    assert [label.review_id for label in store.recent_labels(3)] == ["2", "3", "4"]

    ref = Reference("r1", "default", "How long?", "Five days.", [0.6, 0.8])
    assert store.add_reference(ref)
    assert not store.add_reference(ref)
    assert store.references("default") == [ref]
    assert store.references("other") == []

    assert store.load_calibrator() is None
    store.save_calibrator('{"a": 1}')
    store.save_calibrator('{"a": 2}')
    assert store.load_calibrator() == '{"a": 2}'


def test_labels_stored_before_tenants_are_found_by_their_tenant(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    old = sa.create_engine(url)
    label = LabelRecord("r1", "i1", True, {}, {}, {}, slices={"tenant": "acme"})
    with old.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE judge_labels (id INTEGER PRIMARY KEY AUTOINCREMENT, review_id "
                "VARCHAR(64) NOT NULL UNIQUE, payload TEXT NOT NULL, at DATETIME NOT NULL)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO judge_labels (review_id, payload, at) VALUES ('r1', :p, :at)"),
            {"p": json.dumps(label.__dict__), "at": "2026-01-01 00:00:00"},
        )
    old.dispose()
    store = SqlJudgeStore(url)
    assert store.recent_labels(10, "acme") == [label]
    assert store.recent_labels(10, "globex") == []
    store.close()
    SqlJudgeStore(url).close()  # a second start finds the column and changes nothing


def test_newest_reference_ids_come_with_the_tenants_total(store: SqlJudgeStore) -> None:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    for i in range(5):
        at = t0 + timedelta(seconds=(i * 7) % 5)  # stored out of time order
        store.add_reference(Reference(f"r{i}", "acme", f"q{i}", f"a{i}", [float(i), 1.0], at))
    store.add_reference(Reference("g", "globex", "q", "a", [0.0, 1.0], t0))
    newest = [r.reference_id for r in store.references("acme", 3)]
    assert store.newest_reference_ids("acme", 3) == (newest, 5)
    assert store.newest_reference_ids("nobody", 3) == ([], 0)
    assert store.reference_count("acme") == 5
    rows = store.references_by_id("acme", ["r1", "r4", "g", "missing"])
    assert sorted(r.reference_id for r in rows) == ["r1", "r4"]  # never another tenant's row
    r4 = next(r for r in rows if r.reference_id == "r4")
    assert r4.embedding == [4.0, 1.0]
    assert r4.at == t0 + timedelta(seconds=3)
