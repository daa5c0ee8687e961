"""The outbox relay on the real broker: exactly one copy per event, even across a crash."""

from __future__ import annotations

import json
from uuid import uuid4

import pytest
from sqlalchemy import Engine

from raftloop_core.events import ExampleCurated
from raftloop_core.messaging import make_broker
from raftloop_core.settings import KafkaSettings
from raftloop_core.topics import Topic
from raftloop_hitl.adapters import OutboxRelay, published_on_kafka
from raftloop_hitl.domain import sample
from raftloop_hitl.store import RelayLeadership, ReviewStore

from ..conftest import judged
from ..support import prefixed_topics, read_topic

pytestmark = pytest.mark.integration


async def test_a_row_published_but_not_marked_is_not_sent_again(
    sqlite_engine: Engine, kafka_settings: KafkaSettings
) -> None:
    prefix = prefixed_topics(kafka_settings)
    store = ReviewStore(sqlite_engine, lease_s=60)
    iid = next(i for i in iter(uuid4, None) if not sample(i, "overlap", 0.1))
    store.ingest_judged(judged(p=0.2, interaction_id=iid))
    claim = store.claim("default", "alice")
    assert claim is not None
    store.submit("default", claim.item_id, "alice", claim.token, "approved")
    [review_row, example_row] = store.pending()
    broker = make_broker(kafka_settings)
    async with broker:
        await broker.start()
        # A crash after the broker acked the first row but before it was marked sent:
        first = OutboxRelay(store, broker, prefix=prefix, poll_s=0.1)
        event = json.loads(review_row[3])
        await broker.publish(event, topic=prefix + review_row[1], key=review_row[2].encode())
        check = published_on_kafka(kafka_settings)
        assert check(prefix + review_row[1], review_row[4])
        assert not check(prefix + example_row[1], example_row[4])
        restarted = OutboxRelay(store, broker, prefix=prefix, poll_s=0.1, published=check)
        assert await restarted.drain() == 1
        assert store.pending() == []
        del first
    reviews = read_topic(kafka_settings, prefix + Topic.REVIEW_COMPLETED, expect=1, settle_s=1)
    examples = read_topic(kafka_settings, prefix + Topic.EXAMPLE_CURATED, expect=1, settle_s=1)
    assert len(reviews) == 1
    assert len(examples) == 1


async def test_a_correction_publishes_the_answer_it_replaced_as_rejected(
    sqlite_engine: Engine, kafka_settings: KafkaSettings
) -> None:
    prefix = prefixed_topics(kafka_settings)
    store = ReviewStore(sqlite_engine, lease_s=60)
    iid = next(i for i in iter(uuid4, None) if not sample(i, "overlap", 0.1))
    store.ingest_judged(judged(p=0.2, interaction_id=iid, answer="About a week."))
    claim = store.claim("default", "alice")
    assert claim is not None
    store.submit("default", claim.item_id, "alice", claim.token, "corrected", answer="Five days.")
    broker = make_broker(kafka_settings)
    async with broker:
        await broker.start()
        assert await OutboxRelay(store, broker, prefix=prefix, poll_s=0.1).drain() == 2
    [(key, value)] = read_topic(
        kafka_settings, prefix + Topic.EXAMPLE_CURATED, expect=1, settle_s=1
    )
    example = ExampleCurated.model_validate_json(value)
    assert key == str(iid).encode()
    assert example.source == "corrected"
    assert example.answer == "Five days."
    assert example.rejected_answer == "About a week."  # the trainer's rejected side
    assert example.interaction_id == iid


def test_only_one_replica_relays_on_postgresql(pg_engine: Engine, sqlite_engine: Engine) -> None:
    first, second = RelayLeadership(pg_engine), RelayLeadership(pg_engine)
    assert first.acquire()
    assert first.acquire()  # still the leader
    assert not second.acquire()
    first.release()
    assert second.acquire()
    second.release()
    assert RelayLeadership(sqlite_engine).acquire()  # one process owns a SQLite file
