"""Pure decisions: deterministic ids, question normalisation, feedback redaction."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest
import sqlalchemy as sa

from raftloop_core.events import Feedback
from raftloop_ingest.adapters import SqlIngestStore, make_engine
from raftloop_ingest.domain import (
    PendingFeedback,
    TenantMismatch,
    check_feedback_tenant,
    document_id,
    ingested_event_id,
    normalise_question,
    question_hash,
    redact_feedback,
)
from raftloop_ingest.redaction import Redactor


def test_output_ids_are_deterministic_per_source_and_revision() -> None:
    source = uuid4()
    assert ingested_event_id(source, 1) == ingested_event_id(source, 1)
    assert ingested_event_id(source, 1) != ingested_event_id(source, 2)
    assert ingested_event_id(source, 1) != ingested_event_id(uuid4(), 1)


def test_near_duplicate_questions_share_a_hash() -> None:
    a = "How do I reset my password, <EMAIL_1>?"
    b = "  how do i RESET my password <EMAIL_2> "
    assert normalise_question(a) == normalise_question(b)
    assert question_hash("t", a) == question_hash("t", b)
    assert question_hash("t", a) != question_hash("other", a)
    assert question_hash("t", a) != question_hash("t", "How do I delete my account?")


def test_document_ids_are_stable_per_tenant_and_source() -> None:
    assert document_id("t", "/kb/a.md") == document_id("t", "/kb/a.md")
    assert document_id("t", "/kb/a.md") != document_id("u", "/kb/a.md")
    assert len(document_id("t", "x")) == 32


def test_feedback_text_is_redacted() -> None:
    scrub = Redactor(hash_key=b"k").session("i")
    fb = Feedback(feedback_id=uuid4(), rating=-1, correction="mail me: a@example.com", comment=None)
    out = redact_feedback(fb, scrub)
    assert out.correction == "mail me: <EMAIL_1>"
    assert out.comment is None
    assert out.rating == -1


def test_feedback_joins_only_its_own_tenants_interaction() -> None:
    iid = uuid4()
    check_feedback_tenant(iid, "acme", "acme")
    check_feedback_tenant(iid, "acme", None)  # parked before tenants were recorded
    with pytest.raises(TenantMismatch, match="feedback of tenant 'globex' names interaction"):
        check_feedback_tenant(iid, "globex", "acme")


def test_a_pending_table_from_before_tenants_gets_the_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    old = sa.create_engine(url)
    with old.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE ingest_pending_feedback (interaction_id VARCHAR(36) PRIMARY KEY, "
                "payload TEXT NOT NULL, mapping TEXT NOT NULL, received_at DATETIME NOT NULL)"
            )
        )
    old.dispose()
    store = SqlIngestStore(make_engine(url))
    parked = PendingFeedback(uuid4(), Feedback(feedback_id=uuid4(), rating=1), {}, "acme")
    store.save_pending(parked, feedback_event_id=uuid4())
    assert store.pending(parked.interaction_id) == parked
    make_engine(url)  # a second start finds the column and changes nothing
