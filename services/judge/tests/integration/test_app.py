"""The judge service on the real broker: batches, dedupe, dead letters, reviews, HTTP routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from faststream.kafka import KafkaMessage

from raftloop_core.api import KeyStore
from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.events import InteractionIngested, InteractionJudged, ReviewCompleted
from raftloop_core.messaging import ERROR_CLASS_HEADER, consumer_options, ensure_topics, make_broker
from raftloop_core.settings import KafkaSettings, RuntimeSettings
from raftloop_core.topics import dead_letter
from raftloop_judge.adapters import OpenAIChatEndpoint, SentenceTransformerEmbedder
from raftloop_judge.app import create_app
from raftloop_judge.settings import JudgeSettings
from raftloop_judge.store import SqlJudgeStore

from .conftest import openai_client
from .test_endpoint_behaviours import QA, ingested

pytestmark = pytest.mark.integration


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


def judge_settings(
    kafka: KafkaSettings, tmp_path: Path, unique: Callable[[str], str], url: str
) -> JudgeSettings:
    return JudgeSettings(
        endpoint_url=url,
        criteria=["helpfulness", "correctness"],
        input_topic=unique("ingested"),
        output_topic=unique("judged"),
        review_topic=unique("review"),
        curated_topic=unique("curated"),
        consumer_group=unique("judge"),
        batch_size=8,
        concurrency=4,
        calibration_min_labels=4,
        calibration_refit_every=2,
        kafka=kafka,
        runtime=RuntimeSettings(data_dir=tmp_path),
    )


async def test_judge_service_end_to_end_on_the_broker(
    kafka_settings: KafkaSettings,
    unique: Callable[[str], str],
    tmp_path: Path,
    stubs: dict[str, str],
    embedder: SentenceTransformerEmbedder,
) -> None:
    settings = judge_settings(kafka_settings, tmp_path, unique, stubs["logprobs"])
    ensure_topics(
        kafka_settings,
        {
            settings.input_topic: 3,
            dead_letter(settings.input_topic): 1,
            settings.output_topic: 3,
            settings.review_topic: 1,
            settings.curated_topic: 1,
        },
    )
    keys = ensure_dev_credentials(settings.runtime).api_keys
    app = create_app(
        settings,
        endpoint=OpenAIChatEndpoint(openai_client(stubs["logprobs"])),
        embedder=embedder,
        store=SqlJudgeStore(settings.database_url()),
        keys=KeyStore.for_runtime(settings.runtime, None),
    )
    probe = make_broker(kafka_settings)
    judged: list[InteractionJudged] = []
    parked: list[KafkaMessage] = []

    @probe.subscriber(  # type: ignore[untyped-decorator]
        settings.output_topic, **consumer_options(kafka_settings, group_id=unique("p"))
    )
    async def collect(event: InteractionJudged) -> None:
        judged.append(event)

    @probe.subscriber(  # type: ignore[untyped-decorator]
        dead_letter(settings.input_topic), **consumer_options(kafka_settings, group_id=unique("d"))
    )
    async def park(msg: KafkaMessage) -> None:
        parked.append(msg)

    events = [ingested(q, a) for q, a in QA * 2]
    revised = InteractionIngested(
        interaction=events[0].interaction, source_event_id=uuid4(), revision=2
    )
    async with probe, app.router.lifespan_context(app):
        await probe.start()
        for event in events:
            key = str(event.interaction.interaction_id).encode()
            await probe.publish(event, topic=settings.input_topic, key=key)
        await probe.publish(events[1], topic=settings.input_topic, key=b"dup")  # redelivery
        await probe.publish(b"{not json", topic=settings.input_topic, key=b"bad")
        await probe.publish({"interaction": 1}, topic=settings.input_topic, key=b"bad")
        await probe.publish(revised, topic=settings.input_topic, key=b"r")
        await wait_for(lambda: len(judged) >= len(events) + 1 and len(parked) == 2)
        await asyncio.sleep(1.0)  # nothing else should arrive

        assert len(judged) == len(events) + 1
        assert len({j.event_id for j in judged}) == len(judged)
        assert sorted(j.revision for j in judged if j.interaction == events[0].interaction) == [
            1,
            2,
        ]
        assert all(j.judgement.error is None and j.judgement.overall for j in judged)
        assert [m.headers[ERROR_CLASS_HEADER] for m in parked] == ["ValidationError"] * 2

        # Reviews feed agreement and, after enough labels, the calibrator.
        for i, j in enumerate(judged[:6]):
            review = ReviewCompleted(
                review_id=uuid4(),
                interaction_id=j.interaction.interaction_id,
                reviewer="r",
                action="approved" if i % 2 else "rejected",
            )
            await probe.publish(review, topic=settings.review_topic, key=b"k")
        service = app.state.service
        await wait_for(
            lambda: len(service.store.recent_labels(100)) == 6 and service.calibrator is not None
        )

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://judge") as http:
            assert (await http.get("/v1/agreement")).status_code == 401
            client_key = {"Authorization": f"Bearer {keys['client']}"}
            forbidden = await http.get("/v1/agreement", headers=client_key)
            assert forbidden.status_code == 403
            assert forbidden.json()["error"]["code"] == "forbidden"
            admin = {"Authorization": f"Bearer {keys['admin']}"}
            figures = (await http.get("/v1/agreement", headers=admin)).json()
            assert figures["criteria"]["overall"]["n"] == 6
            assert figures["calibrator"]["fitted"]
            assert (await http.get("/metrics")).status_code == 200
