"""Approved answers with the real MiniLM model: batched embeddings, the broker, two replicas."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest
from faststream.kafka import KafkaMessage

from raftloop_core.api import KeyStore
from raftloop_core.events import ExampleCurated, InteractionIngested, InteractionJudged
from raftloop_core.messaging import ERROR_CLASS_HEADER, consumer_options, ensure_topics, make_broker
from raftloop_core.settings import KafkaSettings
from raftloop_core.testing import sample_events
from raftloop_core.topics import Topic, dead_letter
from raftloop_judge.adapters import OpenAIChatEndpoint, SentenceTransformerEmbedder
from raftloop_judge.app import create_app
from raftloop_judge.judge import texts_of
from raftloop_judge.store import SqlJudgeStore

from .conftest import make_service, openai_client
from .test_app import judge_settings, wait_for
from .test_endpoint_behaviours import QA, ingested

pytestmark = pytest.mark.integration

TEXTS = [
    "How long do refunds take?",
    "Refunds take five business days to reach your card.",
    "Open settings, choose security, then reset password.",
    "Where is the invoice? Invoices are under billing in the account page, next to receipts.",
    "ok",
]


async def test_batched_embeddings_equal_one_at_a_time(
    embedder: SentenceTransformerEmbedder,
) -> None:
    batched = np.asarray(await embedder.encode(TEXTS))
    alone = np.asarray([(await embedder.encode([t]))[0] for t in TEXTS])
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def curated(tenant: str, question: str, answer: str) -> ExampleCurated:
    base = sample_events()[Topic.EXAMPLE_CURATED]
    assert isinstance(base, ExampleCurated)
    update = {"example_id": uuid4(), "tenant": tenant, "question": question, "answer": answer}
    return base.model_copy(update=update)


def for_tenant(event: InteractionIngested, tenant: str) -> InteractionIngested:
    return event.model_copy(update={"tenant": tenant})


def agreement(out: InteractionJudged) -> str | None:
    scores = out.judgement.scores
    return next((s.rationale for s in scores if s.criterion == "ref_agreement"), None)


async def test_curated_batches_become_references_of_their_own_tenant(
    kafka_settings: KafkaSettings,
    unique: Callable[[str], str],
    tmp_path: Path,
    stubs: dict[str, str],
    embedder: SentenceTransformerEmbedder,
) -> None:
    settings = judge_settings(kafka_settings, tmp_path, unique, stubs["logprobs"])
    ensure_topics(
        kafka_settings, {settings.curated_topic: 1, dead_letter(settings.curated_topic): 1}
    )
    store = SqlJudgeStore(settings.database_url())
    app = create_app(
        settings,
        endpoint=OpenAIChatEndpoint(openai_client(stubs["logprobs"])),
        embedder=embedder,
        store=store,
        keys=KeyStore.for_runtime(settings.runtime, None),
    )
    probe = make_broker(kafka_settings)
    parked: list[KafkaMessage] = []

    @probe.subscriber(  # type: ignore[untyped-decorator]
        dead_letter(settings.curated_topic),
        **consumer_options(kafka_settings, group_id=unique("d")),
    )
    async def park(msg: KafkaMessage) -> None:
        parked.append(msg)

    acme = [curated("acme", q, a) for q, a in QA[:2]]
    async with probe, app.router.lifespan_context(app):
        await probe.start()
        for event in [*acme, acme[0], curated("globex", *QA[2])]:  # acme[0] redelivered
            await probe.publish(event, topic=settings.curated_topic, key=b"k")
        await probe.publish(b"{not json", topic=settings.curated_topic, key=b"bad")
        await wait_for(lambda: store.reference_count("globex") == 1 and len(parked) == 1)

    assert store.reference_count("acme") == 2
    assert [m.headers[ERROR_CLASS_HEADER] for m in parked] == ["ValidationError"]
    reference = app.state.service.judge.reference
    near = texts_of(ingested(QA[0][0], "Refunds take about five business days.").interaction)
    mine, theirs = await reference.embed_many([("acme", near), ("globex", near)])
    assert mine.match is not None
    assert mine.match.hit.reference_id == str(acme[0].example_id)
    assert theirs.match is None  # globex never sees acme's approved answer


async def test_a_replica_matches_references_another_replica_stored(
    stubs: dict[str, str], tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    # Two replicas on one database: the references consumer group hands each curated example
    # to one of them only; the other finds it through the store before its next batch.
    one, _ = make_service(stubs["logprobs"], tmp_path, embedder, criteria=["helpfulness"])
    two, published = make_service(stubs["logprobs"], tmp_path, embedder, criteria=["helpfulness"])
    first = for_tenant(ingested(*QA[1]), "acme")
    assert not await two.handle_many([first])  # loads acme's (empty) index
    assert agreement(published[0]) is None
    assert await one.on_curated(curated("acme", *QA[0]))
    again = [for_tenant(ingested(QA[0][0], QA[0][1]), t) for t in ("acme", "globex")]
    assert not await two.handle_many(again)
    by_tenant = {p.tenant: p for p in published[1:]}
    assert "vs approved" in (agreement(by_tenant["acme"]) or "")
    assert agreement(by_tenant["globex"]) is None
