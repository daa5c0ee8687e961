"""The consumers on the real broker: intake, feedback join, dedupe, timeline, dead letters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import select

from raftloop_core import events as ev
from raftloop_core.api import KeyStore
from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.messaging import make_broker
from raftloop_core.settings import KafkaSettings
from raftloop_core.testing import sample_events
from raftloop_core.topics import Topic, dead_letter
from raftloop_hitl.app import create_app
from raftloop_hitl.db import make_engine
from raftloop_hitl.domain import sample
from raftloop_hitl.main import session_secret
from raftloop_hitl.models import Item
from raftloop_hitl.store import ReviewStore

from ..conftest import judged
from ..support import prefixed_topics, read_topic, settings_for

pytestmark = pytest.mark.integration


async def until(predicate: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


def _promoted_id(samples: Mapping[Topic, ev.Event]) -> str:
    promoted = samples[Topic.ADAPTER_PROMOTED]
    assert isinstance(promoted, ev.AdapterPromoted)
    return promoted.adapter_id


async def test_consumers_queue_join_dedupe_and_park(
    tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    prefix = prefixed_topics(kafka_settings)
    settings = settings_for(tmp_path, kafka_settings, prefix, ops_cache_s=0)
    app = create_app(
        settings,
        engine=make_engine(settings.database_url()),
        broker=make_broker(settings.kafka),
        keys=KeyStore.for_runtime(settings.runtime, None),
        session_secret=session_secret(settings),
    )
    samples = sample_events()
    confident_id = next(i for i in iter(uuid4, None) if not sample(i, "audit", 0.05))
    confident = judged(p=0.99, interaction_id=confident_id)
    low = judged(p=0.1)
    negative = ev.FeedbackReceived(
        interaction_id=confident_id, feedback=ev.Feedback(feedback_id=uuid4(), rating=-1)
    )
    async with app.router.lifespan_context(app):
        store: ReviewStore = app.state.ctx.store
        publisher = make_broker(kafka_settings)
        async with publisher:
            await publisher.start()

            async def send(topic: Topic, event: ev.Event) -> None:
                await publisher.publish(event, topic=prefix + topic, key=ev.event_key(topic, event))

            await send(Topic.INTERACTION_JUDGED, confident)
            await send(Topic.INTERACTION_JUDGED, low)
            await send(Topic.INTERACTION_JUDGED, low)  # a redelivery: applied once
            await send(Topic.TRAINING_RUN_FINISHED, samples[Topic.TRAINING_RUN_FINISHED])
            await send(Topic.ADAPTER_PROMOTED, samples[Topic.ADAPTER_PROMOTED])
            await publisher.publish(b"{not json", topic=prefix + Topic.INTERACTION_JUDGED)

            # The two interactions sit on different partitions: wait for both, not just one.
            def confident_state() -> str | None:
                with store.engine.connect() as conn:
                    return conn.execute(
                        select(Item.state).where(Item.interaction_id == str(confident_id))
                    ).scalar_one_or_none()

            await until(lambda: len(store.queue("default")) == 1 and confident_state() is not None)
            # Confident and unreviewed (auto-accept is off): then the user complains.
            assert confident_state() == "not_routed"
            await send(Topic.CHAT_FEEDBACK, negative)
            await until(lambda: len(store.queue("default")) == 2)
        reasons = {i.event.interaction.interaction_id: i.reasons for i in store.queue("default")}
        assert "negative_feedback" in reasons[confident_id]
        assert reasons[low.interaction.interaction_id] == ["low_approval"]
        parked = await asyncio.to_thread(
            read_topic, kafka_settings, dead_letter(prefix + Topic.INTERACTION_JUDGED), expect=1
        )
        assert len(parked) == 1
        creds = ensure_dev_credentials(settings.runtime)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hitl"
        ) as client:
            ops = await client.get(
                "/ops.json", headers={"authorization": f"Bearer {creds.api_keys['admin']}"}
            )
            metrics = (await client.get("/metrics")).text
        assert ops.status_code == 401  # ops pages take a signed-in admin, not an API key
        assert "hitl_queue_depth" in metrics
        assert "raftloop_consumer_lag" in metrics
        timeline = app.state.ctx.ops
        snap = await timeline.snapshot(max_age_s=0)
        assert snap.dead_letters[dead_letter(prefix + Topic.INTERACTION_JUDGED)] == 1
    from raftloop_hitl.policies import serving_adapter

    serving = serving_adapter(app.state.ctx.engine, "default")
    assert serving is not None
    assert serving["adapter_id"] == _promoted_id(samples)
