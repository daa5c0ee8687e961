"""Wiring: the judge's FastAPI app, its broker subscribers and routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

from fastapi import FastAPI
from faststream.kafka import KafkaMessage
from prometheus_client import CollectorRegistry, Counter, Histogram

from raftloop_core.api import KeyStore, install_error_handlers
from raftloop_core.events import InteractionJudged, ReviewCompleted, event_key
from raftloop_core.limits import install_request_guards
from raftloop_core.messaging import consumer_options, make_broker
from raftloop_core.service import add_ops_routes, blocking_check, broker_check
from raftloop_core.telemetry import dead_letter_policy
from raftloop_core.topics import Topic
from raftloop_judge import domain
from raftloop_judge.consumer import BatchConsumer, CuratedBatchConsumer
from raftloop_judge.evaluators import CallOptions, LimitedEndpoint, RubricJudge
from raftloop_judge.judge import Judge
from raftloop_judge.reference import ReferenceEvaluator
from raftloop_judge.reference_index import ReferenceIndex
from raftloop_judge.routes import judge_router
from raftloop_judge.rubrics import load_rubrics, rubrics_digest
from raftloop_judge.service import CalibrationPolicy, JudgeService
from raftloop_judge.settings import JudgeSettings

log = logging.getLogger(__name__)
_NO_EVENT = UUID(int=0)
SCORE_BUCKETS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)


def build_service(
    settings: JudgeSettings,
    *,
    endpoint: domain.ChatEndpoint,
    embedder: domain.Embedder,
    store: domain.JudgeStore,
    publish: object,
) -> JudgeService:
    """The judge: its evaluators, their bounded endpoint, and the calibration policy."""
    rubrics = load_rubrics(settings.rubrics_dir, settings.criteria)
    version = domain.judge_version(
        settings.version_tag, settings.model or "default", rubrics_digest(rubrics)
    )
    limited = LimitedEndpoint(
        endpoint, settings.concurrency, stall_timeout_s=settings.stall_timeout_s
    )
    options = CallOptions(
        settings.max_tokens,
        settings.top_logprobs,
        settings.invalid_output_attempts,
        settings.min_score_mass,
    )
    references = ReferenceIndex(store, settings.references_limit)
    judge = Judge(
        RubricJudge(limited, options, version),
        ReferenceEvaluator(embedder, references, settings.near_duplicate_similarity),
        rubrics,
        version=version,
        pass_threshold=settings.pass_threshold,
    )
    policy = CalibrationPolicy(
        settings.agreement_window, settings.calibration_min_labels, settings.calibration_refit_every
    )
    return JudgeService(judge, store, publish, policy)  # type: ignore[arg-type]


def create_app(
    settings: JudgeSettings,
    *,
    endpoint: domain.ChatEndpoint,
    embedder: domain.Embedder,
    store: domain.JudgeStore,
    keys: KeyStore,
) -> FastAPI:
    """The judge service: consumes ingested interactions and reviews, serves agreement figures."""
    registry = CollectorRegistry()
    broker = make_broker(
        settings.kafka,
        client_id=f"{settings.kafka.client_id}-judge",
        registry=registry,
        service="judge",
    )
    judged, scores = judgement_metrics(registry)

    async def publish(event: InteractionJudged) -> None:
        await broker.publish(
            event, topic=settings.output_topic, key=event_key(Topic.INTERACTION_JUDGED, event)
        )
        observe_judgement(event, judged, scores)

    service = build_service(
        settings, endpoint=endpoint, embedder=embedder, store=store, publish=publish
    )
    policy = dead_letter_policy(broker)
    consumer, curated = BatchConsumer(service, policy), CuratedBatchConsumer(service, policy)
    group = settings.consumer_group

    @broker.subscriber(  # type: ignore[untyped-decorator]  # faststream's is untyped
        settings.input_topic,
        batch=True,
        max_records=settings.batch_size,
        batch_timeout_ms=100,
        **consumer_options(settings.kafka, group_id=group),
    )
    async def on_interactions_ingested(msg: KafkaMessage) -> None:
        """interaction.ingested -> interaction.judged, a batch at a time."""
        await consumer.consume(msg.raw_message)

    @broker.subscriber(  # type: ignore[untyped-decorator]
        settings.review_topic, **consumer_options(settings.kafka, group_id=f"{group}-calibration")
    )
    async def on_review_completed(event: ReviewCompleted) -> None:
        """review.completed -> a calibration label (and an approved answer)."""
        await service.on_review(event)

    @broker.subscriber(  # type: ignore[untyped-decorator]
        settings.curated_topic,
        batch=True,
        max_records=settings.batch_size,
        batch_timeout_ms=100,
        **consumer_options(settings.kafka, group_id=f"{group}-references"),
    )
    async def on_example_curated(msg: KafkaMessage) -> None:
        """dataset.example.curated -> approved answers for agreement checks, a batch at a time."""
        await curated.consume(msg.raw_message)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await broker.start()
        try:
            yield
        finally:
            await broker.stop()

    app = FastAPI(title="raftloop judge", lifespan=lifespan)
    app.state.service = service
    app.state.broker = broker
    install_error_handlers(app)
    install_request_guards(app, settings.request_limits())
    add_ops_routes(
        app,
        service="judge",
        registry=registry,
        checks=[
            broker_check(broker),
            blocking_check("database", lambda: store.is_processed(_NO_EVENT)),
        ],
        keys=keys,
        protect=settings.runtime.ops_protected,
    )
    app.include_router(judge_router(keys, service))
    return app


def judgement_metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    """Judgements published by outcome, and the distribution of their scores."""
    judged = Counter(
        "raftloop_judge_judgements", "Judgements published.", ["outcome"], registry=registry
    )
    scores = Histogram(
        "raftloop_judge_score",
        "Judge scores (1-5): the overall score and each criterion's.",
        ["criterion"],
        registry=registry,
        buckets=SCORE_BUCKETS,
    )
    return judged, scores


def observe_judgement(event: InteractionJudged, judged: Counter, scores: Histogram) -> None:
    """Count, score and log one published judgement."""
    judgement = event.judgement
    judged.labels("error" if judgement.error else "scored").inc()
    if judgement.overall is not None:
        scores.labels("overall").observe(judgement.overall)
    for score in judgement.scores:
        scores.labels(score.criterion).observe(score.score)
    log.info(
        "interaction judged",
        extra={
            "interaction_id": str(event.interaction.interaction_id),
            "tenant": event.tenant,
            "revision": event.revision,
            "judge_version": judgement.judge_version,
            "overall": judgement.overall,
            "error": judgement.error,
        },
    )
