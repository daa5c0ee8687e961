import json
import os
import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from raftloop_core import events as ev
from raftloop_core.testing import sample_events
from raftloop_core.topics import TOPIC_SPECS, Topic, all_topics, dead_letter, is_dead_letter

SNAPSHOT = Path(__file__).parent / "snapshots" / "event_schemas.json"


def current_schemas() -> dict[str, object]:
    return {str(topic): ev.adapter_for(topic).json_schema() for topic in Topic}


def test_event_schemas_match_the_snapshot() -> None:
    """A schema change must be visible in review: regenerate with UPDATE_SNAPSHOTS=1."""
    schemas = current_schemas()
    if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(schemas, indent=1, sort_keys=True) + "\n")
    assert json.loads(SNAPSHOT.read_text()) == schemas, (
        "event schemas changed: review the diff, keep changes additive within a version, then "
        "run `UPDATE_SNAPSHOTS=1 make test PYTEST_ARGS=libs/core/tests/unit/test_events.py`"
    )


def test_every_topic_has_a_spec_a_payload_type_and_follows_the_naming_rule() -> None:
    assert set(TOPIC_SPECS) == set(Topic) == set(ev.EVENT_TYPES)
    for topic in Topic:
        assert re.fullmatch(r"[a-z_]+(\.[a-z_]+)+\.v\d+", topic), topic
        assert dead_letter(topic) == f"{topic}.dlt"
        assert is_dead_letter(dead_letter(topic))
        assert not is_dead_letter(topic)
    assert len(all_topics()) == 2 * len(Topic)


def test_every_event_carries_the_common_and_tracing_fields() -> None:
    for topic, event in sample_events().items():
        fields = type(event).model_fields
        assert {"event_id", "occurred_at", "schema_version", "tenant"} <= set(fields), topic
        assert ev.event_key(topic, event)


def test_events_are_frozen_ignore_unknown_fields_and_reject_bad_tenants() -> None:
    event = sample_events()[Topic.CHAT_FEEDBACK]
    with pytest.raises(ValidationError):
        event.tenant = "other"  # type: ignore[misc]
    data = event.model_dump(mode="json") | {"field_from_the_future": 1}
    assert ev.FeedbackReceived.model_validate(data) == event
    with pytest.raises(ValidationError, match="tenant"):
        ev.FeedbackReceived.model_validate(data | {"tenant": "../etc"})


def test_no_event_field_is_untyped() -> None:
    def walk(model: type[BaseModel]) -> None:
        for name, field in model.model_fields.items():
            text = str(field.annotation)
            assert "Any" not in text, f"{model.__name__}.{name}"
            assert text != "<class 'dict'>", f"{model.__name__}.{name}"

    for event in sample_events().values():
        walk(type(event))


def test_feedback_negative_depends_on_the_scale() -> None:
    from uuid import uuid4

    assert ev.Feedback(feedback_id=uuid4(), rating=-1).negative
    assert not ev.Feedback(feedback_id=uuid4(), rating=1).negative
    assert ev.Feedback(feedback_id=uuid4(), rating=2, scale="stars").negative
    assert not ev.Feedback(feedback_id=uuid4(), rating=4, scale="stars").negative


def test_the_question_is_the_last_user_turn() -> None:
    interaction = sample_events()[Topic.INTERACTION_INGESTED].interaction  # type: ignore[attr-defined]
    assert interaction.question == "How long do refunds take?"
